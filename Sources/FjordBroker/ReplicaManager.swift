public import FjordMetadata
public import FjordProtocol
public import FjordStorage
public import NIOCore
import Synchronization

/// The partitions this broker hosts (Kafka's `ReplicaManager`): appends, reads, and the
/// purgatory that wakes long-polling fetches when data arrives.
public final class ReplicaManager: Sendable {
    public let logManager: LogManager
    public let nodeID: Int32
    let purgatory = FetchPurgatory()
    private let partitions: Mutex<[TopicPartition: Partition]>
    /// The hosted topics' names by topic id, for the requests that address topics by id
    /// (Fetch v13+, KIP-516) without scanning the metadata image.
    private let topicNames: Mutex<[KafkaUUID: String]>

    private let applying = Mutex(())

    public init(logManager: LogManager, nodeID: Int32) {
        self.logManager = logManager
        self.nodeID = nodeID
        self.partitions = Mutex([:])
        self.topicNames = Mutex([:])
    }

    public func partition(_ tp: TopicPartition) -> Partition? {
        partitions.withLock { $0[tp] }
    }

    /// The name of the hosted topic with this id, or nil when none is hosted.
    public func topicName(id: KafkaUUID) -> String? {
        topicNames.withLock { $0[id] }
    }

    public var allPartitions: [Partition] {
        partitions.withLock { Array($0.values) }.sorted { $0.topicPartition < $1.topicPartition }
    }

    /// Makes this broker the leader of every partition of `topic`, creating logs as needed.
    public func becomeLeader(topic: TopicMetadata, config: LogConfig, nowMs: Int64) throws(StorageError) {
        let topicID = topic.topicID
        topicNames.withLock { $0[topicID] = topic.name }
        for index in 0..<topic.partitionCount {
            let tp = TopicPartition(topic: topic.name, partition: index)
            if partition(tp) != nil { continue }
            let log = try logManager.getOrCreateLog(tp, topicID: topicID, config: config, nowMs: nowMs)
            let created = Partition(topicPartition: tp, topicID: topicID, log: log, localID: nodeID, leaderEpoch: log.latestLeaderEpoch ?? 0)
            created.maybeIncrementHighWatermark()
            partitions.withLock { $0[tp] = created }
        }
    }

    /// What applying a registration changed.
    public enum RegistrationChange: Sendable, Equatable {
        case none
        /// Only whether the ISR is the leader alone (the high watermark's rule).
        case isr
        /// Leader or follower, or the leader epoch.
        case role
    }

    /// Applies a cluster registration to one partition this broker is a replica of: creates its
    /// log when missing, then makes it leader or follower at the registration's leader epoch.
    @discardableResult
    public func apply(_ registration: PartitionRegistration, topic: TopicMetadata, index: Int32, config: LogConfig,
                      nowMs: Int64) throws(StorageError) -> (partition: Partition, change: RegistrationChange) {
        // One apply at a time: two images applied at once must not both create the log.
        try applying.withLock { (_) throws(StorageError) -> (partition: Partition, change: RegistrationChange) in
            try applyLocked(registration, topic: topic, index: index, config: config, nowMs: nowMs)
        }
    }

    private func applyLocked(_ registration: PartitionRegistration, topic: TopicMetadata, index: Int32, config: LogConfig,
                             nowMs: Int64) throws(StorageError) -> (partition: Partition, change: RegistrationChange) {
        let tp = TopicPartition(topic: topic.name, partition: index)
        let topicID = topic.topicID
        topicNames.withLock { $0[topicID] = topic.name }
        let partition: Partition
        if let existing = self.partition(tp) {
            partition = existing
        } else {
            let log = try logManager.getOrCreateLog(tp, topicID: topicID, config: config, nowMs: nowMs)
            partition = Partition(topicPartition: tp, topicID: topicID, log: log, localID: nodeID)
            partitions.withLock { $0[tp] = partition }
        }
        let change = try partition.apply(registration, nowMs: nowMs)
        // Waiting fetches and acks=all produces see the new role or high watermark.
        if change != .none { purgatory.wake(tp) }
        return (partition, change)
    }

    /// Stops hosting one partition and deletes its log (a reassignment moved it elsewhere).
    public func removePartition(_ tp: TopicPartition, nowMs: Int64) throws(StorageError) {
        guard partitions.withLock({ $0.removeValue(forKey: tp) }) != nil else { return }
        try logManager.deleteLog(tp, nowMs: nowMs)
        purgatory.wake(tp)
    }

