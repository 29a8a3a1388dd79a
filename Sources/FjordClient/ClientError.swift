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
    /// A configuration property is unknown or its value does not parse.
    case invalidConfiguration(String)
    /// The client was closed.
    case closed

    public var description: String {
        switch self {
        case .connection(let why): return "connection failed: \(why)"
        case .kafka(let error, let message): return "\(error.name): \(message ?? error.message)"
        case .unsupportedAPI(let key): return "the broker does not support \(key.name)"
        case .protocolViolation(let why): return "protocol violation: \(why)"
        case .timeout(let what): return "timed out: \(what)"
        case .invalidConfiguration(let why): return "invalid configuration: \(why)"
        case .closed: return "the client is closed"
        }
    }

    /// Whether retrying the same request may succeed: lost connections, timeouts and Kafka's
    /// retriable errors (`KafkaError.isRetriable`, e.g. NOT_LEADER_OR_FOLLOWER).
    public var isRetriable: Bool {
        switch self {
        case .connection, .timeout: return true
        case .kafka(let error, _): return error.isRetriable
        case .unsupportedAPI, .protocolViolation, .invalidConfiguration, .closed: return false
        }
    }

    /// The Kafka error code, when the broker sent one.
    public var kafkaError: KafkaError? {
        if case .kafka(let error, _) = self { return error }
        return nil
    }
}
