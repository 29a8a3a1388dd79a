import FjordProtocol
import CoreMetrics
import Logging
import NIOCore

/// Group membership: the classic protocol (JoinGroup → SyncGroup → Heartbeat, the leader runs
/// the assignor) and KIP-848 (ConsumerGroupHeartbeat, the broker assigns).
///
/// Every change of this member's partitions happens inside `poll` (`maintainGroup`): the
/// background heartbeat only notices that one is due. That keeps the application's view
/// simple: between two polls, the assignment does not change under it.
extension KafkaConsumer {
    /// Joins `group.id` and reads the partitions the group assigns to this member.
    public func subscribe(topics: [String], listener: (any ConsumerRebalanceListener)? = nil) async throws {
        guard configuration.groupID != nil else { throw ClientError.invalidConfiguration("subscribe needs group.id") }
        guard !topics.isEmpty else { throw ClientError.invalidConfiguration("subscribe to no topics: use unsubscribe") }
        if subscription == nil && !assignment.isEmpty {
            throw ClientError.invalidConfiguration("subscribe() after assign(): unassign first")
        }
        let sorted = Array(Set(topics)).sorted()
        self.listener = listener
        if subscription != sorted {
            subscription = sorted
            needsJoin = true
        }
        try await cluster.refreshMetadata(topics: Set(sorted))
    }

    /// Leaves the group (committing first with auto-commit) and drops the assignment.
    public func unsubscribe() async {
        guard subscription != nil else { return }
        await leaveGroup(commit: configuration.enableAutoCommit)
        subscription = nil
        memberID = ""
        generation = -1
    }

    /// This member's id and generation (classic) or member epoch (KIP-848) in the group.
    public func groupMembership() -> (memberID: String, generation: Int32)? {
        generation >= 0 ? (memberID, generation) : nil
    }

    /// The number of rebalances this member completed.
    public func rebalanceCount() -> Int { rebalances }

    // MARK: Driving membership from poll

    func maintainGroup() async throws {
        if closed { throw ClientError.closed }
        if partitionsLost {
            partitionsLost = false
            await losePartitions()
        }
        if !needsJoin, let counts = leaderPartitionCounts {
            // Cached metadata is refreshed once older than metadata.max.age.ms.
            let metadata = try await cluster.currentMetadata()
            for (topic, count) in counts where Int32(metadata.topics[topic]?.partitions.count ?? Int(count)) != count {
                logger.info("partition count changed: rebalancing", metadata: ["topic": "\(topic)"])
                needsJoin = true
            }
        }
        if needsJoin && !joining {
            joining = true
            defer { joining = false }
            switch configuration.groupProtocol {
            case .classic: try await joinClassic()
            case .consumer: try await heartbeatConsumerProtocol(applyingAssignment: true)
            }
            startHeartbeats()
        }
        if configuration.enableAutoCommit,
           ContinuousClock.now - lastAutoCommit >= .milliseconds(configuration.autoCommitIntervalMs) {
            lastAutoCommit = .now
            do {
                try await commit()
            } catch {
                logger.warning("auto-commit failed", metadata: ["error": "\(error)"])
            }
        }
    }

    func removeAssigned(_ partitions: [TopicPartition]) {
        let gone = Set(partitions)
        assignment.removeAll { gone.contains($0) }
        for tp in gone {
            positions[tp] = nil
            paused.remove(tp)
        }
        dropPrefetch()
    }

    /// Commits (with auto-commit) and calls the listener for partitions given up in order.
    private func revoke(_ partitions: [TopicPartition]) async {
        guard !partitions.isEmpty else { return }
        if configuration.enableAutoCommit {
            let offsets = Dictionary(uniqueKeysWithValues: partitions.compactMap { tp in positions[tp].map { (tp, $0) } })
            do {
                try await commitOffsets(offsets)
            } catch {
                logger.warning("commit before revocation failed", metadata: ["error": "\(error)"])
            }
        }
        await listener?.partitionsRevoked(partitions, consumer: self)
        removeAssigned(partitions)
    }

    /// Takes new partitions. Their positions are looked up here; one that cannot be yet is
    /// looked up again by the next `poll` (the partition stays assigned either way).
    private func adopt(_ added: [TopicPartition]) async throws {
        guard !added.isEmpty else { return }
        for tp in added where !assignment.contains(tp) { assignment.append(tp) }
        do {
            try await resolve(added.map { ($0, .committed) })
        } catch let error as ClientError where error.isRetriable {
            logger.info("positions of new partitions not known yet", metadata: ["error": "\(error)"])
        }
        await listener?.partitionsAssigned(added, consumer: self)
    }

