import FjordMetadata
import FjordProtocol
import FjordStorage
import Foundation
import Logging
import NIOCore

/// KIP-848, the consumer group protocol: the broker computes assignments with a server-side
/// uniform assignor, and members converge to them through `ConsumerGroupHeartbeat`.
///
/// Every membership or subscription change bumps the group epoch and recomputes the target
/// assignment. A member is given the partitions of its target that it already holds plus the
/// ones nobody else still holds; a partition moves only after its previous owner's heartbeat
/// shows it was released, so two members never own a partition at once. A member's epoch
/// catches up with the group epoch once it holds nothing outside its target. Member epoch -1
/// leaves; members silent for the session timeout are removed. Offsets are committed with
/// OffsetCommit v9 carrying the member epoch.
///
/// Persistence: whenever a group's epochs, members, holdings or targets change, its whole state
/// is written to `__consumer_offsets` as one Fjord record (`FjordConsumerGroupKey`, key version
/// 32000, and `FjordConsumerGroupValue`), replayed at start. After a broker restart members
/// carry on with their epochs and assignments (their sessions restart from the load); a
/// heartbeat that only confirms the state writes nothing.
extension GroupCoordinator {
    final class ConsumerGroup {
        let id: String
        var epoch: Int32 = 0
        var members: [String: ConsumerMember] = [:]
        var target: [String: Set<TopicPartition>] = [:]
        var targetEpoch: Int32 = 0
        /// The state last written to `__consumer_offsets` (nil: never written).
        var persisted: FjordConsumerGroupValue? = nil

        init(id: String) { self.id = id }
    }

    struct ConsumerMember {
        var memberID: String
        var instanceID: String?
        var rackID: String?
        var clientID: String
        var clientHost: String
        var memberEpoch: Int32
        var subscribedTopics: [String]
        /// What the member may hold: the last assignment sent, or what it reported owning.
        var owned: Set<TopicPartition> = []
        var rebalanceTimeoutMs: Int32
        var lastHeartbeatMs: Int64
    }


    func consumerHeartbeat(_ request: ConsumerGroupHeartbeatRequest, version: Int16, clientID: String, clientHost: String) -> ConsumerGroupHeartbeatResponse {
        let existed = consumerGroups[request.groupId] != nil
        let response = handleConsumerHeartbeat(request, version: version, clientID: clientID, clientHost: clientHost)
        if let group = consumerGroups[request.groupId] {
            // A heartbeat that failed before anyone joined leaves no group behind.
            if !existed && group.members.isEmpty {
                consumerGroups[request.groupId] = nil
            } else {
                persistConsumerGroup(group)
            }
        }
        return response
    }

