import GRPCCore

/// What an etcd call can fail with, mapped from the gRPC status etcd answers with (etcd's
/// `rpctypes` error strings) to the cases a caller acts on.
public enum EtcdError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No etcd server answers (connection refused, lost, or the call's deadline passed):
    /// retry with backoff.
    case unavailable(String)
    /// The lease does not exist (it expired, or was revoked): keys under it are gone.
    case leaseNotFound(Int64)
    /// The revision a read or watch asked for was compacted away: read the current state again.
    case compacted(revision: Int64)
    /// Any other error etcd answered with (permission denied, a too-large request, ...).
    case rejected(code: String, message: String)
    /// The client was closed.
    case closed

    public var description: String {
        switch self {
        case .unavailable(let why): return "etcd unavailable: \(why)"
        case .leaseNotFound(let id): return "etcd lease \(String(id, radix: 16)) not found (expired or revoked)"
        case .compacted(let revision): return "etcd revision compacted (compacted up to \(revision))"
        case .rejected(let code, let message): return "etcd refused the request (\(code)): \(message)"
        case .closed: return "etcd client closed"
        }
    }

    /// Whether trying again later may succeed.
    public var isRetriable: Bool {
        if case .unavailable = self { return true }
        return false
    }

    /// Maps whatever a gRPC call threw.
    static func from(_ error: any Error, lease: Int64 = 0) -> EtcdError {
        if let error = error as? EtcdError { return error }
        guard let rpc = error as? RPCError else { return .unavailable("\(error)") }
        switch rpc.code {
        case .unavailable, .deadlineExceeded, .cancelled, .aborted:
            return .unavailable(rpc.message)
        default:
            if rpc.message.contains("requested lease not found") { return .leaseNotFound(lease) }
            if rpc.message.contains("required revision has been compacted") { return .compacted(revision: 0) }
            // etcd answers "etcdserver: leader changed" / "no leader" while electing: transient.
            if rpc.message.contains("no leader") || rpc.message.contains("leader changed")
                || rpc.message.contains("request timed out") || rpc.message.contains("too many requests")
            {
                return .unavailable(rpc.message)
            }
            return .rejected(code: "\(rpc.code)", message: rpc.message)
        }
    }
}