    /// Gives up partitions without committing (membership was lost: another member may own
    /// them already) and tells the listener.
    func losePartitions() async {
        let lost = assignment
        generation = -1
        guard !lost.isEmpty else { return }
        logger.info("partitions lost", metadata: ["partitions": "\(lost)"])
        removeAssigned(lost)
        await listener?.partitionsLost(lost, consumer: self)
    }

    // MARK: Classic protocol

    private var rebalanceProtocol: RebalanceProtocol {
        let chosen = configuration.assignors.first { $0.name == protocolName }
        return chosen?.rebalanceProtocol ?? .eager
    }

    private func subscriptionMetadata(for assignor: any ConsumerPartitionAssignor) throws -> ByteBuffer {
        var subscription = ConsumerProtocolSubscription()
        subscription.topics = self.subscription ?? []
        if assignor.rebalanceProtocol == .cooperative {
            subscription.ownedPartitions = Self.grouped(assignment).map { topic, partitions in
                var entry = ConsumerProtocolSubscription.TopicPartition()
                entry.topic = topic
                entry.partitions = partitions
                return entry
            }
            subscription.generationId = generation
        }
        var buffer = ByteBuffer()
        let version: Int16 = 3
        buffer.writeInteger(version, endianness: .big)
        try subscription.write(to: &buffer, version: version)
        return buffer
    }

    static func grouped(_ partitions: [TopicPartition]) -> [(String, [Int32])] {
        var byTopic: [String: [Int32]] = [:]
        for tp in partitions { byTopic[tp.topic, default: []].append(tp.partition) }
        return byTopic.sorted { $0.key < $1.key }.map { ($0.key, $0.value.sorted()) }
    }

    /// One classic rebalance round: (eager: revoke all) → JoinGroup → (leader: assign) →
    /// SyncGroup → revoke what moved (cooperative) → adopt what is new.
    private func joinClassic() async throws {
        guard let group = configuration.groupID else { return }
        if rebalanceProtocol == .eager && generation >= 0 {
            await revoke(assignment)
        }
        var backoff = ExponentialBackoff(baseMs: configuration.client.retryBackoffMs, maxMs: configuration.client.retryBackoffMaxMs)
        while !closed {
            var join = JoinGroupRequest()
            join.groupId = group
            join.sessionTimeoutMs = configuration.sessionTimeoutMs
            join.rebalanceTimeoutMs = configuration.maxPollIntervalMs
            join.memberId = memberID
            join.groupInstanceId = configuration.groupInstanceID
            join.protocolType = "consumer"
            join.protocols = try configuration.assignors.map { assignor in
                var entry = JoinGroupRequest.JoinGroupRequestProtocol()
                entry.name = assignor.name
                entry.metadata = try subscriptionMetadata(for: assignor)
                return entry
            }
            // JoinGroup waits for every member to rejoin, up to the rebalance timeout.
            let joinTimeout = TimeAmount.milliseconds(Int64(configuration.maxPollIntervalMs) + Int64(configuration.client.requestTimeoutMs))
            let joined = try await coordinatorRequest { connection in
                try await connection.send(join, timeout: joinTimeout)
            } errorCode: { $0.errorCode }
            switch KafkaError(code: joined.errorCode) {
            case .noError:
                break
            case .memberIdRequired:
                memberID = joined.memberId
                continue
            case .unknownMemberId:
                memberID = ""
                await losePartitions()
                continue
            case .rebalanceInProgress, .coordinatorLoadInProgress, .notCoordinator, .coordinatorNotAvailable:
                backoff.recordFailure()
                try await Task.sleep(for: .milliseconds(backoff.delayMs()))
                continue
            case let error:
                throw ClientError.kafka(error, "JoinGroup \(group)")
            }
            memberID = joined.memberId
            generation = joined.generationId
            protocolName = joined.protocolName
            var sync = SyncGroupRequest()
            sync.groupId = group
            sync.generationId = generation
            sync.memberId = memberID
            sync.groupInstanceId = configuration.groupInstanceID
            sync.protocolType = "consumer"
            sync.protocolName = protocolName
            leaderPartitionCounts = nil
            if joined.leader == memberID && !joined.skipAssignment {
                sync.assignments = try await leaderAssign(joined)
            }
            let synced = try await coordinatorRequest { connection in
                try await connection.send(sync)
            } errorCode: { $0.errorCode }
            switch KafkaError(code: synced.errorCode) {
            case .noError:
                break
            case .rebalanceInProgress:
                continue
            case .unknownMemberId, .illegalGeneration:
                if KafkaError(code: synced.errorCode) == .unknownMemberId { memberID = "" }
                await losePartitions()
                continue
            case let error:
                throw ClientError.kafka(error, "SyncGroup \(group)")
            }
            let assigned = try Self.decodeAssignment(synced.assignment)
            let owned = Set(assignment)
            let revoked = assignment.filter { !assigned.contains($0) }
            let added = assigned.filter { !owned.contains($0) }.sorted()
            await revoke(revoked)
            try await adopt(added)
            rebalances += 1
            metrics.rebalances.increment()
            logger.info("joined group", metadata: [
                "group": "\(group)", "member": "\(memberID)", "generation": "\(generation)",
                "protocol": "\(protocolName ?? "")", "assigned": "\(assignment)",
            ])
            // Cooperative: partitions given up are assigned to their new owner in a second round.
            needsJoin = rebalanceProtocol == .cooperative && !revoked.isEmpty
            return
        }
        throw ClientError.closed
    }

