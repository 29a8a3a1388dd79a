public import FjordStorage
public import NIOCore

/// One piece of an encoded response: bytes, or a region of a log segment to send as is.
public enum ResponsePart: Sendable {
    case bytes(ByteBuffer)
    case file(FileSlice)

    public var length: Int {
        switch self {
        case .bytes(let buffer): return buffer.readableBytes
        case .file(let slice): return slice.length
        }
    }
}

/// What the broker answers to one request frame. The server writes `size` as the 4-byte size
/// prefix, then the parts in order (file parts with `sendfile`).
public enum BrokerReply: Sendable {
    case response([ResponsePart])
    /// Produce with acks=0: Kafka sends nothing back.
    case noResponse
    /// The frame could not be understood well enough to answer; close this connection only.
    case closeConnection(reason: String)
    /// Answer, then close the connection (a failed SASL login: Kafka tells the client why,
    /// then disconnects it).
    case responseThenClose([ResponsePart], reason: String)
    /// The reply, after which the connection is not read for `ms` (a client over its quota,
    /// KIP-219: the response already tells it `throttle_time_ms`).
    indirect case throttled(BrokerReply, ms: Int64)
}

extension BrokerReply {
    /// Whether the connection closes with this reply (then nothing after it is read or started).
    public var closesConnection: Bool {
        switch self {
        case .closeConnection, .responseThenClose: true
        case .throttled(let inner, _): inner.closesConnection
        case .response, .noResponse: false
        }
    }
}

extension Array where Element == ResponsePart {
    /// The total length of the parts: the frame's size prefix.
    public var totalLength: Int { reduce(0) { $0 + $1.length } }
}
