import FjordMetadata
import FjordProtocol
import FjordStorage
import Foundation
import Logging
import NIOCore

/// The classic consumer-group protocol (Kafka's `GroupCoordinator` with `GroupMetadata`):
/// membership, rebalances, assignments and committed offsets, persisted in `__consumer_offsets`.
///
/// States as Kafka's: Empty → PreparingRebalance (members (re)join; JoinGroup responses wait)
/// → CompletingRebalance (the leader's SyncGroup brings assignments) → Stable. A rebalance
/// completes when every member has rejoined or the largest rebalance timeout passes (members that
/// did not rejoin are removed); an empty group waits `group.initial.rebalance.delay.ms` for more
/// members first. Members that stop heartbeating for `session.timeout.ms` are removed.
/// New members first get MEMBER_ID_REQUIRED (KIP-394); a static member (`group.instance.id`,
/// KIP-345) that rejoins a stable group gets its old assignment back without a rebalance.
///
/// Committed offsets and group metadata are appended to the group's `__consumer_offsets`
/// partition with Kafka's own record schemas (OffsetCommitKey v1 / OffsetCommitValue v3, or v1
/// for an offset with its own expiry; GroupMetadataKey v2 / GroupMetadataValue v3), and replayed from it at start
/// (`CoordinatorLoader`; a record that does not decode is skipped, never taken for a deletion).
///
/// One actor, one isolation domain, in files by concern: this file holds the state, the
/// persistence and replay plumbing, the expiry loop and describe/list/delete;
/// `+ClassicGroups` the classic protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup);
/// `+ConsumerGroups` KIP-848 (ConsumerGroupHeartbeat); `+Offsets` the committed-offsets store
/// both group types share (OffsetCommit, OffsetFetch, OffsetDelete, retention).
actor GroupCoordinator {
    static let topic = "__consumer_offsets"

    struct Settings {
        var partitions: Int32
        var initialRebalanceDelayMs: Int64
        var minSessionTimeoutMs: Int32
        var maxSessionTimeoutMs: Int32
        var maxMetadataBytes: Int
        var maxGroupSize: Int
        var offsetsRetentionMs: Int64
        var consumerHeartbeatIntervalMs: Int32 = 5000
        var consumerSessionTimeoutMs: Int32 = 45000
    }

    let settings: Settings
    let replicaManager: ReplicaManager
    let logger: Logger
    let clock: @Sendable () -> Int64
    var groups: [String: Group] = [:]
    /// KIP-848 groups (see GroupCoordinator+ConsumerGroups.swift).
    var consumerGroups: [String: ConsumerGroup] = [:]
    /// Rebalances completed since start: classic groups' join phases and KIP-848 group epoch bumps.
    var completedRebalances = 0
    let metadataImage: @Sendable () -> MetadataImage
    private var expiryTask: Task<Void, Never>? = nil
    private var lastOffsetExpiryMs: Int64 = 0

    init(settings: Settings, replicaManager: ReplicaManager, logger: Logger, clock: @escaping @Sendable () -> Int64,
         metadataImage: @escaping @Sendable () -> MetadataImage) {
        self.settings = settings
        self.metadataImage = metadataImage
        self.replicaManager = replicaManager
        self.logger = logger
        self.clock = clock
    }

    // MARK: Partitioning and persistence

    /// Kafka's `Utils.abs(groupId.hashCode()) % offsets.topic.num.partitions` (Java's String hash).
    static func partition(for groupID: String, partitions: Int32) -> Int32 {
        var hash: Int32 = 0
        for unit in groupID.utf16 { hash = hash &* 31 &+ Int32(unit) }
        return (hash & 0x7FFF_FFFF) % partitions
    }

    func append(_ records: [(key: ByteBuffer, value: ByteBuffer?)], group: String) throws {
        let tp = TopicPartition(topic: Self.topic, partition: Self.partition(for: group, partitions: settings.partitions))
        // In a cluster only the partition's leader coordinates the group (others answer errors).
        guard let partition = replicaManager.partition(tp), partition.isLeader else { throw StorageError.logClosed("\(tp)") }
        var builder = RecordBatchBuilder()
        let now = clock()
        for record in records {
            builder.append(timestamp: now, key: record.key, value: record.value)
        }
        guard try replicaManager.appendRecords(try builder.build().bytes, to: partition, nowMs: now) != nil else {
            throw StorageError.logClosed("\(tp): leadership moved")
        }
    }

    /// Replays every `__consumer_offsets` partition (at start, before serving). A record that
    /// does not decode is logged and skipped, never taken for a deletion (see `CoordinatorLoader`).
    func load() {
        let loader = CoordinatorLoader(logger: logger)
        var skipped = 0
        for index in 0..<settings.partitions {
            guard let partition = replicaManager.partition(TopicPartition(topic: Self.topic, partition: index)), partition.isLeader else { continue }
            let summary = loader.load(partition.log) { replay($0) }
            skipped += summary.skippedRecords + summary.skippedBatches
        }
        let loadedGroups = groups.values.count { !$0.members.isEmpty || !$0.offsets.isEmpty }
        logger.info("loaded consumer groups", metadata: ["groups": "\(loadedGroups)", "skipped": "\(skipped)"])
    }

    /// In a cluster: this broker became leader of `__consumer_offsets` partition `index`, so its
    /// groups are replayed from the log, as at start; or it stopped leading it, so its groups
    /// are unloaded (Kafka's `onResignation`): members waiting in a join or sync are answered
    /// NOT_COORDINATOR and move to the new leader, which FindCoordinator names, and a later
    /// leadership replays the log afresh rather than over stale state.
    func partitionLeadershipChanged(_ index: Int32, isLeader: Bool) {
        guard isLeader else {
            unloadGroups(partition: index)
            return
        }
        guard let partition = replicaManager.partition(TopicPartition(topic: Self.topic, partition: index)) else { return }
        unloadGroups(partition: index)
        let summary = CoordinatorLoader(logger: logger).load(partition.log) { replay($0) }
        logger.info("loaded consumer groups of a partition", metadata: [
            "partition": "\(index)", "skipped": "\(summary.skippedRecords + summary.skippedBatches)",
        ])
    }

    /// Forgets every group `__consumer_offsets` partition `index` holds, answering the members
    /// that wait in a join or sync with NOT_COORDINATOR.
    private func unloadGroups(partition index: Int32) {
        let count = metadataImage().topics[Self.topic]?.partitionCount ?? settings.partitions
        var unloaded = 0
        for (id, group) in groups where Self.partition(for: id, partitions: count) == index {
            for (memberID, member) in group.members {
                member.joinWaiter?.resume(returning: joinError(.notCoordinator, memberID: memberID))
                if let waiter = member.syncWaiter {
                    var response = SyncGroupResponse()
                    response.errorCode = KafkaError.notCoordinator.code
                    waiter.resume(returning: response)
                }
                group.members[memberID]?.joinWaiter = nil
                group.members[memberID]?.syncWaiter = nil
            }
            groups[id] = nil
            unloaded += 1
        }
        for id in consumerGroups.keys where Self.partition(for: id, partitions: count) == index {
            consumerGroups[id] = nil
            unloaded += 1
        }
        if unloaded > 0 { logger.info("unloaded consumer groups of a partition", metadata: ["partition": "\(index)", "groups": "\(unloaded)"]) }
    }

    /// Applies one record: a value replaces the state it names, a tombstone deletes it.
    func replay(_ record: CoordinatorRecord) {
        switch record {
        case .offsetCommit(let groupID, let tp, let value):
            replayOffsetCommit(groupID, tp, value)
        case .groupMetadata(let groupID, let value):
            replayGroupMetadata(groupID, value)
        case .consumerGroup(let groupID, let value):
            replayConsumerGroup(groupID, value)
        }
    }

    // MARK: Session expiry

    func startExpiryChecks() {
        guard expiryTask == nil else { return }
        expiryTask = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(250))
                await self?.expireSessions()
            }
        }
    }

    func stop() {
        expiryTask?.cancel()
        expiryTask = nil
    }

    func expireSessions() {
        let now = clock()
        if now - lastOffsetExpiryMs >= 1000 {
            lastOffsetExpiryMs = now
            expireOffsets(now: now)
            expireConsumerMembers(now: now)
        }
        for group in groups.values {
            var expired: [String] = []
            for (id, member) in group.members where member.joinWaiter == nil && member.syncWaiter == nil {
                if now - member.lastHeartbeatMs > Int64(member.sessionTimeoutMs) { expired.append(id) }
            }
            group.pendingMembers = group.pendingMembers.filter { $0.value > now }
            guard !expired.isEmpty else { continue }
            for id in expired {
                logger.info("member session expired", metadata: ["group": "\(group.id)", "member": "\(id)"])
                removeMember(group, id)
            }
            membersChanged(group)
        }
    }

    func classicGroupHasMembers(_ id: String) -> Bool {
        groups[id].map { !$0.members.isEmpty } ?? false
    }

    // MARK: Describe, list, delete

    struct GroupSummary {
        var id: String
        var state: String
        var protocolType: String
        var protocolName: String
        var members: [Member]
        /// `classic`, or `consumer` for a KIP-848 group (ListGroups v5's group type).
        var type: String = "classic"
    }

    func describe(_ groupID: String) -> GroupSummary? {
        guard let group = groups[groupID] else { return nil }
        return GroupSummary(id: group.id, state: group.state.rawValue, protocolType: group.protocolType ?? "",
                            protocolName: group.state == .stable ? (group.protocolName ?? "") : "",
                            members: group.joinOrder.compactMap { group.members[$0] })
    }

    /// Every group: a KIP-848 group (one with a consumer-protocol record, unless a classic
    /// group of that id has members) as type `consumer`, the others as `classic`.
    func list() -> [GroupSummary] {
        let ids = Set(groups.keys).union(consumerGroups.keys).sorted()
        return ids.map { id in
            if let consumer = consumerGroups[id], !classicGroupHasMembers(id) {
                return GroupSummary(id: id, state: consumerGroupState(consumer), protocolType: "consumer", protocolName: "uniform",
                                    members: [], type: "consumer")
            }
            let group = groups[id]!
            return GroupSummary(id: id, state: group.state.rawValue, protocolType: group.protocolType ?? "", protocolName: group.protocolName ?? "",
                                members: [])
        }
    }

    /// Each group's state and member count, for the metrics.
    func groupStats() -> (groups: [(id: String, state: String, members: Int)], rebalances: Int) {
        var out: [(id: String, state: String, members: Int)] = []
        for (id, group) in groups where !(consumerGroups[id] != nil && group.members.isEmpty) {
            out.append((id, group.state.rawValue, group.members.count))
        }
        for (id, group) in consumerGroups where !classicGroupHasMembers(id) {
            out.append((id, consumerGroupState(group), group.members.count))
        }
        return (out, completedRebalances)
    }

    /// Whether DescribeGroups should answer that `id` is a consumer-protocol group.
    func isConsumerProtocolGroup(_ id: String) -> Bool {
        consumerGroups[id] != nil && !classicGroupHasMembers(id)
    }

    func delete(_ groupID: String) -> KafkaError {
        let consumerGroup = consumerGroups[groupID]
        guard groups[groupID] != nil || consumerGroup != nil else { return .groupIdNotFound }
        guard groups[groupID]?.members.isEmpty ?? true, consumerGroup?.members.isEmpty ?? true else { return .nonEmptyGroup }
        do {
            var records: [(key: ByteBuffer, value: ByteBuffer?)] = []
            for tp in groups[groupID]?.offsets.keys.sorted() ?? [] { records.append((try Self.offsetKey(group: groupID, tp: tp), nil)) }
            if groups[groupID] != nil { records.append((try Self.groupKey(groupID), nil)) }
            if consumerGroup != nil { records.append((try CoordinatorRecordSerde.consumerGroupKey(group: groupID), nil)) }
            try append(records, group: groupID)
        } catch {
            logger.error("cannot persist group deletion", metadata: ["group": "\(groupID)", "error": "\(error)"])
            return .coordinatorNotAvailable
        }
        groups[groupID] = nil
        consumerGroups[groupID] = nil
        return .noError
    }
}