    static func decodeAssignment(_ bytes: ByteBuffer) throws -> Set<TopicPartition> {
        var buffer = bytes
        guard buffer.readableBytes >= 2, let version = buffer.readInteger(endianness: .big, as: Int16.self) else { return [] }
        let decoded: ConsumerProtocolAssignment
        do {
            decoded = try ConsumerProtocolAssignment(from: &buffer, version: Swift.min(version, ConsumerProtocolAssignment.validVersions.upperBound))
        } catch {
            throw ClientError.protocolViolation("SyncGroup assignment: \(error)")
        }
        var result: Set<TopicPartition> = []
        for topic in decoded.assignedPartitions {
            for partition in topic.partitions { result.insert(TopicPartition(topic.topic, partition)) }
        }
        return result
    }

    /// The leader's part: decode every member's subscription, run the chosen assignor, encode.
    private func leaderAssign(_ joined: JoinGroupResponse) async throws -> [SyncGroupRequest.SyncGroupRequestAssignment] {
        guard let assignor = configuration.assignors.first(where: { $0.name == joined.protocolName }) else {
            throw ClientError.protocolViolation("the group chose assignor '\(joined.protocolName ?? "")' this member did not offer")
        }
        var members: [AssignorMember] = []
        for member in joined.members {
            var buffer = member.metadata
            guard let version = buffer.readInteger(endianness: .big, as: Int16.self) else {
                throw ClientError.protocolViolation("member \(member.memberId) sent empty subscription metadata")
            }
            let subscription: ConsumerProtocolSubscription
            do {
                subscription = try ConsumerProtocolSubscription(
                    from: &buffer, version: Swift.min(version, ConsumerProtocolSubscription.validVersions.upperBound))
            } catch {
                throw ClientError.protocolViolation("member \(member.memberId) subscription: \(error)")
            }
            var owned: [TopicPartition] = []
            for entry in subscription.ownedPartitions {
                for partition in entry.partitions { owned.append(TopicPartition(entry.topic, partition)) }
            }
            members.append(AssignorMember(memberID: member.memberId, instanceID: member.groupInstanceId,
                                          topics: subscription.topics, ownedPartitions: owned,
                                          generation: subscription.generationId))
        }
        let topics = Set(members.flatMap(\.topics))
        try await cluster.refreshMetadata(topics: topics)
        let metadata = try await cluster.currentMetadata()
        var counts: [String: Int32] = [:]
        for topic in topics {
            if let info = metadata.topics[topic], info.error == .noError { counts[topic] = Int32(info.partitions.count) }
        }
        let plan = assignor.assign(members: members, partitionCounts: counts)
        leaderPartitionCounts = counts
        return try members.map { member in
            var assignment = ConsumerProtocolAssignment()
            assignment.assignedPartitions = Self.grouped(plan[member.memberID] ?? []).map { topic, partitions in
                var entry = ConsumerProtocolAssignment.TopicPartition()
                entry.topic = topic
                entry.partitions = partitions
                return entry
            }
            var buffer = ByteBuffer()
            let version: Int16 = 1
            buffer.writeInteger(version, endianness: .big)
            try assignment.write(to: &buffer, version: version)
            var entry = SyncGroupRequest.SyncGroupRequestAssignment()
            entry.memberId = member.memberID
            entry.assignment = buffer
            return entry
        }
    }

