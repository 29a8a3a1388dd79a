public import FjordProtocol
import Synchronization

/// Why a metadata change was refused; each maps to one Kafka error code.
public enum MetadataError: Error, Sendable, Equatable, CustomStringConvertible {
    case topicAlreadyExists(String)
    case unknownTopic(String)
    case invalidTopic(String)
    case invalidPartitions(String)
    case invalidReplicationFactor(String)
    case invalidConfig(String)
    case persistenceFailed(String)
    /// A change only the controller makes reached another broker (Kafka's NOT_CONTROLLER:
    /// clients refresh metadata and send it to the controller).
    case notController(String)
    case invalidReplicaAssignment(String)
    /// AlterPartitionReassignments cancelling a partition with no reassignment in progress.
    case noReassignmentInProgress(String)
    /// The metadata quorum (etcd) cannot be reached: nothing was changed.
    case unavailable(String)

    public var kafkaError: KafkaError {
        switch self {
        case .topicAlreadyExists: return .topicAlreadyExists
        case .unknownTopic: return .unknownTopicOrPartition
        case .invalidTopic: return .invalidTopicException
        case .invalidPartitions: return .invalidPartitions
        case .invalidReplicationFactor: return .invalidReplicationFactor
        case .invalidConfig: return .invalidConfig
        case .persistenceFailed: return .kafkaStorageError
        case .notController: return .notController
        case .invalidReplicaAssignment: return .invalidReplicaAssignment
        case .noReassignmentInProgress: return .noReassignmentInProgress
        case .unavailable: return .requestTimedOut
        }
    }

    public var description: String {
        switch self {
        case .topicAlreadyExists(let m), .unknownTopic(let m), .invalidTopic(let m), .invalidPartitions(let m),
            .invalidReplicationFactor(let m), .invalidConfig(let m), .persistenceFailed(let m), .notController(let m),
            .invalidReplicaAssignment(let m), .noReassignmentInProgress(let m),
            .unavailable(let m):
            return m
        }
    }
}

/// The one seam between the broker and wherever cluster metadata lives.
///
/// The single-node default is `LocalMetadataStore` (an image persisted in the data directory);
/// a cluster puts the same image on etcd behind this protocol (`FjordMetadataEtcd`). Changes
/// are linearisable: each returns after the new image is durable and visible through `image`.
public protocol MetadataStore: Sendable {
    /// The current image.
    var image: MetadataImage { get }
    func createTopic(name: String, partitions: Int32, replicationFactor: Int16, configs: [String: String]) async throws(MetadataError) -> TopicMetadata
    /// Metadata's topic auto-creation: creates the topic here when this broker may, else asks
    /// the controller to and returns nil (the topic appears in a later image).
    func autoCreateTopic(name: String, partitions: Int32, replicationFactor: Int16, configs: [String: String]) async throws(MetadataError) -> TopicMetadata?
    func deleteTopic(name: String) async throws(MetadataError) -> TopicMetadata
    func createPartitions(topic: String, totalCount: Int32) async throws(MetadataError) -> TopicMetadata
    /// Sets (non-nil) or removes (nil) topic config overrides.
    func alterTopicConfigs(topic: String, changes: [String: String?]) async throws(MetadataError) -> TopicMetadata
    /// Sets (non-nil) or removes (nil) dynamic broker config overrides.
    func alterBrokerConfigs(changes: [String: String?]) async throws(MetadataError)
    /// Sets and deletes SCRAM credentials (AlterUserScramCredentials), all or none.
    func alterScramCredentials(_ changes: [ScramCredentialChange]) async throws(MetadataError)
    /// CreateAcls: adds the bindings (already valid), all or none; a binding already present
    /// is kept once.
    func createAcls(_ bindings: [AclBinding]) async throws(MetadataError)
    /// DeleteAcls: removes every binding matching any of `filters`, all or none; returns, per
    /// filter, the bindings it removed.
    func deleteAcls(_ filters: [AclBindingFilter]) async throws(MetadataError) -> [[AclBinding]]
    /// AlterClientQuotas: applies the (already valid) changes, all or none.
    func alterClientQuotas(_ changes: [ClientQuotaChange]) async throws(MetadataError)
    /// Reserves `count` producer ids that no broker of the cluster hands out again.
    func allocateProducerIDs(count: Int64) async throws(MetadataError) -> ClosedRange<Int64>
    /// Kafka's AlterPartition: the leader of a partition, at `leaderEpoch` and `partitionEpoch`,
    /// asks the controller to set its ISR to `isr`. Returns once the image shows the
    /// partition past that partition epoch (the change, or a newer one such as a new leader),
    /// or throws `unavailable` after `timeout`.
    func alterPartition(topic: String, partition: Int32, leaderEpoch: Int32, partitionEpoch: Int32, isr: [Int32],
                        timeout: Duration) async throws(MetadataError)
    /// ElectLeaders (KIP-460): per partition (nil: every partition), NO_ERROR with a new leader,
    /// ELECTION_NOT_NEEDED, or why none could be elected.
    func electLeaders(_ partitions: [TopicPartition]?, type: LeaderElectionType) async throws(MetadataError) -> [TopicPartition: (KafkaError, String?)]
    /// AlterPartitionReassignments (KIP-455): starts moving a partition to `replicas`, or
    /// cancels its reassignment (nil). The controller completes it once every target replica
    /// is in the ISR.
    func reassign(_ partition: TopicPartition, to replicas: [Int32]?) async throws(MetadataError)
    /// Registers a callback run after every change with the new image.
    func onChange(_ callback: @escaping @Sendable (MetadataImage) -> Void)
}