    /// Stops hosting and deletes every partition of `topic`.
    public func deletePartitions(topic: String, nowMs: Int64) throws(StorageError) {
        let removed = partitions.withLock { map in
            let keys = map.keys.filter { $0.topic == topic }
            return keys.compactMap { map.removeValue(forKey: $0) }
        }
        topicNames.withLock { names in names = names.filter { $0.value != topic } }
        for partition in removed {
            try logManager.deleteLog(partition.topicPartition, nowMs: nowMs)
        }
        purgatory.wakeAll()
    }

    /// Applies a changed topic config to the partitions' logs, without a restart.
    public func updateConfig(topic: String, config: LogConfig) throws(StorageError) {
        for partition in allPartitions where partition.topicPartition.topic == topic {
            try partition.log.updateConfig(config)
        }
    }

    /// Appends a produce's records as leader and advances the high watermark (at once when the
    /// ISR is this broker alone, else as followers fetch). Nil when leadership moved away since
    /// the caller looked (nothing is written: NOT_LEADER_OR_FOLLOWER).
    public func appendRecords(_ records: ByteBuffer, to partition: Partition, nowMs: Int64) throws(StorageError) -> LogAppendInfo? {
        guard let info = try partition.appendAsLeader(records, nowMs: nowMs) else { return nil }
        if !info.isDuplicate {
            partition.maybeIncrementHighWatermark()
            purgatory.wake(partition.topicPartition)
        }
        return info
    }

    /// Suspends until the high watermark reaches `offset` (every ISR member has the records
    /// below it), leadership changes, or `timeoutMs` passes (Kafka's `DelayedProduce`). Returns
    /// the error to answer: none, NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT, or — when the
    /// records are committed by an ISR smaller than `minInSync` — NOT_ENOUGH_REPLICAS_AFTER_APPEND.
    func awaitReplication(_ partition: Partition, through offset: Offset, minInSync: Int, timeoutMs: Int64,
                          clock: @Sendable () -> Int64) async -> KafkaError {
        let leadership = partition.leadership
        let deadline = clock() + Swift.max(timeoutMs, 1)
        while true {
            guard partition.leadership == leadership, leadership.isLeader else { return .notLeaderOrFollower }
            if partition.log.highWatermark.offset >= offset {
                return partition.inSyncReplicas.count < minInSync ? .notEnoughReplicasAfterAppend : .noError
            }
            let remaining = deadline - clock()
            guard remaining > 0, !Task.isCancelled else { return .requestTimedOut }
            await purgatory.wait(for: [partition.topicPartition], timeoutMs: remaining) {
                partition.leadership != leadership || partition.log.highWatermark.offset >= offset
            }
        }
    }
}

/// Long-polling fetches waiting for data (Kafka's `DelayedFetch` purgatory).
///
/// A fetch that found fewer than `min.bytes` registers the partitions it reads; an append to
/// any of them (or the timeout) resumes it, and it reads again. Each waiter resumes exactly once.
final class FetchPurgatory: Sendable {
    private struct Waiter {
        var partitions: Set<TopicPartition>
        var continuation: CheckedContinuation<Void, Never>
    }

    private let waiters = Mutex<(next: Int, byID: [Int: Waiter])>((0, [:]))

    /// Suspends until an append to one of `partitions` (or another wake of them), or `timeoutMs`.
    /// `satisfied` is checked once the waiter is registered: a condition that became true
    /// between the caller's check and the registration resumes it at once instead of missing
    /// the wake that made it true.
    func wait(for partitions: Set<TopicPartition>, timeoutMs: Int64, unless satisfied: @Sendable () -> Bool = { false }) async {
        guard timeoutMs > 0, !partitions.isEmpty else { return }
        let id = waiters.withLock { state -> Int in
            state.next += 1
            return state.next
        }
        // A cancelled request (its connection closed) stops waiting at once.
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                // Registered before the timeout exists, so a wake or the timeout always finds it.
                waiters.withLock { $0.byID[id] = Waiter(partitions: partitions, continuation: continuation) }
                if Task.isCancelled || satisfied() { self.resume(id) }
                Task {
                    try? await Task.sleep(for: .milliseconds(timeoutMs))
                    self.resume(id)
                }
            }
        } onCancel: {
            self.resume(id)
        }
    }

    private func resume(_ id: Int) {
        let waiter: Waiter? = waiters.withLock { $0.byID.removeValue(forKey: id) }
        waiter?.continuation.resume()
    }

    func wake(_ partition: TopicPartition) {
        let ready: [Waiter] = waiters.withLock { state in
            let ids = state.byID.filter { $0.value.partitions.contains(partition) }.map(\.key)
            return ids.compactMap { state.byID.removeValue(forKey: $0) }
        }
        for waiter in ready { waiter.continuation.resume() }
    }

    func wakeAll() {
        let ready: [Waiter] = waiters.withLock { state in
            defer { state.byID = [:] }
            return Array(state.byID.values)
        }
        for waiter in ready { waiter.continuation.resume() }
    }
}