    private func handleConsumerHeartbeat(_ request: ConsumerGroupHeartbeatRequest, version: Int16, clientID: String,
                                         clientHost: String) -> ConsumerGroupHeartbeatResponse {
        let image = metadataImage()
        var response = ConsumerGroupHeartbeatResponse()
        response.heartbeatIntervalMs = settings.consumerHeartbeatIntervalMs
        func fail(_ error: KafkaError, _ message: String) -> ConsumerGroupHeartbeatResponse {
            var failed = ConsumerGroupHeartbeatResponse()
            failed.errorCode = error.code
            failed.errorMessage = message
            return failed
        }
        guard !request.groupId.isEmpty else { return fail(.invalidRequest, "GroupId can't be empty.") }
        if classicGroupHasMembers(request.groupId) {
            return fail(.groupIdNotFound, "Group \(request.groupId) is a classic group.")
        }
        let group = consumerGroups[request.groupId] ?? ConsumerGroup(id: request.groupId)
        consumerGroups[request.groupId] = group
        let now = clock()

        if request.memberEpoch == -1 || request.memberEpoch == -2 {
            guard group.members.removeValue(forKey: request.memberId) != nil else {
                return fail(.unknownMemberId, "Member \(request.memberId) is not in group \(request.groupId).")
            }
            logger.info("consumer-protocol member left", metadata: ["group": "\(group.id)", "member": "\(request.memberId)"])
            bumpConsumerGroup(group, image: image)
            response.memberId = request.memberId
            response.memberEpoch = request.memberEpoch
            return response
        }

        var memberID = request.memberId
        if request.memberEpoch == 0 {
            guard let topics = request.subscribedTopicNames, !topics.isEmpty || request.subscribedTopicRegex != nil else {
                return fail(.invalidRequest, "SubscribedTopicNames must be set in first request.")
            }
            if memberID.isEmpty {
                guard version == 0 else { return fail(.invalidRequest, "MemberId can't be empty.") }
                memberID = UUID().uuidString.lowercased()
            }
            guard group.members.count < settings.maxGroupSize || group.members[memberID] != nil else {
                return fail(.groupMaxSizeReached, "The group is full.")
            }
            group.members[memberID] = ConsumerMember(
                memberID: memberID, instanceID: request.instanceId, rackID: request.rackId, clientID: clientID,
                clientHost: clientHost, memberEpoch: 0, subscribedTopics: topics.sorted(),
                rebalanceTimeoutMs: request.rebalanceTimeoutMs, lastHeartbeatMs: now)
            logger.info("consumer-protocol member joined", metadata: ["group": "\(group.id)", "member": "\(memberID)"])
            bumpConsumerGroup(group, image: image)
        } else {
            guard var member = group.members[memberID] else {
                return fail(.unknownMemberId, "Member \(memberID) is not in group \(request.groupId).")
            }
            guard request.memberEpoch == member.memberEpoch else {
                return fail(.fencedMemberEpoch, "Member epoch \(request.memberEpoch) is not the current \(member.memberEpoch).")
            }
            member.lastHeartbeatMs = now
            if let owned = request.topicPartitions {
                var reported = Set<TopicPartition>()
                for entry in owned {
                    guard let topic = image.topic(id: entry.topicId) else { continue }
                    for partition in entry.partitions { reported.insert(TopicPartition(topic: topic.name, partition: partition)) }
                }
                member.owned = reported
            }
            var changed = false
            if let topics = request.subscribedTopicNames, topics.sorted() != member.subscribedTopics {
                member.subscribedTopics = topics.sorted()
                changed = true
            }
            group.members[memberID] = member
            if changed { bumpConsumerGroup(group, image: image) }
        }
        // Reconcile: keep what the target and the member share, add what nobody else holds.
        // Partitions the member must give up stay counted as its own until a heartbeat reports
        // them released, so nobody else gets them meanwhile.
        guard var member = group.members[memberID] else { return fail(.unknownMemberId, "Member left.") }
        let target = group.target[memberID] ?? []
        var heldByOthers = Set<TopicPartition>()
        for (id, other) in group.members where id != memberID { heldByOthers.formUnion(other.owned) }
        let pendingRevocation = member.owned.subtracting(target)
        let next = member.owned.intersection(target).union(target.subtracting(heldByOthers))
        member.owned = next.union(pendingRevocation)
        if pendingRevocation.isEmpty { member.memberEpoch = group.epoch }
        group.members[memberID] = member

        response.memberId = memberID
        response.memberEpoch = member.memberEpoch
        var assignment = ConsumerGroupHeartbeatResponse.Assignment()
        var byTopic: [String: [Int32]] = [:]
        for tp in next { byTopic[tp.topic, default: []].append(tp.partition) }
        for (name, partitions) in byTopic.sorted(by: { $0.key < $1.key }) {
            var entry = ConsumerGroupHeartbeatResponse.TopicPartitions()
            entry.topicId = image.topics[name]?.topicID ?? .zero
            entry.partitions = partitions.sorted()
            assignment.topicPartitions.append(entry)
        }
        response.assignment = assignment
        return response
    }


    /// Bumps the group epoch and recomputes the target with the uniform assignor: the partitions
    /// of each subscribed topic are spread evenly over the members subscribed to it, members
    /// ordered by id, so the result does not depend on join order.
    func bumpConsumerGroup(_ group: ConsumerGroup, image: MetadataImage) {
        group.epoch = group.epoch == Int32.max ? 1 : group.epoch + 1  // a replayed record could hold Int32.max
        completedRebalances += 1
        var target: [String: Set<TopicPartition>] = [:]
        for id in group.members.keys { target[id] = [] }
        let topics = Set(group.members.values.flatMap(\.subscribedTopics)).sorted()
        var load: [String: Int] = [:]
        for topic in topics {
            guard let metadata = image.topics[topic] else { continue }
            let subscribers = group.members.values.filter { $0.subscribedTopics.contains(topic) }.map(\.memberID).sorted()
            guard !subscribers.isEmpty else { continue }
            for partition in 0..<metadata.partitionCount {
                // The least-loaded subscriber (ties by id) takes the next partition.
                let chosen = subscribers.min { (load[$0] ?? 0, $0) < (load[$1] ?? 0, $1) }!
                target[chosen, default: []].insert(TopicPartition(topic: topic, partition: partition))
                load[chosen, default: 0] += 1
            }
        }
        group.target = target
        group.targetEpoch = group.epoch
    }

    func expireConsumerMembers(now: Int64) {
        let image = metadataImage()
        for group in consumerGroups.values {
            let expired = group.members.values.filter { now - $0.lastHeartbeatMs > Int64(settings.consumerSessionTimeoutMs) }.map(\.memberID)
            guard !expired.isEmpty else { continue }
            for id in expired {
                group.members[id] = nil
                logger.info("consumer-protocol member session expired", metadata: ["group": "\(group.id)", "member": "\(id)"])
            }
            bumpConsumerGroup(group, image: image)
            persistConsumerGroup(group)
        }
    }

    // MARK: Persistence

    /// Forgets an empty consumer-protocol group (a classic group takes its id over, or its
    /// offsets expired), with a tombstone for its record.
    func removeEmptyConsumerGroup(_ id: String) {
        guard let group = consumerGroups[id], group.members.isEmpty else { return }
        do {
            try append([(CoordinatorRecordSerde.consumerGroupKey(group: id), nil)], group: id)
            consumerGroups[id] = nil
        } catch {
            logger.error("cannot remove consumer group", metadata: ["group": "\(id)", "error": "\(error)"])
        }
    }