/// ElectLeaders' election types.
public enum LeaderElectionType: Int8, Sendable {
    /// Move leadership back to the first replica, if it is in the ISR.
    case preferred = 0
    /// Elect any live replica of a partition without a live leader, even outside the ISR.
    case unclean = 1
}

/// Kafka's topic name rules: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
public func validateTopicName(_ name: String) throws(MetadataError) {
    guard !name.isEmpty else { throw MetadataError.invalidTopic("topic name is empty") }
    guard name != "." && name != ".." else { throw MetadataError.invalidTopic("topic name cannot be '.' or '..'") }
    guard name.utf8.count <= 249 else { throw MetadataError.invalidTopic("topic name \(name) is longer than 249 characters") }
    for byte in name.utf8 {
        let ok = (byte >= 97 && byte <= 122) || (byte >= 65 && byte <= 90) || (byte >= 48 && byte <= 57) || byte == 46 || byte == 95 || byte == 45
        guard ok else {
            throw MetadataError.invalidTopic("topic name \(name) is illegal: it may only contain ASCII alphanumerics, '.', '_' and '-'")
        }
    }
}

/// The embedded, single-node metadata store: the image in memory, persisted through `persist`
/// (the broker wires it to an atomic file write in the data directory) before a change is
/// visible. Changes are serialised by one mutex.
public final class LocalMetadataStore: MetadataStore {
    private struct State {
        var image: MetadataImage
        var callbacks: [@Sendable (MetadataImage) -> Void] = []
    }

    private let state: Mutex<State>
    private let persist: @Sendable (MetadataImage) throws -> Void

    public init(image: MetadataImage, persist: @escaping @Sendable (MetadataImage) throws -> Void) {
        self.state = Mutex(State(image: image))
        self.persist = persist
    }

    public var image: MetadataImage { state.withLock { $0.image } }

    public func onChange(_ callback: @escaping @Sendable (MetadataImage) -> Void) {
        state.withLock { $0.callbacks.append(callback) }
    }

    /// Applies `change` to a copy of the image, persists it, then publishes it.
    private func update<T>(_ change: (inout MetadataImage) throws(MetadataError) -> T) throws(MetadataError) -> T {
        let (result, image, callbacks) = try state.withLock { (s) throws(MetadataError) -> (T, MetadataImage, [@Sendable (MetadataImage) -> Void]) in
            var next = s.image
            let result = try change(&next)
            next.epoch += 1
            do {
                try persist(next)
            } catch {
                throw MetadataError.persistenceFailed("cannot persist metadata: \(error)")
            }
            s.image = next
            return (result, next, s.callbacks)
        }
        for callback in callbacks { callback(image) }
        return result
    }

    public func createTopic(name: String, partitions: Int32, replicationFactor: Int16, configs: [String: String]) throws(MetadataError) -> TopicMetadata {
        try validateTopicName(name)
        guard partitions > 0 else { throw MetadataError.invalidPartitions("number of partitions must be larger than 0") }
        guard replicationFactor > 0 else { throw MetadataError.invalidReplicationFactor("replication factor must be larger than 0") }
        return try update { (image) throws(MetadataError) -> TopicMetadata in
            guard image.topics[name] == nil else { throw MetadataError.topicAlreadyExists("topic '\(name)' already exists") }
            guard Int(replicationFactor) <= Swift.max(1, image.brokers.count) else {
                throw MetadataError.invalidReplicationFactor(
                    "replication factor: \(replicationFactor) larger than available brokers: \(Swift.max(1, image.brokers.count))")
            }
            var id = KafkaUUID.random()
            while image.topic(id: id) != nil { id = KafkaUUID.random() }
            let topic = TopicMetadata(name: name, topicID: id, partitionCount: partitions, replicationFactor: replicationFactor, configs: configs)
            image.topics[name] = topic
            return topic
        }
    }

