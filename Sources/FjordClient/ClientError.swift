public import FjordProtocol

/// Why a client operation failed.
public enum ClientError: Error, Sendable, CustomStringConvertible {
    /// The connection could not be made or was lost.
    case connection(String)
    /// The broker answered with a Kafka error.
    case kafka(KafkaError, String?)
    /// Neither side has a version of this API in common.
    case unsupportedAPI(APIKey)
    /// Bytes from the broker did not decode.
    case protocolViolation(String)
    /// No answer within the request timeout.
    case timeout(String)

    public var description: String {
        switch self {
        case .connection(let why): return "connection failed: \(why)"
        case .kafka(let error, let message): return "\(error.name): \(message ?? error.message)"
        case .unsupportedAPI(let key): return "the broker does not support \(key.name)"
        case .protocolViolation(let why): return "protocol violation: \(why)"
        case .timeout(let what): return "timed out: \(what)"
        }
    }
}
