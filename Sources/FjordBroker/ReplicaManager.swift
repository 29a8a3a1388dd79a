public import FjordMetadata
public import FjordProtocol
public import FjordStorage
public import NIOCore
import Synchronization

/// One partition this broker leads (Kafka's `Partition`): its log, its leader epoch and its
/// in-sync replica set.
///
/// On a single node the ISR is the leader alone, so the high watermark follows the log end
/// offset after every append (HW ≤ min LEO over the ISR). Replication will move HW with the
/// followers' fetch positions instead (`maybeIncrementLeaderHW`).
public final class Partition: Sendable {
    public let topicPartition: TopicPartition
    public let topicID: KafkaUUID
    public let log: LocalLog
    private let epoch: Mutex<LeaderEpoch>

    init(topicPartition: TopicPartition, topicID: KafkaUUID, log: LocalLog, leaderEpoch: LeaderEpoch) {
        self.topicPartition = topicPartition
        self.topicID = topicID
        self.log = log
        self.epoch = Mutex(leaderEpoch)
    }

    public var leaderEpoch: LeaderEpoch { epoch.withLock { $0 } }

    /// Takes leadership at `epoch`, the controller's decision (Kafka's `Partition.makeLeader`).
    /// Epochs only grow: an older or equal epoch leaves the partition as it is. Returns whether
    /// the epoch changed.
    @discardableResult
    func makeLeader(epoch newEpoch: LeaderEpoch) -> Bool {
        epoch.withLock { current in
            guard newEpoch > current else { return false }
            current = newEpoch
            return true
        }
    }

    /// Advances the high watermark to the log end (the ISR is this broker alone); it never
    /// moves backwards.
    func maybeIncrementHighWatermark() {
        log.highWatermark = log.highWatermark.advanced(to: log.logEndOffset)
    }
}

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
            let created = Partition(topicPartition: tp, topicID: topicID, log: log, leaderEpoch: log.latestLeaderEpoch ?? 0)
            created.maybeIncrementHighWatermark()
            partitions.withLock { $0[tp] = created }
        }
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

    /// Appends a produce's records as leader and advances the high watermark.
    public func appendRecords(_ records: ByteBuffer, to partition: Partition, nowMs: Int64) throws(StorageError) -> LogAppendInfo {
        let info = try partition.log.append(records, leaderEpoch: partition.leaderEpoch, origin: .client, nowMs: nowMs)
        if !info.isDuplicate {
            partition.maybeIncrementHighWatermark()
            purgatory.wake(partition.topicPartition)
        }
        return info
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

    /// Suspends until an append to one of `partitions`, or `timeoutMs`.
    func wait(for partitions: Set<TopicPartition>, timeoutMs: Int64) async {
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
                if Task.isCancelled { self.resume(id) }
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
