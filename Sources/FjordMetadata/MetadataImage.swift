public import FjordProtocol

/// One topic as the cluster knows it.
public struct TopicMetadata: Sendable, Equatable, Codable {
    public var name: String
    /// Kafka's topic id, in its base64 text form.
    public var topicIDText: String
    public var partitionCount: Int32
    public var replicationFactor: Int16
    /// Topic-level config overrides (Kafka key names), e.g. `retention.ms`.
    public var configs: [String: String]
    /// Each partition's replicas, leader and ISR, by partition index, in a cluster; nil on a
    /// single node, where this broker is every partition's only replica and leader.
    public var partitions: [PartitionRegistration]?

    public var topicID: KafkaUUID { KafkaUUID(topicIDText) ?? .zero }

    public init(name: String, topicID: KafkaUUID, partitionCount: Int32, replicationFactor: Int16, configs: [String: String]) {
        self.name = name
        self.topicIDText = topicID.description
        self.partitionCount = partitionCount
        self.replicationFactor = replicationFactor
        self.configs = configs
    }
}

/// Where one partition lives in a cluster (Kafka's `PartitionRegistration`): its replicas, its
/// leader and leader epoch, its in-sync replica set, and the epochs that order changes to it.
///
/// Only the controller changes a registration. Every change bumps `partitionEpoch`; a change of
/// leader also bumps `leaderEpoch`, which the leader stamps on the batches it appends. The
/// leader is always in the ISR, or -1 (offline) when no ISR member is alive; the ISR is never
/// emptied, so its last member can take leadership back cleanly.
public struct PartitionRegistration: Sendable, Equatable, Codable {
    public var replicas: [Int32]
    public var isr: [Int32]
    /// The leader's node id, or -1 while the partition has none.
    public var leader: Int32
    public var leaderEpoch: Int32
    public var partitionEpoch: Int32
    /// The fencing epoch of the controller that wrote this registration (its election key's
    /// etcd create revision).
    public var controllerEpoch: Int64
    /// During a reassignment (KIP-455): the replicas being added and removed; `replicas` is
    /// then the union of the target and the original. Nil when none is in progress.
    public var addingReplicas: [Int32]?
    public var removingReplicas: [Int32]?

    /// The replicas a reassignment in progress ends with (the current ones when none is).
    public var targetReplicas: [Int32] { replicas.filter { !(removingReplicas ?? []).contains($0) } }

    public init(replicas: [Int32], isr: [Int32], leader: Int32, leaderEpoch: Int32 = 0, partitionEpoch: Int32 = 0,
                controllerEpoch: Int64 = 0) {
        self.replicas = replicas
        self.isr = isr
        self.leader = leader
        self.leaderEpoch = leaderEpoch
        self.partitionEpoch = partitionEpoch
        self.controllerEpoch = controllerEpoch
    }
}

/// One of a broker's listeners as it advertises it (Kafka's `BrokerEndpoint`).
public struct BrokerEndpoint: Sendable, Equatable, Codable {
    public var listener: String
    public var host: String
    public var port: Int32

    public init(listener: String, host: String, port: Int32) {
        self.listener = listener
        self.host = host
        self.port = port
    }
}

/// A broker's advertised endpoint.
public struct BrokerRegistration: Sendable, Equatable, Codable {
    public var nodeID: Int32
    /// The endpoint of the broker's first listener (what clients that know no listener names,
    /// and registrations written before listeners were recorded, use).
    public var host: String
    public var port: Int32
    public var rack: String?
    /// Every listener's endpoint (nil in registrations written before they were recorded).
    public var endpoints: [BrokerEndpoint]?
    /// The broker asked to stop (SIGTERM): the controller moves its leaderships away and
    /// elects no new ones on it (Kafka's controlled shutdown).
    public var inControlledShutdown: Bool?

    public init(nodeID: Int32, host: String, port: Int32, rack: String? = nil, endpoints: [BrokerEndpoint]? = nil) {
        self.nodeID = nodeID
        self.host = host
        self.port = port
        self.rack = rack
        self.endpoints = endpoints
    }

    /// The registration as a client on listener `name` must be told it: that listener's host
    /// and port (Kafka answers each connection with the endpoints of the listener it came in
    /// on). A broker without that listener keeps its first endpoint.
    public func on(listener name: String) -> BrokerRegistration {
        guard let endpoint = endpoints?.first(where: { $0.listener == name }) else { return self }
        var copy = self
        copy.host = endpoint.host
        copy.port = endpoint.port
        return copy
    }
}

/// One SCRAM credential of a user as the metadata keeps it (Kafka's `UserScramCredentialRecord`):
/// the mechanism's name (`SCRAM-SHA-256`, `SCRAM-SHA-512`), salt, StoredKey, ServerKey and
/// iteration count. Never the password or the salted password.
public struct ScramCredentialRecord: Sendable, Equatable, Codable {
    public var mechanism: String
    public var salt: [UInt8]
    public var storedKey: [UInt8]
    public var serverKey: [UInt8]
    public var iterations: Int32

    public init(mechanism: String, salt: [UInt8], storedKey: [UInt8], serverKey: [UInt8], iterations: Int32) {
        self.mechanism = mechanism
        self.salt = salt
        self.storedKey = storedKey
        self.serverKey = serverKey
        self.iterations = iterations
    }
}

