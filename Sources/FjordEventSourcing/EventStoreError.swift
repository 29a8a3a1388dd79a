
/// Why an event-store operation failed, besides a version conflict.
public enum EventStoreError: Error, Sendable, CustomStringConvertible {
    case notAStreamTopic(String)
    case notACompactedTopic(String)
    case broker(String)

    public var description: String {
        switch self {
        case .notAStreamTopic(let topic): return "topic \(topic) does not version streams (create it with fjord.stream.versioning=true)"
        case .notACompactedTopic(let topic): return "topic \(topic) is not compacted (snapshots need cleanup.policy=compact)"
        case .broker(let why): return why
        }
    }
}
