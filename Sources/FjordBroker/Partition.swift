import FjordMetadata
public import FjordProtocol
public import FjordStorage
import NIOCore
import Synchronization

/// One partition this broker hosts (Kafka's `Partition`): its log, its leader epoch, whether
/// this broker leads it or follows, and — as leader — what each follower has replicated.
///
/// Guarantees, as Kafka's:
/// - The **high watermark** is the smallest log end offset over the ISR (the leader's own
///   included), never moves backwards, and while an ISR change is in flight it is computed over
///   the larger of the two sets (Kafka's "maximal ISR"), so no record is committed that the
///   next ISR might lack. On a single node the ISR is this broker alone: the HW is the log end.
/// - A follower's last caught-up time moves when it fetched at the leader's log end, or at least
///   at the log end the leader had at its previous fetch; a follower whose last caught-up time is
///   older than `replica.lag.time.max.ms` is a shrink candidate.
/// - A follower joins the ISR (an expansion is asked for) once it has fetched up to the HW and
///   into the current leader epoch.
/// - Epochs only grow: a registration older than the one applied changes nothing.
public final class Partition: Sendable {
    public let topicPartition: TopicPartition
    public let topicID: KafkaUUID
    public let log: LocalLog
    /// This broker's node id.
    let localID: Int32
    private let state: Mutex<State>
    /// Held by role changes and by a follower's appends and truncations, so records fetched from
    /// an old leader are never written after this broker took leadership (Kafka's
    /// `leaderIsrUpdateLock`).
    private let replicationLock = Mutex(())

    /// What the leader knows of one follower (Kafka's `Replica` state).
    struct FollowerState: Sendable {
        /// The follower's log end offset: the offset of its last fetch; -1 until it fetches.
        var logEndOffset: Int64 = -1
        var lastCaughtUpTimeMs: Int64
        var lastFetchLeaderLogEndOffset: Int64 = -1
        var lastFetchTimeMs: Int64 = -1
    }

    struct State: Sendable {
        var epoch: LeaderEpoch
        /// The leader's node id; -1 while the partition has none.
        var leader: Int32
        var partitionEpoch: Int32
        var replicas: [Int32]
        var isr: [Int32]
        /// An AlterPartition this leader sent and the image does not show yet.
        var pendingISR: [Int32]? = nil
        var followers: [Int32: FollowerState] = [:]
        /// Where this leader's epoch began (the log end when it took leadership).
        var epochStartOffset: Int64 = 0

        var isLeader: Bool { leader >= 0 && leader == localLeader }
        var localLeader: Int32
        /// The ISR the high watermark is computed over: the committed one and the one asked for.
        var maximalISR: [Int32] {
            guard let pending = pendingISR else { return isr }
            return isr + pending.filter { !isr.contains($0) }
        }
    }

    /// An ISR change this leader asks the controller for (Kafka's AlterPartition), at the epochs
    /// it was decided on: the controller refuses it if either moved.
    public struct ISRChange: Sendable, Equatable {
        public var isr: [Int32]
        public var leaderEpoch: Int32
        public var partitionEpoch: Int32
    }

    /// A single node's partition: this broker leads it, alone in its ISR.
    init(topicPartition: TopicPartition, topicID: KafkaUUID, log: LocalLog, localID: Int32, leaderEpoch: LeaderEpoch) {
        self.topicPartition = topicPartition
        self.topicID = topicID
        self.log = log
        self.localID = localID
        self.state = Mutex(State(epoch: leaderEpoch, leader: localID, partitionEpoch: 0, replicas: [localID], isr: [localID],
                                 epochStartOffset: log.logEndOffset.rawValue, localLeader: localID))
    }

    /// A cluster partition before its first registration is applied: no leader yet.
    init(topicPartition: TopicPartition, topicID: KafkaUUID, log: LocalLog, localID: Int32) {
        self.topicPartition = topicPartition
        self.topicID = topicID
        self.log = log
        self.localID = localID
        self.state = Mutex(State(epoch: LeaderEpoch(-1), leader: -1, partitionEpoch: -1, replicas: [], isr: [], localLeader: localID))
    }

    public var leaderEpoch: LeaderEpoch { state.withLock { $0.epoch } }
    /// Whether this broker leads the partition (and may append and serve reads).
    public var isLeader: Bool { state.withLock { $0.isLeader } }
    /// The leader's node id, -1 when none.
    public var leaderID: Int32 { state.withLock { $0.leader } }
    /// The ISR as the controller last registered it.
    public var inSyncReplicas: [Int32] { state.withLock { $0.isr } }
    public var replicas: [Int32] { state.withLock { $0.replicas } }
    /// Whether this broker leads the partition with an ISR of itself alone.
    public var isrIsLeaderOnly: Bool { state.withLock { $0.isLeader && $0.isr == [localID] } }

