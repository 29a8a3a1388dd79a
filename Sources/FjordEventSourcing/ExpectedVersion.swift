
/// The version an append expects its stream to be at (EventStoreDB's semantics).
public enum ExpectedVersion: Sendable, Equatable, CustomStringConvertible {
    /// No check.
    case any
    /// The stream has no event yet.
    case noStream
    /// The stream has at least one event.
    case exists
    /// The stream's last event has this revision.
    case exact(Int64)

    public var description: String {
        switch self {
        case .any: return "any"
        case .noStream: return "no-stream"
        case .exists: return "exists"
        case .exact(let n): return String(n)
        }
    }
}