    // MARK: Heartbeats

    private func startHeartbeats() {
        guard heartbeatTask == nil else { return }
        heartbeatTask = Task { [weak self] in
            while !Task.isCancelled {
                guard let self else { return }
                let interval = await self.heartbeatIntervalNow()
                try? await Task.sleep(for: .milliseconds(interval))
                if Task.isCancelled { return }
                await self.heartbeatOnce()
            }
        }
    }

    private func heartbeatIntervalNow() -> Int { heartbeatIntervalMs }

    /// One heartbeat; its outcome only sets flags that the next `poll` acts on.
    private func heartbeatOnce() async {
        guard !closed, subscription != nil, !joining, let group = configuration.groupID else { return }
        switch configuration.groupProtocol {
        case .consumer:
            do {
                try await heartbeatConsumerProtocol(applyingAssignment: false)
            } catch {
                logger.debug("heartbeat failed", metadata: ["error": "\(error)"])
            }
        case .classic:
            guard generation >= 0 else { return }
            var request = HeartbeatRequest()
            request.groupId = group
            request.generationId = generation
            request.memberId = memberID
            request.groupInstanceId = configuration.groupInstanceID
            let sentGeneration = generation
            do {
                let response = try await coordinatorRequest { connection in
                    try await connection.send(request)
                } errorCode: { $0.errorCode }
                guard sentGeneration == generation else { return }  // a rejoin happened meanwhile
                switch KafkaError(code: response.errorCode) {
                case .noError: break
                case .rebalanceInProgress: needsJoin = true
                case .unknownMemberId, .illegalGeneration, .fencedInstanceId:
                    logger.info("lost group membership", metadata: ["error": "\(KafkaError(code: response.errorCode).name)"])
                    if KafkaError(code: response.errorCode) == .unknownMemberId { memberID = "" }
                    generation = -1
                    partitionsLost = true
                    needsJoin = true
                case let error:
                    logger.warning("heartbeat error", metadata: ["error": "\(error.name)"])
                }
            } catch {
                logger.debug("heartbeat failed", metadata: ["error": "\(error)"])
            }
        }
    }

    // MARK: KIP-848

    /// The heartbeat interval currently in force (the broker's, under KIP-848).
    var heartbeatIntervalMs: Int {
        consumerHeartbeatIntervalMs ?? configuration.heartbeatIntervalMs
    }

