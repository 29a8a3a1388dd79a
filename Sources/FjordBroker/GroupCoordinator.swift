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
/// partition with Kafka's own record schemas (OffsetCommitKey v1 / OffsetCommitValue v3,
/// GroupMetadataKey v2 / GroupMetadataValue v3), and replayed from it at start.
actor GroupCoordinator {
    static let topic = "__consumer_offsets"

    enum GroupState: String {
        case empty = "Empty"
        case preparingRebalance = "PreparingRebalance"
        case completingRebalance = "CompletingRebalance"
        case stable = "Stable"
        case dead = "Dead"
    }

    struct Member {
        var memberID: String
        var instanceID: String?
        var clientID: String
        var clientHost: String
        var rebalanceTimeoutMs: Int32
        var sessionTimeoutMs: Int32
        var protocolType: String
        var protocols: [(name: String, metadata: ByteBuffer)]
        var assignment = ByteBuffer()
        var joinWaiter: CheckedContinuation<JoinGroupResponse, Never>? = nil
        var syncWaiter: CheckedContinuation<SyncGroupResponse, Never>? = nil
        var lastHeartbeatMs: Int64

        func metadata(for protocolName: String?) -> ByteBuffer {
            protocols.first { $0.name == protocolName }?.metadata ?? ByteBuffer()
        }
    }

    struct CommittedOffset {
        var offset: Int64
        var leaderEpoch: Int32
        var metadata: String
        var commitTimestamp: Int64
    }

    final class Group {
        let id: String
        var state: GroupState = .empty
        var generation: Int32 = 0
        var protocolType: String? = nil
        var protocolName: String? = nil
        var leader: String? = nil
        var members: [String: Member] = [:]
        var joinOrder: [String] = []
        /// Member ids handed out with MEMBER_ID_REQUIRED (KIP-394), with when they expire unjoined.
        var pendingMembers: [String: Int64] = [:]
        var staticMembers: [String: String] = [:]
        var offsets: [TopicPartition: CommittedOffset] = [:]
        var rebalanceRound = 0
        var stateTimestamp: Int64 = 0

        init(id: String) { self.id = id }
    }

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
    private var groups: [String: Group] = [:]
    /// KIP-848 groups (see GroupCoordinator+ConsumerProtocol.swift).
    var consumerGroups: [String: ConsumerGroup] = [:]
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
        guard let partition = replicaManager.partition(tp) else { throw StorageError.logClosed("\(tp)") }
        var builder = RecordBatchBuilder()
        let now = clock()
        for record in records {
            builder.append(timestamp: now, key: record.key, value: record.value)
        }
        _ = try replicaManager.appendRecords(try builder.build().bytes, to: partition, nowMs: now)
    }

    private static func offsetKey(group: String, tp: TopicPartition) throws(CoordinatorRecordError) -> ByteBuffer {
        try CoordinatorRecordSerde.offsetCommitKey(group: group, partition: tp)
    }

    private static func offsetValue(_ offset: CommittedOffset) throws(CoordinatorRecordError) -> ByteBuffer {
        var value = OffsetCommitValue()
        value.offset = offset.offset
        value.leaderEpoch = offset.leaderEpoch
        value.metadata = offset.metadata
        value.commitTimestamp = offset.commitTimestamp
        return try CoordinatorRecordSerde.offsetCommitValue(value)
    }

    private static func groupKey(_ group: String) throws(CoordinatorRecordError) -> ByteBuffer {
        try CoordinatorRecordSerde.groupMetadataKey(group: group)
    }

    private func groupValue(_ group: Group) throws(CoordinatorRecordError) -> ByteBuffer {
        var value = GroupMetadataValue()
        value.protocolType = group.protocolType ?? ""
        value.generation = group.generation
        value.protocol = group.protocolName
        value.leader = group.leader
        value.currentStateTimestamp = group.stateTimestamp
        for id in group.joinOrder {
            guard let member = group.members[id] else { continue }
            var entry = GroupMetadataValue.MemberMetadata()
            entry.memberId = member.memberID
            entry.groupInstanceId = member.instanceID
            entry.clientId = member.clientID
            entry.clientHost = member.clientHost
            entry.rebalanceTimeout = member.rebalanceTimeoutMs
            entry.sessionTimeout = member.sessionTimeoutMs
            entry.subscription = member.metadata(for: group.protocolName)
            entry.assignment = member.assignment
            value.members.append(entry)
        }
        return try CoordinatorRecordSerde.groupMetadataValue(value, group: group.id)
    }

    private func persistGroup(_ group: Group) {
        do {
            try append([(Self.groupKey(group.id), groupValue(group))], group: group.id)
        } catch {
            logger.error("cannot persist group metadata", metadata: ["group": "\(group.id)", "error": "\(error)"])
        }
    }

    /// Replays every `__consumer_offsets` partition (at start, before serving). A record that
    /// does not decode is logged and skipped, never taken for a deletion (see `CoordinatorLoader`).
    func load() {
        let loader = CoordinatorLoader(logger: logger)
        var skipped = 0
        for index in 0..<settings.partitions {
            guard let partition = replicaManager.partition(TopicPartition(topic: Self.topic, partition: index)) else { continue }
            let summary = loader.load(partition.log) { replay($0) }
            skipped += summary.skippedRecords + summary.skippedBatches
        }
        let loadedGroups = groups.values.count { !$0.members.isEmpty || !$0.offsets.isEmpty }
        logger.info("loaded consumer groups", metadata: ["groups": "\(loadedGroups)", "skipped": "\(skipped)"])
    }

    /// Applies one record: a value replaces the state it names, a tombstone deletes it.
    func replay(_ record: CoordinatorRecord) {
        switch record {
        case .offsetCommit(let groupID, let tp, let value):
            let group = groups[groupID] ?? Group(id: groupID)
            groups[groupID] = group
            guard let v = value else {
                group.offsets[tp] = nil
                return
            }
            group.offsets[tp] = CommittedOffset(offset: v.offset, leaderEpoch: v.leaderEpoch, metadata: v.metadata, commitTimestamp: v.commitTimestamp)
        case .groupMetadata(let groupID, let value):
            guard let v = value else {
                groups[groupID] = nil
                return
            }
            let group = groups[groupID] ?? Group(id: groupID)
            groups[groupID] = group
            group.generation = v.generation
            group.protocolType = v.protocolType.isEmpty ? nil : v.protocolType
            group.protocolName = v.protocol
            group.leader = v.leader
            group.members = [:]
            group.joinOrder = []
            group.staticMembers = [:]
            let now = clock()
            for m in v.members {
                var member = Member(memberID: m.memberId, instanceID: m.groupInstanceId, clientID: m.clientId, clientHost: m.clientHost,
                                    rebalanceTimeoutMs: m.rebalanceTimeout, sessionTimeoutMs: m.sessionTimeout,
                                    protocolType: v.protocolType, protocols: [(v.protocol ?? "", m.subscription)], lastHeartbeatMs: now)
                member.assignment = m.assignment
                group.members[m.memberId] = member
                group.joinOrder.append(m.memberId)
                if let instance = m.groupInstanceId { group.staticMembers[instance] = m.memberId }
            }
            group.state = group.members.isEmpty ? .empty : .stable
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

    /// `offsets.retention.minutes` (KIP-211): offsets of a group that uses the group protocol
    /// expire once the group has been empty that long; offsets committed outside the protocol
    /// (assign() consumers) expire that long after their commit. An empty group left without
    /// offsets is deleted.
    private func expireOffsets(now: Int64) {
        for group in Array(groups.values) where group.state == .empty && group.members.isEmpty {
            var expired: [TopicPartition] = []
            for (tp, offset) in group.offsets {
                let base = group.protocolType == nil ? offset.commitTimestamp : Swift.max(group.stateTimestamp, offset.commitTimestamp)
                let (age, overflow) = now.subtractingReportingOverflow(base)  // base may come from a replayed record
                if overflow || age > settings.offsetsRetentionMs { expired.append(tp) }
            }
            guard !expired.isEmpty || (group.offsets.isEmpty && group.generation > 0) else { continue }
            // Written first: state is dropped only once its tombstones are in the log.
            let dropsGroup = expired.count == group.offsets.count
            do {
                var records: [(key: ByteBuffer, value: ByteBuffer?)] = []
                for tp in expired { records.append((try Self.offsetKey(group: group.id, tp: tp), nil)) }
                if dropsGroup { records.append((try Self.groupKey(group.id), nil)) }
                try append(records, group: group.id)
                for tp in expired { group.offsets[tp] = nil }
                if dropsGroup { groups[group.id] = nil }
                logger.info("expired committed offsets", metadata: ["group": "\(group.id)", "partitions": "\(expired.count)"])
            } catch {
                logger.error("cannot expire offsets", metadata: ["group": "\(group.id)", "error": "\(error)"])
            }
        }
        // An empty consumer-protocol group goes with its last offsets (or when it never had any).
        for (id, group) in consumerGroups where group.members.isEmpty && groups[id] == nil {
            removeEmptyConsumerGroup(id)
        }
    }

    func classicGroupHasMembers(_ id: String) -> Bool {
        groups[id].map { !$0.members.isEmpty } ?? false
    }

    // MARK: Membership helpers

    private func removeMember(_ group: Group, _ id: String) {
        guard let member = group.members.removeValue(forKey: id) else { return }
        group.joinOrder.removeAll { $0 == id }
        if let instance = member.instanceID, group.staticMembers[instance] == id { group.staticMembers[instance] = nil }
        if let waiter = member.joinWaiter {
            var response = JoinGroupResponse()
            response.errorCode = KafkaError.unknownMemberId.code
            response.generationId = -1
            response.memberId = id
            waiter.resume(returning: response)
        }
        if let waiter = member.syncWaiter {
            var response = SyncGroupResponse()
            response.errorCode = KafkaError.rebalanceInProgress.code
            waiter.resume(returning: response)
        }
        if group.leader == id { group.leader = group.joinOrder.first }
    }

    /// After members left or expired: rebalance, or finish a rebalance already waiting on them.
    private func membersChanged(_ group: Group) {
        switch group.state {
        case .stable, .completingRebalance:
            prepareRebalance(group)
        case .preparingRebalance:
            maybeCompleteJoin(group)
        case .empty, .dead:
            if group.members.isEmpty { group.state = .empty }
        }
    }

    private func prepareRebalance(_ group: Group) {
        // Members waiting in SyncGroup must rejoin.
        for id in group.joinOrder {
            if let waiter = group.members[id]?.syncWaiter {
                group.members[id]?.syncWaiter = nil
                var response = SyncGroupResponse()
                response.errorCode = KafkaError.rebalanceInProgress.code
                waiter.resume(returning: response)
            }
        }
        let wasEmpty = group.state == .empty
        group.state = .preparingRebalance
        group.stateTimestamp = clock()
        group.rebalanceRound += 1
        let round = group.rebalanceRound
        let timeout = Int64(group.members.values.map(\.rebalanceTimeoutMs).max() ?? 0)
        let delay = wasEmpty ? Swift.min(settings.initialRebalanceDelayMs, Swift.max(timeout, 0)) : timeout
        let groupID = group.id
        Task { [weak self] in
            try? await Task.sleep(for: .milliseconds(Swift.max(delay, 0)))
            await self?.rebalanceTimerFired(groupID, round: round, initialDelay: wasEmpty)
        }
        if !wasEmpty { maybeCompleteJoin(group) }
    }

    private func rebalanceTimerFired(_ groupID: String, round: Int, initialDelay: Bool) {
        guard let group = groups[groupID], group.state == .preparingRebalance, group.rebalanceRound == round else { return }
        if initialDelay && group.members.values.contains(where: { $0.joinWaiter == nil }) {
            // The initial delay passed but someone is still on its way: wait for the rebalance timeout.
            group.rebalanceRound += 1
            let next = group.rebalanceRound
            let timeout = Int64(group.members.values.map(\.rebalanceTimeoutMs).max() ?? 0)
            Task { [weak self] in
                try? await Task.sleep(for: .milliseconds(timeout))
                await self?.rebalanceTimerFired(groupID, round: next, initialDelay: false)
            }
            return
        }
        // Members that did not rejoin in time are removed.
        for id in group.joinOrder where group.members[id]?.joinWaiter == nil {
            logger.info("member did not rejoin in time", metadata: ["group": "\(groupID)", "member": "\(id)"])
            removeMember(group, id)
        }
        completeJoin(group)
    }

    private func maybeCompleteJoin(_ group: Group) {
        guard group.state == .preparingRebalance, group.members.values.allSatisfy({ $0.joinWaiter != nil }) else { return }
        // An empty group still waits out group.initial.rebalance.delay.ms (the timer completes it).
        if group.generation == 0 && settings.initialRebalanceDelayMs > 0 && clock() - group.stateTimestamp < settings.initialRebalanceDelayMs {
            return
        }
        completeJoin(group)
    }

    private func completeJoin(_ group: Group) {
        group.rebalanceRound += 1
        group.generation = group.generation == Int32.max ? 1 : group.generation + 1  // a replayed record could hold Int32.max
        group.stateTimestamp = clock()
        if group.members.isEmpty {
            group.state = .empty
            group.protocolName = nil
            group.leader = nil
            persistGroup(group)
            return
        }
        // The protocol every member supports, preferring the members' first choices.
        var candidates: Set<String>? = nil
        for member in group.members.values {
            let names = Set(member.protocols.map(\.name))
            candidates = candidates.map { $0.intersection(names) } ?? names
        }
        var votes: [String: Int] = [:]
        for member in group.members.values {
            if let choice = member.protocols.first(where: { candidates?.contains($0.name) == true }) {
                votes[choice.name, default: 0] += 1
            }
        }
        group.protocolName = votes.max { $0.value != $1.value ? $0.value < $1.value : $0.key > $1.key }?.key
        if group.leader == nil || group.members[group.leader!] == nil { group.leader = group.joinOrder.first }
        group.state = .completingRebalance
        let now = clock()
        for id in group.joinOrder {
            guard var member = group.members[id], let waiter = member.joinWaiter else { continue }
            member.joinWaiter = nil
            member.lastHeartbeatMs = now
            group.members[id] = member
            waiter.resume(returning: joinResponse(group, for: id))
        }
        logger.info("group rebalanced", metadata: [
            "group": "\(group.id)", "generation": "\(group.generation)", "members": "\(group.members.count)",
            "protocol": "\(group.protocolName ?? "-")",
        ])
    }

    private func joinResponse(_ group: Group, for id: String) -> JoinGroupResponse {
        var response = JoinGroupResponse()
        response.generationId = group.generation
        response.protocolType = group.protocolType
        response.protocolName = group.protocolName
        response.leader = group.leader ?? ""
        response.memberId = id
        if id == group.leader {
            for memberID in group.joinOrder {
                guard let member = group.members[memberID] else { continue }
                var entry = JoinGroupResponse.JoinGroupResponseMember()
                entry.memberId = memberID
                entry.groupInstanceId = member.instanceID
                entry.metadata = member.metadata(for: group.protocolName)
                response.members.append(entry)
            }
        }
        return response
    }

    private func joinError(_ error: KafkaError, memberID: String = "") -> JoinGroupResponse {
        var response = JoinGroupResponse()
        response.errorCode = error.code
        response.generationId = -1
        response.memberId = memberID
        return response
    }

    // MARK: JoinGroup

    func join(_ request: JoinGroupRequest, version: Int16, clientID: String, clientHost: String) async -> JoinGroupResponse {
        guard !request.groupId.isEmpty else { return joinError(.invalidGroupId) }
        guard request.sessionTimeoutMs >= settings.minSessionTimeoutMs, request.sessionTimeoutMs <= settings.maxSessionTimeoutMs else {
            return joinError(.invalidSessionTimeout, memberID: request.memberId)
        }
        guard !request.protocols.isEmpty, !request.protocolType.isEmpty else {
            return joinError(.inconsistentGroupProtocol, memberID: request.memberId)
        }
        if let consumer = consumerGroups[request.groupId], !consumer.members.isEmpty {
            return joinError(.inconsistentGroupProtocol, memberID: request.memberId)
        }
        removeEmptyConsumerGroup(request.groupId)  // a classic group takes the id over
        let group = groups[request.groupId] ?? Group(id: request.groupId)
        groups[request.groupId] = group
        if group.state != .empty, let type = group.protocolType, type != request.protocolType {
            return joinError(.inconsistentGroupProtocol, memberID: request.memberId)
        }
        if group.state != .empty, !group.members.isEmpty {
            let supported = group.members.values.map { Set($0.protocols.map(\.name)) }.reduce(Set(request.protocols.map(\.name))) { $0.intersection($1) }
            if supported.isEmpty { return joinError(.inconsistentGroupProtocol, memberID: request.memberId) }
        }
        let rebalanceTimeout = version >= 1 ? request.rebalanceTimeoutMs : request.sessionTimeoutMs
        let protocols = request.protocols.map { ($0.name, $0.metadata) }
        let now = clock()
        var memberID = request.memberId

        if memberID.isEmpty {
            if let instance = request.groupInstanceId {
                let newID = "\(instance)-\(UUID().uuidString.lowercased())"
                if let oldID = group.staticMembers[instance], var old = group.members[oldID] {
                    // A static member restarted: it takes over its old identity under a new member id.
                    group.members[oldID] = nil
                    if let index = group.joinOrder.firstIndex(of: oldID) { group.joinOrder[index] = newID }
                    if let waiter = old.joinWaiter {
                        old.joinWaiter = nil
                        waiter.resume(returning: joinError(.fencedInstanceId, memberID: oldID))
                    }
                    let unchanged = old.protocols.map(\.name) == protocols.map(\.0)
                        && zip(old.protocols, protocols).allSatisfy { $0.metadata == $1.1 }
                    old.memberID = newID
                    old.protocols = protocols
                    old.clientID = clientID
                    old.clientHost = clientHost
                    old.sessionTimeoutMs = request.sessionTimeoutMs
                    old.rebalanceTimeoutMs = rebalanceTimeout
                    old.lastHeartbeatMs = now
                    group.members[newID] = old
                    group.staticMembers[instance] = newID
                    if group.leader == oldID { group.leader = newID }
                    if group.state == .stable && unchanged {
                        // KIP-345: no rebalance; it syncs to get its old assignment back.
                        persistGroup(group)
                        var response = joinResponse(group, for: newID)
                        if group.leader == newID {
                            response.skipAssignment = version >= 9
                            if version < 9 { response.members = [] }
                        }
                        return response
                    }
                    memberID = newID
                } else {
                    guard group.members.count + group.pendingMembers.count < settings.maxGroupSize else {
                        return joinError(.groupMaxSizeReached)
                    }
                    memberID = newID
                    addMember(group, id: memberID, request: request, protocols: protocols, rebalanceTimeout: rebalanceTimeout,
                              clientID: clientID, clientHost: clientHost, now: now)
                }
            } else if version >= 4 {
                guard group.members.count + group.pendingMembers.count < settings.maxGroupSize else {
                    return joinError(.groupMaxSizeReached)
                }
                let newID = "\(clientID)-\(UUID().uuidString.lowercased())"
                // A pending id that is never used expires after the session timeout.
                group.pendingMembers[newID] = now + Int64(request.sessionTimeoutMs)
                return joinError(.memberIdRequired, memberID: newID)
            } else {
                guard group.members.count + group.pendingMembers.count < settings.maxGroupSize else {
                    return joinError(.groupMaxSizeReached)
                }
                memberID = "\(clientID)-\(UUID().uuidString.lowercased())"
                addMember(group, id: memberID, request: request, protocols: protocols, rebalanceTimeout: rebalanceTimeout,
                          clientID: clientID, clientHost: clientHost, now: now)
            }
        } else if group.pendingMembers.removeValue(forKey: memberID) != nil {
            addMember(group, id: memberID, request: request, protocols: protocols, rebalanceTimeout: rebalanceTimeout,
                      clientID: clientID, clientHost: clientHost, now: now)
        } else if var member = group.members[memberID] {
            if let instance = request.groupInstanceId, group.staticMembers[instance] != memberID {
                return joinError(.fencedInstanceId, memberID: memberID)
            }
            let changed = member.protocols.map(\.name) != protocols.map(\.0)
                || !zip(member.protocols, protocols).allSatisfy { $0.metadata == $1.1 }
            member.protocols = protocols
            member.sessionTimeoutMs = request.sessionTimeoutMs
            member.rebalanceTimeoutMs = rebalanceTimeout
            member.lastHeartbeatMs = now
            group.members[memberID] = member
            if (group.state == .stable || group.state == .completingRebalance) && !changed && group.leader != memberID {
                return joinResponse(group, for: memberID)
            }
        } else {
            return joinError(.unknownMemberId, memberID: memberID)
        }

        if group.state != .preparingRebalance {
            prepareRebalance(group)
        }
        let id = memberID
        let groupID = group.id
        // If the client goes away while waiting, stop waiting; the member then expires with its session.
        return await withTaskCancellationHandler {
            await waitForJoin(group, id: id)
        } onCancel: {
            Task { await self.abandonWaits(groupID: groupID, memberID: id) }
        }
    }

    private func waitForJoin(_ group: Group, id: String) async -> JoinGroupResponse {
        await withCheckedContinuation { (continuation: CheckedContinuation<JoinGroupResponse, Never>) in
            if let previous = group.members[id]?.joinWaiter {
                previous.resume(returning: joinError(.rebalanceInProgress, memberID: id))
            }
            group.members[id]?.joinWaiter = continuation
            if group.members[id] == nil {
                continuation.resume(returning: joinError(.unknownMemberId, memberID: id))
                return
            }
            maybeCompleteJoin(group)
        }
    }

    /// A waiting member's connection closed: answer its pending JoinGroup/SyncGroup with an error
    /// (nobody reads it) so session expiry can remove the member.
    func abandonWaits(groupID: String, memberID: String) {
        guard let group = groups[groupID], var member = group.members[memberID] else { return }
        if let waiter = member.joinWaiter {
            member.joinWaiter = nil
            waiter.resume(returning: joinError(.rebalanceInProgress, memberID: memberID))
        }
        if let waiter = member.syncWaiter {
            member.syncWaiter = nil
            var response = SyncGroupResponse()
            response.errorCode = KafkaError.rebalanceInProgress.code
            waiter.resume(returning: response)
        }
        group.members[memberID] = member
    }

    private func addMember(_ group: Group, id: String, request: JoinGroupRequest, protocols: [(String, ByteBuffer)],
                           rebalanceTimeout: Int32, clientID: String, clientHost: String, now: Int64) {
        let member = Member(memberID: id, instanceID: request.groupInstanceId, clientID: clientID, clientHost: clientHost,
                            rebalanceTimeoutMs: rebalanceTimeout, sessionTimeoutMs: request.sessionTimeoutMs,
                            protocolType: request.protocolType, protocols: protocols.map { (name: $0.0, metadata: $0.1) },
                            lastHeartbeatMs: now)
        group.members[id] = member
        group.joinOrder.append(id)
        if let instance = request.groupInstanceId { group.staticMembers[instance] = id }
        if group.protocolType == nil || group.state == .empty { group.protocolType = request.protocolType }
    }

    // MARK: SyncGroup

    func sync(_ request: SyncGroupRequest) async -> SyncGroupResponse {
        var error = SyncGroupResponse()
        guard let group = groups[request.groupId], var member = group.members[request.memberId] else {
            error.errorCode = KafkaError.unknownMemberId.code
            return error
        }
        if let instance = request.groupInstanceId, group.staticMembers[instance] != request.memberId {
            error.errorCode = KafkaError.fencedInstanceId.code
            return error
        }
        guard request.generationId == group.generation else {
            error.errorCode = KafkaError.illegalGeneration.code
            return error
        }
        if let type = request.protocolType, type != group.protocolType || (request.protocolName != nil && request.protocolName != group.protocolName) {
            error.errorCode = KafkaError.inconsistentGroupProtocol.code
            return error
        }
        member.lastHeartbeatMs = clock()
        group.members[request.memberId] = member
        switch group.state {
        case .empty, .dead:
            error.errorCode = KafkaError.unknownMemberId.code
            return error
        case .preparingRebalance:
            error.errorCode = KafkaError.rebalanceInProgress.code
            return error
        case .stable:
            return syncResponse(group, member: member)
        case .completingRebalance:
            return await withCheckedContinuation { (continuation: CheckedContinuation<SyncGroupResponse, Never>) in
                group.members[request.memberId]?.syncWaiter = continuation
                if request.memberId == group.leader {
                    var assignments: [String: ByteBuffer] = [:]
                    for entry in request.assignments { assignments[entry.memberId] = entry.assignment }
                    for id in group.joinOrder { group.members[id]?.assignment = assignments[id] ?? ByteBuffer() }
                    group.state = .stable
                    group.stateTimestamp = clock()
                    persistGroup(group)
                    for id in group.joinOrder {
                        guard let waiting = group.members[id], let waiter = waiting.syncWaiter else { continue }
                        group.members[id]?.syncWaiter = nil
                        waiter.resume(returning: syncResponse(group, member: waiting))
                    }
                }
            }
        }
    }

    private func syncResponse(_ group: Group, member: Member) -> SyncGroupResponse {
        var response = SyncGroupResponse()
        response.protocolType = group.protocolType
        response.protocolName = group.protocolName
        response.assignment = member.assignment
        return response
    }

    // MARK: Heartbeat and LeaveGroup

    func heartbeat(_ request: HeartbeatRequest) -> KafkaError {
        guard let group = groups[request.groupId], var member = group.members[request.memberId] else { return .unknownMemberId }
        if let instance = request.groupInstanceId, group.staticMembers[instance] != request.memberId { return .fencedInstanceId }
        guard request.generationId == group.generation else { return .illegalGeneration }
        member.lastHeartbeatMs = clock()
        group.members[request.memberId] = member
        switch group.state {
        case .preparingRebalance: return .rebalanceInProgress
        case .empty, .dead: return .unknownMemberId
        case .stable, .completingRebalance: return .noError
        }
    }

    func leave(groupID: String, members: [(memberID: String, instanceID: String?)]) -> (KafkaError, [KafkaError]) {
        guard let group = groups[groupID] else { return (.unknownMemberId, members.map { _ in .unknownMemberId }) }
        var results: [KafkaError] = []
        for entry in members {
            var id = entry.memberID
            if let instance = entry.instanceID {
                guard let known = group.staticMembers[instance] else { results.append(.unknownMemberId); continue }
                if !id.isEmpty && id != known { results.append(.fencedInstanceId); continue }
                id = known
            }
            if group.pendingMembers.removeValue(forKey: id) != nil { results.append(.noError); continue }
            guard group.members[id] != nil else { results.append(.unknownMemberId); continue }
            logger.info("member left", metadata: ["group": "\(groupID)", "member": "\(id)"])
            removeMember(group, id)
            results.append(.noError)
        }
        membersChanged(group)
        return (.noError, results)
    }

    // MARK: Offsets

    func commit(groupID: String, generation: Int32, memberID: String, instanceID: String?,
                offsets: [(TopicPartition, CommittedOffset)], version: Int16 = 8) -> (KafkaError?, [KafkaError]) {
        guard !groupID.isEmpty else { return (.invalidGroupId, []) }
        let group = groups[groupID] ?? Group(id: groupID)
        if let consumerCheck = validateConsumerCommit(groupID: groupID, memberID: memberID, memberEpoch: generation),
            !(generation < 0 && memberID.isEmpty)
        {
            // A KIP-848 group: the member epoch stands in for the generation.
            if consumerCheck != .noError { return (consumerCheck, []) }
        } else if generation < 0 && memberID.isEmpty {
            // A commit from outside the group protocol (assign() consumers, admin tools).
            guard group.members.isEmpty else { return (.unknownMemberId, []) }
        } else {
            guard group.members[memberID] != nil else { return (.unknownMemberId, []) }
            if let instanceID, group.staticMembers[instanceID] != memberID { return (.fencedInstanceId, []) }
            guard generation == group.generation else { return (.illegalGeneration, []) }
            if group.state == .completingRebalance { return (.rebalanceInProgress, []) }
        }
        groups[groupID] = group
        var results: [KafkaError] = []
        var records: [(key: ByteBuffer, value: ByteBuffer?)] = []
        var accepted: [(TopicPartition, CommittedOffset)] = []
        for (tp, offset) in offsets {
            if offset.metadata.utf8.count > settings.maxMetadataBytes {
                results.append(.offsetMetadataTooLarge)
            } else if replicaManager.partition(tp) == nil {
                results.append(.unknownTopicOrPartition)
            } else {
                do {
                    records.append((try Self.offsetKey(group: groupID, tp: tp), try Self.offsetValue(offset)))
                    results.append(.noError)
                    accepted.append((tp, offset))
                } catch {
                    logger.error("cannot encode an offset commit", metadata: ["group": "\(groupID)", "error": "\(error)"])
                    results.append(.unknownServerError)
                }
            }
        }
        if !records.isEmpty {
            do {
                try append(records, group: groupID)
            } catch {
                logger.error("cannot persist offsets", metadata: ["group": "\(groupID)", "error": "\(error)"])
                return (nil, results.map { $0 == .noError ? .coordinatorNotAvailable : $0 })
            }
            for (tp, offset) in accepted { group.offsets[tp] = offset }
        }
        return (nil, results)
    }

    func committed(groupID: String, partitions: [TopicPartition]?) -> [(TopicPartition, CommittedOffset?)] {
        let group = groups[groupID]
        if let partitions { return partitions.map { ($0, group?.offsets[$0]) } }
        return (group?.offsets ?? [:]).sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    func deleteOffsets(groupID: String, partitions: [TopicPartition]) -> (KafkaError, [KafkaError]) {
        guard let group = groups[groupID] else { return (.groupIdNotFound, []) }
        var results: [KafkaError] = []
        var records: [(key: ByteBuffer, value: ByteBuffer?)] = []
        var deleted: [TopicPartition] = []
        for tp in partitions {
            if group.state != .empty, group.members.values.contains(where: { _ in true }) && group.protocolType == "consumer" {
                // Kafka refuses deleting offsets of partitions the group still consumes; without decoding
                // subscriptions here, a non-empty consumer group refuses all.
                results.append(.groupSubscribedToTopic)
                continue
            }
            do {
                records.append((try Self.offsetKey(group: groupID, tp: tp), nil))
                deleted.append(tp)
                results.append(.noError)
            } catch {
                logger.error("cannot encode an offset tombstone", metadata: ["group": "\(groupID)", "error": "\(error)"])
                results.append(.unknownServerError)
            }
        }
        guard !records.isEmpty else { return (.noError, results) }
        do {
            try append(records, group: groupID)
        } catch {
            // Nothing was deleted: the offsets stay, and the client is told to retry.
            logger.error("cannot persist offset deletion", metadata: ["group": "\(groupID)", "error": "\(error)"])
            return (.coordinatorNotAvailable, results.map { $0 == .noError ? .coordinatorNotAvailable : $0 })
        }
        for tp in deleted { group.offsets[tp] = nil }
        return (.noError, results)
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
