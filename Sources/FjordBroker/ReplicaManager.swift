public import FjordMetadata
public import FjordProtocol
public import FjordStorage
public import NIOCore
import Synchronization

/// One partition this broker hosts (Kafka's `Partition`): its log, its leader epoch, and
/// whether this broker is its leader or a follower.
///
/// On a single node the ISR is the leader alone, so the high watermark follows the log end
/// offset after every append (HW ≤ min LEO over the ISR). Replication will move HW with the
/// followers' fetch positions instead (`maybeIncrementLeaderHW`). In a cluster the controller's
/// registration decides the role; a follower serves no produce and no consumer fetch
/// (NOT_LEADER_OR_FOLLOWER), and until replication lands it does not copy the leader's data.
public final class Partition: Sendable {
    public let topicPartition: TopicPartition
    public let topicID: KafkaUUID
    public let log: LocalLog
    private let role: Mutex<Role>

    struct Role {
        var epoch: LeaderEpoch
        var isLeader: Bool
        /// Whether the ISR is this broker alone: only then does the high watermark follow the log
        /// end (HW ≤ min LEO over the ISR, and followers do not replicate yet).
        var isrIsLeaderOnly: Bool
    }

    init(topicPartition: TopicPartition, topicID: KafkaUUID, log: LocalLog, leaderEpoch: LeaderEpoch, isLeader: Bool = true,
         isrIsLeaderOnly: Bool = true) {
        self.topicPartition = topicPartition
        self.topicID = topicID
        self.log = log
        self.role = Mutex(Role(epoch: leaderEpoch, isLeader: isLeader, isrIsLeaderOnly: isrIsLeaderOnly))
    }

    public var leaderEpoch: LeaderEpoch { role.withLock { $0.epoch } }
    /// Whether this broker leads the partition (and may append and serve reads).
    public var isLeader: Bool { role.withLock { $0.isLeader } }
    /// Whether this broker leads the partition with an ISR of itself alone.
    public var isrIsLeaderOnly: Bool { role.withLock { $0.isLeader && $0.isrIsLeaderOnly } }

    /// Takes leadership at `epoch`, the controller's decision (Kafka's `Partition.makeLeader`).
    /// Epochs only grow: an older epoch leaves the partition as it is. Returns whether the
    /// role or epoch changed.
    @discardableResult
    func makeLeader(epoch newEpoch: LeaderEpoch, isrIsLeaderOnly: Bool = true) -> Bool {
        role.withLock { current in
            guard newEpoch > current.epoch || (newEpoch == current.epoch && !current.isLeader) else {
                if newEpoch == current.epoch && current.isLeader && current.isrIsLeaderOnly != isrIsLeaderOnly {
                    current.isrIsLeaderOnly = isrIsLeaderOnly
                    return true
                }
                return false
            }
            current = Role(epoch: newEpoch, isLeader: true, isrIsLeaderOnly: isrIsLeaderOnly)
            return true
        }
    }

    /// Becomes a follower at `epoch` (Kafka's `Partition.makeFollower`): appends and reads are
    /// refused from now on. Returns whether the role or epoch changed.
    @discardableResult
    func makeFollower(epoch newEpoch: LeaderEpoch) -> Bool {
        role.withLock { current in
            guard newEpoch > current.epoch || (newEpoch == current.epoch && current.isLeader) else { return false }
            current = Role(epoch: Swift.max(newEpoch, current.epoch), isLeader: false, isrIsLeaderOnly: false)
            return true
        }
    }

    /// Advances the high watermark to the log end when the ISR is this broker alone; it never
    /// moves backwards. While the ISR still names followers (which do not replicate yet) it
    /// stays, so a consumer never reads what a failover to such a follower would lose.
    func maybeIncrementHighWatermark() {
        guard isrIsLeaderOnly else { return }
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

    /// Told of every leader append that added records (the broker asks for ISR changes there).
    private let appendObserver = Mutex<(@Sendable (Partition) -> Void)?>(nil)
    private let applying = Mutex(())

    public init(logManager: LogManager, nodeID: Int32) {
        self.logManager = logManager
        self.nodeID = nodeID
        self.partitions = Mutex([:])
        self.topicNames = Mutex([:])
    }

    func observeAppends(_ observer: @escaping @Sendable (Partition) -> Void) {
        appendObserver.withLock { $0 = observer }
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
        let epoch = LeaderEpoch(registration.leaderEpoch)
        let isLeader = registration.leader == nodeID
        let alone = registration.isr == [nodeID]
        if let existing = partition(tp) {
            let before = (existing.isLeader, existing.leaderEpoch)
            let changed = isLeader ? existing.makeLeader(epoch: epoch, isrIsLeaderOnly: alone) : existing.makeFollower(epoch: epoch)
            if changed, isLeader { existing.maybeIncrementHighWatermark() }
            if changed { purgatory.wake(tp) }
            let roleChanged = before != (existing.isLeader, existing.leaderEpoch)
            return (existing, roleChanged ? .role : changed ? .isr : .none)
        }
        let log = try logManager.getOrCreateLog(tp, topicID: topicID, config: config, nowMs: nowMs)
        let created = Partition(topicPartition: tp, topicID: topicID, log: log, leaderEpoch: epoch, isLeader: isLeader,
                                isrIsLeaderOnly: alone)
        if isLeader { created.maybeIncrementHighWatermark() }
        partitions.withLock { $0[tp] = created }
        return (created, .role)
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

    /// Appends a produce's records as leader and advances the high watermark.
    public func appendRecords(_ records: ByteBuffer, to partition: Partition, nowMs: Int64) throws(StorageError) -> LogAppendInfo {
        let info = try partition.log.append(records, leaderEpoch: partition.leaderEpoch, origin: .client, nowMs: nowMs)
        if !info.isDuplicate {
            partition.maybeIncrementHighWatermark()
            purgatory.wake(partition.topicPartition)
            appendObserver.withLock { $0 }?(partition)
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
