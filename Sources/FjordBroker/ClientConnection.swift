import Synchronization

/// One client connection as the broker's request handlers see it (Kafka's per-channel
/// `RequestContext` facts): the listener it came in on, its security protocol, the client's
/// address and, once authenticated, its principal.
///
/// The server creates one per accepted connection and hands it in with every request of that
/// connection. Requests of one connection are handled one at a time, so the mutable
/// authentication state changes in request order; it sits behind a mutex only because
/// consecutive requests may run on different threads.
public final class ClientConnection: Sendable {
    public let listenerName: String
    public let securityProtocol: SecurityProtocol
    /// The client's address as Kafka prints it in group descriptions (`/127.0.0.1`), or empty.
    public let clientHost: String

    public init(listener: Listener, clientHost: String) {
        self.listenerName = listener.name
        self.securityProtocol = listener.securityProtocol
        self.clientHost = clientHost.isEmpty ? "" : "/\(clientHost)"
    }
}