    /// The role and epoch this partition had, to tell whether it changed meanwhile.
    struct Leadership: Equatable {
        var isLeader: Bool
        var epoch: LeaderEpoch
    }

    var leadership: Leadership { state.withLock { Leadership(isLeader: $0.isLeader, epoch: $0.epoch) } }

    /// Applies the controller's registration (Kafka's `makeLeader`/`makeFollower`): taking
    /// leadership records the new epoch's start offset in the log and gives every ISR follower a
    /// fresh caught-up time; a same-epoch registration updates the ISR and replicas. A stale
    /// registration (older leader epoch, or older partition epoch) is ignored.
    func apply(_ registration: PartitionRegistration, nowMs: Int64) throws(StorageError) -> ReplicaManager.RegistrationChange {
        try replicationLock.withLock { (_) throws(StorageError) -> ReplicaManager.RegistrationChange in
            try applyLocked(registration, nowMs: nowMs)
        }
    }

    private func applyLocked(_ registration: PartitionRegistration, nowMs: Int64) throws(StorageError) -> ReplicaManager.RegistrationChange {
        let epoch = LeaderEpoch(registration.leaderEpoch)
        let logEnd = log.logEndOffset.rawValue
        let (change, tookLeadership) = state.withLock { s -> (ReplicaManager.RegistrationChange, Bool) in
            if epoch < s.epoch { return (.none, false) }
            if epoch == s.epoch && registration.leader == s.leader && registration.partitionEpoch <= s.partitionEpoch {
                return (.none, false)
            }
            let roleChanged = epoch != s.epoch || registration.leader != s.leader
            let wasLeader = s.isLeader
            s.epoch = epoch
            s.leader = registration.leader
            s.partitionEpoch = registration.partitionEpoch
            s.replicas = registration.replicas
            s.isr = registration.isr
            s.pendingISR = nil
            var took = false
            if s.isLeader && (roleChanged || !wasLeader) {
                took = true
                s.epochStartOffset = logEnd
                s.followers = [:]
                for id in registration.replicas where id != localID {
                    s.followers[id] = FollowerState(lastCaughtUpTimeMs: registration.isr.contains(id) ? nowMs : 0)
                }
            } else if s.isLeader {
                for id in registration.replicas where id != localID && s.followers[id] == nil {
                    s.followers[id] = FollowerState(lastCaughtUpTimeMs: 0)
                }
                s.followers = s.followers.filter { registration.replicas.contains($0.key) }
            } else {
                s.followers = [:]
            }
            return (roleChanged ? .role : .isr, took)
        }
        if tookLeadership { try log.assignLeaderEpoch(epoch) }
        if change != .none { _ = maybeIncrementHighWatermark() }
        return change
    }

    /// Runs `body` (an append or truncation of a follower) only while this broker follows the
    /// partition at `epoch`; returns false without running it otherwise.
    func whileFollowing(epoch: LeaderEpoch, _ body: () throws(StorageError) -> Void) throws(StorageError) -> Bool {
        try replicationLock.withLock { (_) throws(StorageError) -> Bool in
            let following = state.withLock { !$0.isLeader && $0.epoch == epoch }
            guard following else { return false }
            try body()
            return true
        }
    }

    /// Appends a producer's (or the coordinator's) records as leader, at the current leader
    /// epoch, under the replication lock: an append can never land after this broker became a
    /// follower (it would be a record the leader does not have, at offsets the follower then
    /// fetches past). Nil, with nothing written, when this broker does not lead the partition.
    func appendAsLeader(_ records: ByteBuffer, nowMs: Int64) throws(StorageError) -> LogAppendInfo? {
        try replicationLock.withLock { (_) throws(StorageError) -> LogAppendInfo? in
            let epoch: LeaderEpoch? = state.withLock { $0.isLeader ? $0.epoch : nil }
            guard let epoch else { return nil }
            return try log.append(records, leaderEpoch: epoch, origin: .client, nowMs: nowMs)
        }
    }

    /// As a follower: the leader's high watermark, capped by this log's end.
    func followerHighWatermark(_ leaderHighWatermark: Int64) {
        guard !isLeader else { return }
        log.highWatermark = HighWatermark(Offset(leaderHighWatermark))
    }