    /// Writes the group's state if it differs from what was last written.
    func persistConsumerGroup(_ group: ConsumerGroup) {
        let state = FjordConsumerGroupRecord.value(of: group)
        guard state != group.persisted else { return }
        do {
            try append([(CoordinatorRecordSerde.consumerGroupKey(group: group.id),
                         CoordinatorRecordSerde.consumerGroupValue(state, group: group.id))], group: group.id)
            group.persisted = state
        } catch {
            logger.error("cannot persist consumer group", metadata: ["group": "\(group.id)", "error": "\(error)"])
        }
    }

    /// Replays one consumer-group record: a value replaces the group's state, a tombstone
    /// deletes the group.
    func replayConsumerGroup(_ groupID: String, _ value: FjordConsumerGroupValue?) {
        guard let v = value else {
            consumerGroups[groupID] = nil
            return
        }
        let group = ConsumerGroup(id: groupID)
        group.epoch = v.groupEpoch
        group.targetEpoch = v.targetEpoch
        let now = clock()
        func partitions(_ entries: [FjordConsumerGroupValue.TopicPartitions]) -> Set<TopicPartition> {
            Set(entries.flatMap { entry in entry.partitions.map { TopicPartition(topic: entry.topic, partition: $0) } })
        }
        for m in v.members {
            var member = ConsumerMember(memberID: m.memberId, instanceID: m.instanceId, rackID: m.rackId, clientID: m.clientId,
                                        clientHost: m.clientHost, memberEpoch: m.memberEpoch, subscribedTopics: m.subscribedTopicNames,
                                        rebalanceTimeoutMs: m.rebalanceTimeoutMs, lastHeartbeatMs: now)
            member.owned = partitions(m.owned)
            group.members[m.memberId] = member
            group.target[m.memberId] = partitions(m.target)
        }
        group.persisted = v
        consumerGroups[groupID] = group
    }

    /// Kafka's consumer-group state names: Empty, Reconciling (some member has not reached the
    /// group epoch yet) or Stable.
    func consumerGroupState(_ group: ConsumerGroup) -> String {
        guard !group.members.isEmpty else { return "Empty" }
        return group.members.values.allSatisfy { $0.memberEpoch == group.epoch } ? "Stable" : "Reconciling"
    }

    /// Validates an OffsetCommit v9+ from a consumer-protocol member.
    func validateConsumerCommit(groupID: String, memberID: String, memberEpoch: Int32) -> KafkaError? {
        // An empty consumer-protocol group leaves commits to the classic rules (e.g. a classic
        // group taking the id over, or an admin commit).
        guard let group = consumerGroups[groupID], !group.members.isEmpty else { return nil }
        guard let member = group.members[memberID] else { return .unknownMemberId }
        return memberEpoch == member.memberEpoch ? .noError : .staleMemberEpoch
    }

    func describeConsumerGroup(_ id: String) -> ConsumerGroupDescribeResponse.DescribedGroup {
        let image = metadataImage()
        var described = ConsumerGroupDescribeResponse.DescribedGroup()
        described.groupId = id
        described.authorizedOperations = Int32.min
        guard let group = consumerGroups[id] else {
            described.errorCode = KafkaError.groupIdNotFound.code
            described.errorMessage = "Group \(id) not found."
            return described
        }
        func assignment(_ partitions: Set<TopicPartition>) -> ConsumerGroupDescribeResponse.Assignment {
            var result = ConsumerGroupDescribeResponse.Assignment()
            var byTopic: [String: [Int32]] = [:]
            for tp in partitions { byTopic[tp.topic, default: []].append(tp.partition) }
            for (name, partitions) in byTopic.sorted(by: { $0.key < $1.key }) {
                var entry = ConsumerGroupDescribeResponse.TopicPartitions()
                entry.topicName = name
                entry.topicId = image.topics[name]?.topicID ?? .zero
                entry.partitions = partitions.sorted()
                result.topicPartitions.append(entry)
            }
            return result
        }
        described.groupState = consumerGroupState(group)
        described.groupEpoch = group.epoch
        described.assignmentEpoch = group.targetEpoch
        described.assignorName = "uniform"
        described.members = group.members.values.sorted { $0.memberID < $1.memberID }.map { member in
            var entry = ConsumerGroupDescribeResponse.Member()
            entry.memberId = member.memberID
            entry.instanceId = member.instanceID
            entry.rackId = member.rackID
            entry.memberEpoch = member.memberEpoch
            entry.clientId = member.clientID
            entry.clientHost = member.clientHost
            entry.subscribedTopicNames = member.subscribedTopics
            entry.assignment = assignment(member.owned)
            entry.targetAssignment = assignment(group.target[member.memberID] ?? [])
            return entry
        }
        return described
    }
}