/// A change of one user's credential for one mechanism: set it, or delete it (nil).
public struct ScramCredentialChange: Sendable, Equatable {
    public var user: String
    public var mechanism: String
    public var credential: ScramCredentialRecord?

    public init(user: String, mechanism: String, credential: ScramCredentialRecord?) {
        self.user = user
        self.mechanism = mechanism
        self.credential = credential
    }
}

/// The quotas set directly on one entity (AlterClientQuotas), by key (`producer_byte_rate`, …).
public struct ClientQuotaEntry: Sendable, Equatable, Codable {
    public var entity: ClientQuotaEntity
    public var values: [String: Double]

    public init(entity: ClientQuotaEntity, values: [String: Double]) {
        self.entity = entity
        self.values = values
    }
}

/// A change of one entity's quotas: keys set (a value) or removed (nil).
public struct ClientQuotaChange: Sendable, Equatable {
    public var entity: ClientQuotaEntity
    public var values: [String: Double?]

    public init(entity: ClientQuotaEntity, values: [String: Double?]) {
        self.entity = entity
        self.values = values
    }
}

/// An immutable snapshot of cluster metadata: what Kafka calls the metadata image.
///
/// Every change produces a new image with a higher `epoch`. The broker reads images; only a
/// `MetadataStore` writes them. Invariants: topic names are unique; topic ids are unique and
/// never zero; partition counts only grow.
public struct MetadataImage: Sendable, Equatable, Codable {
    public var clusterID: String
    public var controllerID: Int32
    public var epoch: Int64
    public var brokers: [BrokerRegistration]
    public var topics: [String: TopicMetadata]
    /// Dynamic broker-level config overrides (`AlterConfigs` on the broker resource).
    public var brokerConfigs: [String: String]
    /// The first producer id not yet handed out (Kafka's producer-id block allocation).
    public var nextProducerID: Int64?
    /// The active controller's fencing epoch in a cluster (0 on a single node).
    public var controllerEpoch: Int64?
    /// SASL/SCRAM users: each user's credentials, one per mechanism (nil: none yet).
    public var scramCredentials: [String: [ScramCredentialRecord]]?
    /// Access control lists (CreateAcls), without duplicates (nil: none yet).
    public var acls: [AclBinding]?
    /// Client quotas (AlterClientQuotas), one entry per entity with at least one key (nil: none).
    public var clientQuotas: [ClientQuotaEntry]?

    public init(clusterID: String, controllerID: Int32, epoch: Int64 = 0, brokers: [BrokerRegistration] = [],
                topics: [String: TopicMetadata] = [:], brokerConfigs: [String: String] = [:]) {
        self.clusterID = clusterID
        self.controllerID = controllerID
        self.epoch = epoch
        self.brokers = brokers
        self.topics = topics
        self.brokerConfigs = brokerConfigs
    }

    /// A user's credential for a mechanism.
    public func scramCredential(user: String, mechanism: String) -> ScramCredentialRecord? {
        scramCredentials?[user]?.first { $0.mechanism == mechanism }
    }

    /// `changes` applied to `credentials`, in order (a user left without credentials is removed).
    public static func applying(_ changes: [ScramCredentialChange], to credentials: [String: [ScramCredentialRecord]])
        -> [String: [ScramCredentialRecord]]
    {
        var out = credentials
        for change in changes {
            var list = (out[change.user] ?? []).filter { $0.mechanism != change.mechanism }
            if let credential = change.credential { list.append(credential) }
            list.sort { $0.mechanism < $1.mechanism }
            out[change.user] = list.isEmpty ? nil : list
        }
        return out
    }

    /// `changes` applied to `entries`, in order; an entity left without keys is removed.
    public static func applying(_ changes: [ClientQuotaChange], to entries: [ClientQuotaEntry]) -> [ClientQuotaEntry] {
        var out = entries
        for change in changes {
            let index = out.firstIndex { $0.entity == change.entity }
            var values = index.map { out[$0].values } ?? [:]
            for (key, value) in change.values { values[key] = value }
            switch (index, values.isEmpty) {
            case (let index?, true): out.remove(at: index)
            case (let index?, false): out[index].values = values
            case (nil, false): out.append(ClientQuotaEntry(entity: change.entity, values: values))
            case (nil, true): break
            }
        }
        return out
    }

    /// `bindings` added to `acls`, each once, in order.
    public static func adding(_ bindings: [AclBinding], to acls: [AclBinding]) -> [AclBinding] {
        var out = acls
        var present = Set(acls)
        for binding in bindings where present.insert(binding).inserted { out.append(binding) }
        return out
    }

    public func topic(id: KafkaUUID) -> TopicMetadata? {
        topics.values.first { $0.topicID == id }
    }

    /// The registered broker with this node id, if it is alive.
    public func broker(_ nodeID: Int32) -> BrokerRegistration? {
        brokers.first { $0.nodeID == nodeID }
    }

    /// A partition's registration in a cluster (nil on a single node or for an unknown partition).
    public func partition(_ topic: String, _ index: Int32) -> PartitionRegistration? {
        guard let registrations = topics[topic]?.partitions, index >= 0, Int(index) < registrations.count else { return nil }
        return registrations[Int(index)]
    }
}
