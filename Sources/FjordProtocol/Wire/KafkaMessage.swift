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
