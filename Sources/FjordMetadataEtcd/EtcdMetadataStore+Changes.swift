import FjordEtcd
public import FjordMetadata
public import FjordProtocol
import Foundation
import Logging
import Synchronization

/// The changes of `MetadataStore`: controller-only ones as fenced transactions, the rest as
/// compare-and-swap on their own key.
extension EtcdMetadataStore {
    /// Whether this broker is the active controller (its epoch is the controller key's).
    public var isController: Bool {
        state.withLock { s in s.controllerEpoch != nil && s.image.controllerEpoch == s.controllerEpoch }
    }

    func requireController() throws(MetadataError) -> Int64 {
        let (mine, image) = state.withLock { ($0.controllerEpoch, $0.image) }
        guard let mine, image.controllerEpoch == mine else {
            let controller = image.controllerID >= 0 ? "broker \(image.controllerID)" : "not elected yet"
            throw MetadataError.notController("broker \(nodeID) is not the controller (the controller is \(controller))")
        }
        return mine
    }

    static func metadataError(_ error: EtcdError) -> MetadataError {
        error.isRetriable ? .unavailable("etcd: \(error)") : .persistenceFailed("etcd: \(error)")
    }

    /// Runs `operations` if this broker is still the controller of `epoch` and every compare
    /// holds; returns after the image has the change. False when a compare failed; throws
    /// NOT_CONTROLLER when the fence did.
    func fencedTxn(epoch: Int64, _ compares: [EtcdCompare], _ operations: [EtcdOperation]) async throws(MetadataError) -> Bool {
        let result: EtcdTxnResult
        do {
            result = try await client.txn(if: [EtcdCompare(key: keys.controller, .createRevision(epoch))] + compares,
                                          then: operations, else: [.get(key: keys.controller)])
        } catch {
            throw Self.metadataError(error)
        }
        guard result.succeeded else {
            if result.reads.first?.first?.createRevision != epoch {
                state.withLock { s in if s.controllerEpoch == epoch { s.controllerEpoch = nil } }
                throw MetadataError.notController("broker \(nodeID) is no longer the controller")
            }
            // A compare failed: something changed. Wait until the image shows it, so a caller
            // deciding again decides from it (and does not retry on the same stale state).
            _ = await awaitRevision(result.revision, timeout: .seconds(2))
            return false
        }
        _ = await awaitRevision(result.revision)
        return true
    }

    func kv(_ key: String) -> EtcdKeyValue? { state.withLock { $0.kvs[key] } }

