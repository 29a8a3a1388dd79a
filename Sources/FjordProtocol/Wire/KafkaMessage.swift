public import NIOCore

/// A value type generated from one of Kafka's message schemas.
///
/// One value covers every version of the message. Decoding consumes exactly the message's bytes
/// from `buffer` and throws `ProtocolError` on malformed input (never traps). `bytes` and
/// `records` fields are slices of the input buffer, not copies.
public protocol KafkaMessage: Sendable, Equatable {
    /// The versions the schema defines.
    static var validVersions: ClosedRange<Int16> { get }
    /// The first flexible version (compact encodings and tagged fields), or nil when none is.
    static var firstFlexibleVersion: Int16? { get }
    /// A message with every field at its schema default.
    init()
    init(from buffer: inout ByteBuffer, version: Int16) throws(ProtocolError)
    func write(to buffer: inout ByteBuffer, version: Int16) throws(ProtocolError)
}

extension KafkaMessage {
    /// True when `version` uses flexible encoding.
    public static func isFlexible(_ version: Int16) -> Bool {
        guard let first = firstFlexibleVersion else { return false }
        return version >= first
    }
}

/// A request message; its API key and response type come from the schema.
public protocol KafkaRequest: KafkaMessage {
    associatedtype Response: KafkaResponse
    static var apiKey: APIKey { get }
}

/// A response message.
public protocol KafkaResponse: KafkaMessage {
    static var apiKey: APIKey { get }
}

/// Record bytes that live outside the encoded buffer (a log segment region the server sends
/// with `sendfile`), standing in for a `records` field's value.
public struct ZeroCopyRegion: Sendable, Equatable {
    /// The number of bytes the region will supply.
    public var length: Int
    /// The caller's handle for the region (e.g. an index into its list of file slices).
    public var token: Int

    public init(length: Int, token: Int) {
        self.length = length
        self.token = token
    }
}

/// Where a `ZeroCopyRegion`'s bytes belong in an encoded buffer: at `position` (a writer index),
/// between the bytes written before and after it.
public struct ZeroCopySplice: Sendable, Equatable {
    public var position: Int
    public var region: ZeroCopyRegion

    public init(position: Int, region: ZeroCopyRegion) {
        self.position = position
        self.region = region
    }
}

/// A response whose schema has an `ErrorCode` at the top level in every version, so an error
/// response (e.g. UNSUPPORTED_VERSION for an API a broker does not serve) can be built generically.
public protocol KafkaTopLevelErrorResponse: KafkaResponse {
    var errorCode: Int16 { get set }
}

/// A response with a top-level `ThrottleTimeMs` (quota throttling, KIP-219), carried by the
/// versions in `throttleTimeVersions`.
public protocol KafkaThrottledResponse: KafkaResponse {
    var throttleTimeMs: Int32 { get set }
    static var throttleTimeVersions: ClosedRange<Int16> { get }
}

extension KafkaTopLevelErrorResponse {
    /// A response with every field at its default and `errorCode` set.
    public init(topLevelError code: Int16) {
        self.init()
        self.errorCode = code
    }
}