    /// One ConsumerGroupHeartbeat. The broker's assignment is applied only from `poll`
    /// (`applyingAssignment`); from the background it is kept as pending.
    func heartbeatConsumerProtocol(applyingAssignment: Bool) async throws {
        guard let group = configuration.groupID else { return }
        if memberID.isEmpty { memberID = Self.randomMemberID() }
        let joiningNow = generation < 0
        var request = ConsumerGroupHeartbeatRequest()
        request.groupId = group
        request.memberId = memberID
        request.memberEpoch = joiningNow ? 0 : generation
        request.instanceId = configuration.groupInstanceID
        request.rebalanceTimeoutMs = configuration.maxPollIntervalMs
        request.subscribedTopicNames = subscription
        let metadata = try await cluster.currentMetadata()
        // A (re)joining member owns nothing, whatever poll has not cleaned up yet.
        request.topicPartitions = try Self.grouped(joiningNow ? [] : assignment).map { topic, partitions in
            guard let id = metadata.topics[topic]?.topicID else { throw ClientError.kafka(.unknownTopicOrPartition, topic) }
            var entry = ConsumerGroupHeartbeatRequest.TopicPartitions()
            entry.topicId = id
            entry.partitions = partitions
            return entry
        }
        let response = try await coordinatorRequest { connection in
            try await connection.send(request)
        } errorCode: { $0.errorCode }
        switch KafkaError(code: response.errorCode) {
        case .noError:
            break
        case .fencedMemberEpoch, .unknownMemberId:
            // An answer to an older epoch than ours (a newer heartbeat already moved us on) says
            // nothing about the current membership.
            guard joiningNow || generation == request.memberEpoch else { return }
            logger.info("lost group membership", metadata: ["error": "\(KafkaError(code: response.errorCode).name)"])
            generation = -1
            pendingAssignment = nil
            pendingTopicIDs = nil
            partitionsLost = true
            needsJoin = true
            return
        case .unsupportedVersion:
            throw ClientError.unsupportedAPI(.consumerGroupHeartbeat)
        case let error:
            throw ClientError.kafka(error, response.errorMessage ?? "ConsumerGroupHeartbeat \(group)")
        }
        if let id = response.memberId, !id.isEmpty { memberID = id }
        generation = response.memberEpoch
        if response.heartbeatIntervalMs > 0 { consumerHeartbeatIntervalMs = Int(response.heartbeatIntervalMs) }
        if let assignment = response.assignment {
            pendingTopicIDs = assignment.topicPartitions.map { ($0.topicId, $0.partitions) }
        }
        if let entries = pendingTopicIDs {
            // Topic ids are resolved through metadata; one not known yet keeps the assignment
            // pending (the broker does not send an unchanged assignment again).
            var target: Set<TopicPartition> = []
            var fresh = metadata
            var unresolved = false
            for (id, partitions) in entries {
                if fresh.topicName(for: id) == nil {
                    try await cluster.refreshMetadata()
                    fresh = try await cluster.currentMetadata()
                }
                guard let name = fresh.topicName(for: id) else {
                    unresolved = true
                    continue
                }
                for partition in partitions { target.insert(TopicPartition(name, partition)) }
            }
            if !unresolved {
                pendingTopicIDs = nil
                pendingAssignment = target
                needsJoin = true
            }
        }
        if applyingAssignment, let target = pendingAssignment {
            pendingAssignment = nil
            let revoked = assignment.filter { !target.contains($0) }
            let owned = Set(assignment)
            let added = target.filter { !owned.contains($0) }.sorted()
            await revoke(revoked)
            try await adopt(added)
            if !revoked.isEmpty || !added.isEmpty {
                rebalances += 1
                metrics.rebalances.increment()
                logger.info("assignment changed", metadata: ["group": "\(group)", "epoch": "\(generation)", "assigned": "\(assignment)"])
            }
            needsJoin = false
        } else if applyingAssignment {
            needsJoin = false
        }
    }

    static func randomMemberID() -> String {
        let hex = (0..<4).map { _ in String(UInt32.random(in: 0...UInt32.max), radix: 16) }
        return hex.map { String(repeating: "0", count: 8 - $0.count) + $0 }.joined()
    }

    // MARK: Leaving

    func leaveGroup(commit: Bool) async {
        heartbeatTask?.cancel()
        heartbeatTask = nil
        if commit && !assignment.isEmpty && generation >= 0 {
            do {
                try await self.commit()
            } catch {
                logger.warning("commit on close failed", metadata: ["error": "\(error)"])
            }
        }
        if !assignment.isEmpty { await listener?.partitionsRevoked(assignment, consumer: self) }
        defer {
            removeAssigned(assignment)
            generation = -1
        }
        guard let group = configuration.groupID, generation >= 0 || configuration.groupProtocol == .consumer else { return }
        do {
            switch configuration.groupProtocol {
            case .classic:
                // A static member stays in the group: its restart gets the same partitions back.
                guard configuration.groupInstanceID == nil, !memberID.isEmpty else { return }
                var request = LeaveGroupRequest()
                request.groupId = group
                let memberID = self.memberID
                _ = try await coordinatorRequest { connection in
                    let version = try connection.version(of: .leaveGroup)
                    var request = request
                    if version >= 3 {
                        var member = LeaveGroupRequest.MemberIdentity()
                        member.memberId = memberID
                        member.reason = "the consumer is closing"
                        request.members = [member]
                    } else {
                        request.memberId = memberID
                    }
                    return try await connection.send(request, version: version)
                } errorCode: { $0.errorCode }
            case .consumer:
                guard !memberID.isEmpty, generation >= 0 else { return }
                var request = ConsumerGroupHeartbeatRequest()
                request.groupId = group
                request.memberId = memberID
                request.memberEpoch = configuration.groupInstanceID == nil ? -1 : -2
                request.instanceId = configuration.groupInstanceID
                _ = try await coordinatorRequest { connection in try await connection.send(request) } errorCode: { $0.errorCode }
            }
        } catch {
            logger.debug("leaving the group failed", metadata: ["error": "\(error)"])
        }
    }
}
