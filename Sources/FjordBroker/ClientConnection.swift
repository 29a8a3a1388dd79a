import FjordSecurity
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

    let auth: Mutex<AuthState>

    public init(listener: Listener, clientHost: String) {
        self.listenerName = listener.name
        self.securityProtocol = listener.securityProtocol
        self.clientHost = clientHost.isEmpty ? "" : "/\(clientHost)"
        self.auth = Mutex(AuthState(principal: listener.securityProtocol.usesSASL ? nil : .anonymous))
    }

    /// The authenticated principal (`User:ANONYMOUS` on listeners without SASL), or nil while
    /// a SASL client has not logged in yet.
    public var principal: KafkaPrincipal? { auth.withLock { $0.principal } }
}

/// Kafka's `KafkaPrincipal`: who a connection acts as, `User:<name>`.
public struct KafkaPrincipal: Sendable, Hashable, CustomStringConvertible {
    public var type: String
    public var name: String

    public init(type: String = "User", name: String) {
        self.type = type
        self.name = name
    }

    public static let anonymous = KafkaPrincipal(name: "ANONYMOUS")
    public var description: String { "\(type):\(name)" }
}

/// Where a connection's SASL login stands (Kafka's `SaslServerAuthenticator` states).
struct AuthState: Sendable {
    enum Exchange: Sendable {
        /// No SaslHandshake yet (or the last exchange finished).
        case idle
        /// SaslHandshake chose `mechanism`; `legacy` (handshake v0) means the tokens come as
        /// raw frames instead of SaslAuthenticate requests.
        case handshaken(mechanism: String, legacy: Bool)
        /// A SCRAM exchange past its first message.
        case scram(ScramServer, legacy: Bool)
    }

    var principal: KafkaPrincipal?
    var exchange: Exchange = .idle
    /// When the session ends (`connections.max.reauth.ms`), in the broker clock's ms.
    var sessionExpiresAtMs: Int64? = nil

    /// Whether the next frame is a raw SASL token (after a v0 handshake), not a request.
    var expectsRawToken: Bool {
        switch exchange {
        case .handshaken(_, let legacy), .scram(_, let legacy): return legacy
        case .idle: return false
        }
    }
}
