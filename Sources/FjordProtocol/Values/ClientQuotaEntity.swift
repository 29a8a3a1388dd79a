/// Who a client quota applies to (Kafka's `ClientQuotaEntity`, KIP-546): a user, a client id, or
/// both; each either named or the default (`<default>`, null on the wire). A component that is
/// nil is not part of the entity: `ClientQuotaEntity(user: .named("alice"))` is alice's quota
/// whatever client id she uses.
public struct ClientQuotaEntity: Sendable, Hashable, Codable, CustomStringConvertible {
    /// A component's name: a specific one, or the default for every name without its own.
    public enum Name: Sendable, Hashable, Codable, CustomStringConvertible {
        case named(String)
        case defaultName

        /// As on the wire: nil is the default.
        public init(wire: String?) { self = wire.map(Name.named) ?? .defaultName }
        public var wire: String? {
            if case .named(let name) = self { return name }
            return nil
        }

        public var description: String { wire ?? "<default>" }
    }

    public var user: Name?
    public var clientID: Name?

    public init(user: Name? = nil, clientID: Name? = nil) {
        self.user = user
        self.clientID = clientID
    }

    /// The entity types Kafka names on the wire.
    public static let userType = "user"
    public static let clientIDType = "client-id"

    /// The entity as the wire lists it: (type, name or nil for the default), user first.
    public var components: [(type: String, name: String?)] {
        var out: [(type: String, name: String?)] = []
        if let user { out.append((Self.userType, user.wire)) }
        if let clientID { out.append((Self.clientIDType, clientID.wire)) }
        return out
    }

    public var description: String {
        components.map { "\($0.type)=\($0.name ?? "<default>")" }.joined(separator: ",")
    }
}

/// The quota keys Fjord enforces, as Kafka names them.
public enum ClientQuotaKey: String, Sendable, CaseIterable {
    /// Bytes per second of produce requests, per broker.
    case producerByteRate = "producer_byte_rate"
    /// Bytes per second of fetch responses, per broker.
    case consumerByteRate = "consumer_byte_rate"
    /// Percent of one thread's time spent on the client's requests, per quota window.
    case requestPercentage = "request_percentage"

    /// Whether the value must be a whole number (Kafka's LONG keys).
    public var isIntegral: Bool { self != .requestPercentage }
}