    func encode<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(value)) ?? Data())
    }

    /// Brokers new replicas and leaders may go to: alive and not shutting down.
    static func eligibleBrokers(_ image: MetadataImage) -> [BrokerRegistration] {
        image.brokers.filter { $0.inControlledShutdown != true }
    }

    public func createTopic(name: String, partitions: Int32, replicationFactor: Int16, configs: [String: String])
        async throws(MetadataError) -> TopicMetadata
    {
        try validateTopicName(name)
        guard partitions > 0 else { throw MetadataError.invalidPartitions("number of partitions must be larger than 0") }
        let epoch = try requireController()
        let image = self.image
        guard image.topics[name] == nil else { throw MetadataError.topicAlreadyExists("topic '\(name)' already exists") }
        let brokers = Self.eligibleBrokers(image)
        let assignment = try ReplicaAssignment.assign(count: partitions, replicationFactor: replicationFactor, brokers: brokers,
                                                      start: brokers.isEmpty ? 0 : Int.random(in: 0..<brokers.count))
        var id = KafkaUUID.random()
        while image.topic(id: id) != nil { id = KafkaUUID.random() }
        let record = TopicRecord(name: name, topicID: id.description, partitionCount: partitions, replicationFactor: replicationFactor,
                                 configs: configs, assignment: assignment, controllerEpoch: epoch)
        guard try await fencedTxn(epoch: epoch, [.absent(keys.topic(name))],
                                  [.put(key: keys.topic(name), value: encode(record)), .delete(key: keys.topicRequest(name)),
                                   // Leftovers of an earlier topic of this name (a write racing its deletion).
                                   .deletePrefix(keys.partitions(of: name)), .deletePrefix(keys.isrRequests + name + "/"),
                                   .delete(key: keys.topicConfigs(name))])
        else {
            throw MetadataError.topicAlreadyExists("topic '\(name)' already exists")
        }
        logger.info("controller created topic", metadata: ["topic": "\(name)", "assignment": "\(assignment)"])
        return self.image.topics[name] ?? TopicMetadata(name: name, topicID: id, partitionCount: partitions,
                                                         replicationFactor: replicationFactor, configs: configs)
    }

    public func autoCreateTopic(name: String, partitions: Int32, replicationFactor: Int16, configs: [String: String])
        async throws(MetadataError) -> TopicMetadata?
    {
        try validateTopicName(name)
        if isController {
            do {
                return try await createTopic(name: name, partitions: partitions, replicationFactor: replicationFactor, configs: configs)
            } catch .topicAlreadyExists {
                return image.topics[name]
            }
        }
        let request = TopicRequest(partitions: partitions, replicationFactor: replicationFactor, configs: configs)
        do {
            _ = try await client.txn(if: [.absent(keys.topicRequest(name)), .absent(keys.topic(name))],
                                     then: [.put(key: keys.topicRequest(name), value: encode(request))])
        } catch {
            throw Self.metadataError(error)
        }
        return nil
    }

    public func deleteTopic(name: String) async throws(MetadataError) -> TopicMetadata {
        let epoch = try requireController()
        guard let topic = image.topics[name], let current = kv(keys.topic(name)) else {
            throw MetadataError.unknownTopic("topic '\(name)' does not exist")
        }
        guard try await fencedTxn(epoch: epoch, [.unchanged(keys.topic(name), since: current.modRevision)],
                                  [.delete(key: keys.topic(name)), .deletePrefix(keys.partitions(of: name)),
                                   .delete(key: keys.topicConfigs(name)), .deletePrefix(keys.isrRequests + name + "/")])
        else {
            throw MetadataError.unknownTopic("topic '\(name)' changed while being deleted; try again")
        }
        logger.info("controller deleted topic", metadata: ["topic": "\(name)"])
        return topic
    }

    /// Reads, changes and writes back one topic record with a compare on its revision.
    private func updateTopic(_ name: String, _ change: (inout TopicRecord, MetadataImage) throws(MetadataError) -> Void)
        async throws(MetadataError) -> TopicMetadata
    {
        let epoch = try requireController()
        let (image, kvs) = snapshot()
        guard let current = kvs[keys.topic(name)], var record = try? JSONDecoder().decode(TopicRecord.self, from: Data(current.value)) else {
            throw MetadataError.unknownTopic("topic '\(name)' does not exist")
        }
        try change(&record, image)
        record.controllerEpoch = epoch
        guard try await fencedTxn(epoch: epoch, [.unchanged(keys.topic(name), since: current.modRevision)],
                                  [.put(key: keys.topic(name), value: encode(record))])
        else {
            throw MetadataError.invalidConfig("topic '\(name)' changed concurrently; try again")
        }
        guard let updated = image.topics[name] else { throw MetadataError.unknownTopic("topic '\(name)' does not exist") }
        return updated
    }

    public func createPartitions(topic: String, totalCount: Int32) async throws(MetadataError) -> TopicMetadata {
        try await updateTopic(topic) { (record, image) throws(MetadataError) in
            guard totalCount > record.partitionCount else {
                throw MetadataError.invalidPartitions("topic currently has \(record.partitionCount) partitions, \(totalCount) would not be an increase")
            }
            let brokers = Self.eligibleBrokers(image)
            let added = try ReplicaAssignment.assign(count: totalCount - record.partitionCount, firstPartition: record.partitionCount,
                                                     replicationFactor: record.replicationFactor, brokers: brokers)
            // Partitions that have their own key keep it; the new ones start from the assignment.
            record.assignment = (0..<Int(record.partitionCount)).map { index in
                image.partition(topic, Int32(index))?.replicas ?? (index < record.assignment.count ? record.assignment[index] : [])
            } + added
            record.partitionCount = totalCount
        }
    }

    /// Any broker: a compare-and-swap of the topic's config key, valid only while the topic is
    /// the same one (its key's create revision).
    public func alterTopicConfigs(topic: String, changes: [String: String?]) async throws(MetadataError) -> TopicMetadata {
        let (image, kvs) = snapshot()
        guard let existing = image.topics[topic], let record = kvs[keys.topic(topic)] else {
            throw MetadataError.unknownTopic("topic '\(topic)' does not exist")
        }
        var configs = existing.configs
        for (key, value) in changes { configs[key] = value }
        try await compareAndSwap(keys.topicConfigs(topic), encode(configs), readAt: kvs[keys.topicConfigs(topic)]?.modRevision ?? 0,
                                 also: [EtcdCompare(key: keys.topic(topic), .createRevision(record.createRevision))])
        guard let updated = image.topics[topic] else { throw MetadataError.unknownTopic("topic '\(topic)' does not exist") }
        return updated
    }

    /// Any broker: a compare-and-swap of the broker config key.
    public func alterBrokerConfigs(changes: [String: String?]) async throws(MetadataError) {
        let (image, kvs) = snapshot()
        var configs = image.brokerConfigs
        for (key, value) in changes { configs[key] = value }
        try await compareAndSwap(keys.brokerConfigs, encode(configs), readAt: kvs[keys.brokerConfigs]?.modRevision ?? 0)
    }

    /// Any broker: one transaction over the changed users' keys, each compared with the
    /// revision the change was computed from (a concurrent change to the same user is refused).
    public func alterScramCredentials(_ changes: [ScramCredentialChange]) async throws(MetadataError) {
        let (image, kvs) = snapshot()
        let after = MetadataImage.applying(changes, to: image.scramCredentials ?? [:])
        let writes = Set(changes.map(\.user)).sorted().map { user in (keys.scramCredentials(user), after[user].map { encode($0) }) }
        try await replaceKeys(writes, readAt: kvs, conflict: .invalidConfig("the credentials changed concurrently; try again"))
    }

    /// Any broker: one transaction putting a key per new binding (a binding's key is the binding,
    /// so creating it twice is harmless).
    public func createAcls(_ bindings: [AclBinding]) async throws(MetadataError) {
        guard !bindings.isEmpty else { return }
        let operations = bindings.map { EtcdOperation.put(key: keys.acl($0), value: encode($0)) }
        let result: EtcdTxnResult
        do {
            result = try await client.txn(if: [], then: operations)
        } catch {
            throw Self.metadataError(error)
        }
        _ = await awaitRevision(result.revision)
    }

    /// Any broker: deletes the matching bindings' keys in one transaction, each compared with
    /// the revision it was matched at (a concurrent change is refused, to be retried).
    public func deleteAcls(_ filters: [AclBindingFilter]) async throws(MetadataError) -> [[AclBinding]] {
        let (image, kvs) = snapshot()
        let current = image.acls ?? []
        let removed = filters.map { filter in current.filter(filter.matches) }
        let gone = Set(removed.joined().map { keys.acl($0) }).sorted()
        try await replaceKeys(gone.map { ($0, nil) }, readAt: kvs, conflict: .unavailable("the ACLs changed concurrently; try again"))
        return removed
    }

    /// Any broker: one transaction over the changed entities' keys, each compared with the
    /// revision the change was computed from.
    public func alterClientQuotas(_ changes: [ClientQuotaChange]) async throws(MetadataError) {
        let (image, kvs) = snapshot()
        let after = MetadataImage.applying(changes, to: image.clientQuotas ?? [])
        var seen = Set<ClientQuotaEntity>()
        let writes = changes.filter { seen.insert($0.entity).inserted }.map { change in
            (keys.clientQuota(change.entity), after.first { $0.entity == change.entity }.map { encode($0) })
        }
        try await replaceKeys(writes, readAt: kvs, conflict: .unavailable("the quotas changed concurrently; try again"))
    }

    /// One transaction writing each key's new value (nil: deleting it, if present), each key
    /// compared with the revision the values were computed from; `conflict` when any changed
    /// meanwhile. Returns once the image has the change.
    private func replaceKeys(_ writes: [(String, [UInt8]?)], readAt kvs: [String: EtcdKeyValue],
                             conflict: MetadataError) async throws(MetadataError) {
        var compares: [EtcdCompare] = []
        var operations: [EtcdOperation] = []
        for (key, value) in writes {
            compares.append(.unchanged(key, since: kvs[key]?.modRevision ?? 0))
            if let value {
                operations.append(.put(key: key, value: value))
            } else if kvs[key] != nil {
                operations.append(.delete(key: key))
            }
        }
        guard !operations.isEmpty else { return }
        let result: EtcdTxnResult
        do {
            result = try await client.txn(if: compares, then: operations)
        } catch {
            throw Self.metadataError(error)
        }
        guard result.succeeded else { throw conflict }
        _ = await awaitRevision(result.revision)
    }

    /// Puts `value` if `key` is unchanged since revision `readAt` (when the value was computed
    /// from) and `also` holds; returns once the image has it. A concurrent change is refused,
    /// not overwritten.
    private func compareAndSwap(_ key: String, _ value: [UInt8], readAt: Int64, also: [EtcdCompare] = []) async throws(MetadataError) {
        let result: EtcdTxnResult
        do {
            result = try await client.txn(if: [.unchanged(key, since: readAt)] + also, then: [.put(key: key, value: value)])
        } catch {
            throw Self.metadataError(error)
        }
        guard result.succeeded else { throw MetadataError.invalidConfig("the configs changed concurrently; try again") }
        _ = await awaitRevision(result.revision)
    }

    public func alterPartition(topic: String, partition: Int32, leaderEpoch: Int32, partitionEpoch: Int32, isr: [Int32],
                               timeout: Duration) async throws(MetadataError) {
        let request = ISRRequest(leader: nodeID, leaderEpoch: leaderEpoch, partitionEpoch: partitionEpoch, isr: isr)
        do {
            try await client.put(keys.isrRequest(topic, partition), encode(request))
        } catch {
            throw Self.metadataError(error)
        }
        if isController { scheduleReconcile() }
        let moved = await awaitImage(timeout: timeout) { image in
            guard let current = image.partition(topic, partition) else { return true }
            return current.partitionEpoch > partitionEpoch || current.leaderEpoch != leaderEpoch
        }
        guard moved else { throw MetadataError.unavailable("the controller did not change the ISR of \(topic)-\(partition) in time") }
    }

    /// Any broker may reserve producer ids: a compare-and-swap on the counter, retried on conflict.
    public func allocateProducerIDs(count: Int64) async throws(MetadataError) -> ClosedRange<Int64> {
        for _ in 0..<20 {
            let current: EtcdKeyValue?
            do {
                current = try await client.get(keys.producerIDs)
            } catch {
                throw Self.metadataError(error)
            }
            let first = current.flatMap { Int64(String(decoding: $0.value, as: UTF8.self)) } ?? 0
            let result: EtcdTxnResult
            do {
                result = try await client.txn(if: [.unchanged(keys.producerIDs, since: current?.modRevision ?? 0)],
                                              then: [.put(key: keys.producerIDs, value: Array(String(first + count).utf8))])
            } catch {
                throw Self.metadataError(error)
            }
            if result.succeeded { return first...(first + count - 1) }
        }
        throw MetadataError.unavailable("producer id allocation kept conflicting; try again")
    }
}