    /// Advances the high watermark to the smallest log end offset over the (maximal) ISR; never
    /// backwards, and only as leader. Returns whether it moved.
    @discardableResult
    func maybeIncrementHighWatermark() -> Bool {
        let logEnd = log.logEndOffset.rawValue
        let candidate: Int64? = state.withLock { s in
            guard s.isLeader else { return nil }
            var low = logEnd
            for id in s.maximalISR where id != localID {
                low = Swift.min(low, s.followers[id]?.logEndOffset ?? -1)
            }
            return low
        }
        guard let candidate, candidate > log.highWatermark.offset.rawValue else { return false }
        log.highWatermark = HighWatermark(Offset(candidate))
        return true
    }

    /// What a follower's fetch changed on the leader.
    struct FollowerFetchOutcome {
        var highWatermarkMoved = false
        /// The follower caught up: ask the controller to add it to the ISR.
        var expansion: ISRChange? = nil
    }

    /// A follower fetched at `fetchOffset` (Kafka's `updateFollowerFetchState`): its log end
    /// and caught-up time move, the high watermark may advance, and a follower outside the ISR
    /// that reached the HW in the current epoch is proposed for it. Nil when `replicaID` is not a
    /// follower of this leader.
    /// `isrEligible` is false for a follower that may not join the ISR now (KIP-841: a broker not
    /// registered, or in controlled shutdown); its fetch still counts toward the HW bookkeeping.
    func followerFetched(replicaID: Int32, fetchOffset: Int64, nowMs: Int64, isrEligible: Bool = true) -> FollowerFetchOutcome? {
        let logEnd = log.logEndOffset.rawValue
        let highWatermark = log.highWatermark.offset.rawValue
        let expansion: ISRChange?? = state.withLock { s in
            guard s.isLeader, replicaID != localID, var follower = s.followers[replicaID] else { return nil }
            if fetchOffset >= logEnd {
                follower.lastCaughtUpTimeMs = Swift.max(follower.lastCaughtUpTimeMs, nowMs)
            } else if fetchOffset >= follower.lastFetchLeaderLogEndOffset && follower.lastFetchTimeMs >= 0 {
                follower.lastCaughtUpTimeMs = Swift.max(follower.lastCaughtUpTimeMs, follower.lastFetchTimeMs)
            }
            follower.lastFetchLeaderLogEndOffset = logEnd
            follower.lastFetchTimeMs = nowMs
            follower.logEndOffset = fetchOffset
            s.followers[replicaID] = follower
            guard isrEligible, s.pendingISR == nil, !s.isr.contains(replicaID), fetchOffset >= highWatermark,
                fetchOffset >= s.epochStartOffset
            else { return .some(nil) }
            let proposed = s.replicas.filter { s.isr.contains($0) || $0 == replicaID }
            s.pendingISR = proposed
            return ISRChange(isr: proposed, leaderEpoch: s.epoch.rawValue, partitionEpoch: s.partitionEpoch)
        }
        guard let expansion else { return nil }
        var outcome = FollowerFetchOutcome(expansion: expansion)
        outcome.highWatermarkMoved = maybeIncrementHighWatermark()
        return outcome
    }

    /// The followers of the ISR that have not caught up within `lagMaxMs` (Kafka's
    /// `getOutOfSyncReplicas`), as an ISR change without them; nil when none lags or a change
    /// is already in flight.
    func shrinkOutOfSyncReplicas(nowMs: Int64, lagMaxMs: Int64) -> (change: ISRChange, removed: [Int32])? {
        state.withLock { s in
            guard s.isLeader, s.pendingISR == nil else { return nil }
            let lagging = s.isr.filter { id in
                id != localID && nowMs - (s.followers[id]?.lastCaughtUpTimeMs ?? 0) > lagMaxMs
            }
            guard !lagging.isEmpty else { return nil }
            let proposed = s.isr.filter { !lagging.contains($0) }
            s.pendingISR = proposed
            return (ISRChange(isr: proposed, leaderEpoch: s.epoch.rawValue, partitionEpoch: s.partitionEpoch), lagging)
        }
    }

    /// An ISR change that failed or was refused: the next fetch or check may propose again.
    func isrChangeFinished(_ change: ISRChange) {
        state.withLock { s in
            if s.pendingISR == change.isr && s.partitionEpoch == change.partitionEpoch { s.pendingISR = nil }
        }
    }

    /// The followers' replication state, for the operator view (node id, log end offset, ms since caught up).
    func followerStates(nowMs: Int64) -> [(replica: Int32, logEndOffset: Int64, lagMs: Int64)] {
        state.withLock { s in
            s.followers.keys.sorted().map { id in
                let follower = s.followers[id]!
                return (id, follower.logEndOffset, nowMs - follower.lastCaughtUpTimeMs)
            }
        }
    }
}