    public func autoCreateTopic(name: String, partitions: Int32, replicationFactor: Int16, configs: [String: String]) throws(MetadataError) -> TopicMetadata? {
        try createTopic(name: name, partitions: partitions, replicationFactor: replicationFactor, configs: configs)
    }

    /// A single node has no ISR to change: its partitions carry no registrations.
    public func alterPartition(topic: String, partition: Int32, leaderEpoch: Int32, partitionEpoch: Int32, isr: [Int32],
                               timeout: Duration) throws(MetadataError) {}

    /// A single node leads every partition already: no election is needed.
    public func electLeaders(_ partitions: [TopicPartition]?, type: LeaderElectionType) throws(MetadataError) -> [TopicPartition: (KafkaError, String?)] {
        let image = self.image
        var result: [TopicPartition: (KafkaError, String?)] = [:]
        let targets = partitions ?? image.topics.values.flatMap { topic in (0..<topic.partitionCount).map { TopicPartition(topic: topic.name, partition: $0) } }
        for tp in targets {
            if let topic = image.topics[tp.topic], tp.partition >= 0, tp.partition < topic.partitionCount {
                result[tp] = (.electionNotNeeded, "the single broker leads every partition")
            } else {
                result[tp] = (.unknownTopicOrPartition, nil)
            }
        }
        return result
    }

    /// A single node has no other broker to move a partition to.
    public func reassign(_ partition: TopicPartition, to replicas: [Int32]?) throws(MetadataError) {
        guard image.topics[partition.topic] != nil else { throw MetadataError.unknownTopic("topic '\(partition.topic)' does not exist") }
        throw MetadataError.invalidReplicaAssignment("a single-node broker has no other broker to reassign to")
    }

    public func deleteTopic(name: String) throws(MetadataError) -> TopicMetadata {
        try update { (image) throws(MetadataError) -> TopicMetadata in
            guard let topic = image.topics.removeValue(forKey: name) else {
                throw MetadataError.unknownTopic("topic '\(name)' does not exist")
            }
            return topic
        }
    }

    public func createPartitions(topic: String, totalCount: Int32) throws(MetadataError) -> TopicMetadata {
        try update { (image) throws(MetadataError) -> TopicMetadata in
            guard var existing = image.topics[topic] else { throw MetadataError.unknownTopic("topic '\(topic)' does not exist") }
            guard totalCount > existing.partitionCount else {
                throw MetadataError.invalidPartitions("topic currently has \(existing.partitionCount) partitions, \(totalCount) would not be an increase")
            }
            existing.partitionCount = totalCount
            image.topics[topic] = existing
            return existing
        }
    }

    public func alterTopicConfigs(topic: String, changes: [String: String?]) throws(MetadataError) -> TopicMetadata {
        try update { (image) throws(MetadataError) -> TopicMetadata in
            guard var existing = image.topics[topic] else { throw MetadataError.unknownTopic("topic '\(topic)' does not exist") }
            for (key, value) in changes {
                existing.configs[key] = value
            }
            image.topics[topic] = existing
            return existing
        }
    }

    public func alterBrokerConfigs(changes: [String: String?]) throws(MetadataError) {
        try update { (image) throws(MetadataError) in
            for (key, value) in changes { image.brokerConfigs[key] = value }
        }
    }

    public func alterScramCredentials(_ changes: [ScramCredentialChange]) throws(MetadataError) {
        try update { (image) throws(MetadataError) in
            let next = MetadataImage.applying(changes, to: image.scramCredentials ?? [:])
            image.scramCredentials = next.isEmpty ? nil : next
        }
    }

    public func createAcls(_ bindings: [AclBinding]) throws(MetadataError) {
        try update { (image) throws(MetadataError) in
            let next = MetadataImage.adding(bindings, to: image.acls ?? [])
            image.acls = next.isEmpty ? nil : next
        }
    }

    public func deleteAcls(_ filters: [AclBindingFilter]) throws(MetadataError) -> [[AclBinding]] {
        try update { (image) throws(MetadataError) -> [[AclBinding]] in
            let current = image.acls ?? []
            let removed = filters.map { filter in current.filter(filter.matches) }
            let gone = Set(removed.joined())
            let next = current.filter { !gone.contains($0) }
            image.acls = next.isEmpty ? nil : next
            return removed
        }
    }

    public func alterClientQuotas(_ changes: [ClientQuotaChange]) throws(MetadataError) {
        try update { (image) throws(MetadataError) in
            let next = MetadataImage.applying(changes, to: image.clientQuotas ?? [])
            image.clientQuotas = next.isEmpty ? nil : next
        }
    }

    public func allocateProducerIDs(count: Int64) throws(MetadataError) -> ClosedRange<Int64> {
        try update { (image) throws(MetadataError) -> ClosedRange<Int64> in
            let first = image.nextProducerID ?? 0
            image.nextProducerID = first + count
            return first...(first + count - 1)
        }
    }
}
