import FjordMetadata
import FjordProtocol
import FjordStorage
import Logging
import NIOCore

extension KafkaAPIs {
    func handleFindCoordinator(_ request: FindCoordinatorRequest, version: Int16, listener: String,
                               access: Access = .unrestricted) async -> FindCoordinatorResponse {
        var response = FindCoordinatorResponse()
        let advertised = config.registration.on(listener: listener)
        let keys = version >= 4 ? request.coordinatorKeys : [request.key]
        if clustered && request.keyType == 0 && metadata.image.topics[GroupCoordinator.topic] == nil {
            await createOffsetsTopic()
        }
        let image = metadata.image
        var coordinators: [FindCoordinatorResponse.Coordinator] = []
        for key in keys {
            var coordinator = FindCoordinatorResponse.Coordinator()
            coordinator.key = key
            if request.keyType == 0 && !access.allows(.describe, group: key) {
                coordinator.errorCode = KafkaError.groupAuthorizationFailed.code
                coordinator.nodeId = -1
                coordinator.host = ""
                coordinator.port = -1
            } else if request.keyType == 1 && !access.allows(.describe, .transactionalID, key) {
                coordinator.errorCode = KafkaError.transactionalIdAuthorizationFailed.code
                coordinator.nodeId = -1
                coordinator.host = ""
                coordinator.port = -1
            } else if request.keyType != 0 {
                coordinator.errorCode = KafkaError.coordinatorNotAvailable.code
                coordinator.errorMessage = request.keyType == 1 ? "transaction coordinators are not supported yet" : "unknown coordinator key type \(request.keyType)"
                coordinator.nodeId = -1
                coordinator.host = ""
                coordinator.port = -1
            } else if key.isEmpty {
                coordinator.errorCode = KafkaError.invalidGroupId.code
                coordinator.nodeId = -1
                coordinator.port = -1
            } else if clustered {
                // The group's coordinator is the leader of its __consumer_offsets partition.
                let index = GroupCoordinator.partition(for: key, partitions: image.topics[GroupCoordinator.topic]?.partitionCount ?? 1)
                if let registration = image.partition(GroupCoordinator.topic, index),
                    let leader = image.broker(registration.leader)?.on(listener: listener) {
                    coordinator.nodeId = leader.nodeID
                    coordinator.host = leader.host
                    coordinator.port = leader.port
                } else {
                    coordinator.errorCode = KafkaError.coordinatorNotAvailable.code
                    coordinator.errorMessage = "the group's __consumer_offsets partition has no leader yet"
                    coordinator.nodeId = -1
                    coordinator.host = ""
                    coordinator.port = -1
                }
            } else {
                coordinator.nodeId = config.nodeID
                coordinator.host = advertised.host
                coordinator.port = advertised.port
            }
            coordinators.append(coordinator)
        }
        if version >= 4 {
            response.coordinators = coordinators
        } else if let first = coordinators.first {
            response.errorCode = first.errorCode
            response.errorMessage = first.errorMessage
            response.nodeId = first.nodeId
            response.host = first.host
            response.port = first.port
        }
        return response
    }

    /// Creates `__consumer_offsets` in a cluster on the first FindCoordinator, as Kafka does,
    /// with `offsets.topic.replication.factor` replicas (the controller refuses while fewer
    /// brokers are alive; FindCoordinator answers COORDINATOR_NOT_AVAILABLE until it exists).
    func createOffsetsTopic() async {
        let config = self.config
        do {
            if let created = try await metadata.autoCreateTopic(
                name: GroupCoordinator.topic, partitions: config.offsetsTopicPartitions,
                replicationFactor: config.offsetsTopicReplicationFactor,
                configs: ["cleanup.policy": "compact", "segment.bytes": "104857600"])
            {
                try createLogs(for: created)
            }
        } catch {
            logger.warning("cannot create \(GroupCoordinator.topic) yet", metadata: ["error": "\(error)"])
        }
    }

    /// In a cluster only the leader of the group's `__consumer_offsets` partition coordinates
    /// the group; a group request reaching another broker gets NOT_COORDINATOR (the client asks
    /// FindCoordinator again), as Kafka answers.
    func notCoordinator(_ group: String) -> Bool {
        guard clustered else { return false }
        return coordinatorPartition(group)?.isLeader != true
    }

    /// The hosted `__consumer_offsets` partition that holds `group`'s records, if any.
    func coordinatorPartition(_ group: String) -> Partition? {
        let count = metadata.image.topics[GroupCoordinator.topic]?.partitionCount ?? config.offsetsTopicPartitions
        return replicaManager.partition(TopicPartition(topic: GroupCoordinator.topic, partition: GroupCoordinator.partition(for: group, partitions: count)))
    }

    /// Waits until what the coordinator wrote for `group` so far is replicated to its
    /// partition's ISR (Kafka's coordinator appends with acks=all), so a commit or assignment
    /// is never acknowledged and then lost with its coordinator. The error to answer instead:
    /// NOT_COORDINATOR when leadership moved, COORDINATOR_NOT_AVAILABLE when the ISR did not
    /// replicate within `offsets.commit.timeout.ms`, as Kafka maps them.
    func awaitCoordinatorReplication(_ group: String) async -> KafkaError {
        await RequestQuotaScope.parked { await awaitCoordinatorReplicationUnmeasured(group) }
    }

    private func awaitCoordinatorReplicationUnmeasured(_ group: String) async -> KafkaError {
        guard clustered, let partition = coordinatorPartition(group), !partition.isrIsLeaderOnly else { return .noError }
        let error = await replicaManager.awaitReplication(partition, through: partition.log.logEndOffset, minInSync: 1,
                                                          timeoutMs: config.offsetsCommitTimeoutMs, clock: clock)
        switch error {
        case .noError: return .noError
        case .notLeaderOrFollower: return .notCoordinator
        default: return .coordinatorNotAvailable
        }
    }

    func handleJoinGroup(_ request: JoinGroupRequest, version: Int16, frame: RequestFrame, clientHost: String) async -> JoinGroupResponse {
        if notCoordinator(request.groupId) {
            var refused = JoinGroupResponse()
            refused.errorCode = KafkaError.notCoordinator.code
            refused.generationId = -1
            refused.memberId = request.memberId
            if version < 7 { refused.protocolName = "" }
            return refused
        }
        var response = await RequestQuotaScope.parked {
            await groupCoordinator.join(request, version: version, clientID: frame.header.clientId ?? "", clientHost: clientHost)
        }
        if version < 6 {
            // Fields that older versions cannot carry keep their defaults.
            response.protocolType = nil
            response.skipAssignment = false
            for index in response.members.indices { response.members[index].groupInstanceId = nil }
        }
        if version < 7 { response.protocolType = nil }
        if version < 9 { response.skipAssignment = false }
        if version < 7 && response.protocolName == nil { response.protocolName = "" }
        return response
    }

    func handleSyncGroup(_ request: SyncGroupRequest, version: Int16) async -> SyncGroupResponse {
        if notCoordinator(request.groupId) {
            var refused = SyncGroupResponse()
            refused.errorCode = KafkaError.notCoordinator.code
            if version < 5 { (refused.protocolType, refused.protocolName) = (nil, nil) }
            return refused
        }
        var response = await RequestQuotaScope.parked { await groupCoordinator.sync(request) }
        if response.errorCode == 0, case let error = await awaitCoordinatorReplication(request.groupId), error != .noError {
            response.errorCode = error.code
            response.assignment = ByteBuffer()
        }
        if version < 5 {
            response.protocolType = nil
            response.protocolName = nil
        }
        return response
    }

    func handleHeartbeat(_ request: HeartbeatRequest) async -> HeartbeatResponse {
        var response = HeartbeatResponse()
        if notCoordinator(request.groupId) {
            response.errorCode = KafkaError.notCoordinator.code
            return response
        }
        response.errorCode = await groupCoordinator.heartbeat(request).code
        return response
    }

    func handleLeaveGroup(_ request: LeaveGroupRequest, version: Int16) async -> LeaveGroupResponse {
        var response = LeaveGroupResponse()
        if notCoordinator(request.groupId) {
            response.errorCode = KafkaError.notCoordinator.code
            return response
        }
        let members: [(memberID: String, instanceID: String?)] = version >= 3
            ? request.members.map { ($0.memberId, $0.groupInstanceId) }
            : [(request.memberId, nil)]
        let (error, results) = await groupCoordinator.leave(groupID: request.groupId, members: members)
        if version >= 3 {
            response.members = zip(request.members, results).map { entry, result in
                var member = LeaveGroupResponse.MemberResponse()
                member.memberId = entry.memberId
                member.groupInstanceId = entry.groupInstanceId
                member.errorCode = result.code
                return member
            }
            response.errorCode = error.code
        } else {
            response.errorCode = results.first.map { $0 == .noError ? error.code : $0.code } ?? error.code
        }
        return response
    }

    /// OffsetCommit: READ on the group (else every partition is GROUP_AUTHORIZATION_FAILED) and
    /// on each topic (else its partitions are TOPIC_AUTHORIZATION_FAILED and not committed).
    func handleOffsetCommit(_ request: OffsetCommitRequest, version: Int16, access: Access = .unrestricted) async -> OffsetCommitResponse {
        var response = OffsetCommitResponse()
        let now = clock()
        let groupAllowed = access.allows(.read, group: request.groupId)
        var offsets: [(TopicPartition, GroupCoordinator.CommittedOffset)] = []
        // v2–v4's retention_time_ms sets when these offsets expire; -1 leaves them to
        // offsets.retention.minutes (any other value counts, as in Kafka: a negative one expires
        // them at the next pass).
        let expire = (2...4).contains(version) && request.retentionTimeMs != -1
            ? { let (sum, overflow) = now.addingReportingOverflow(request.retentionTimeMs)
                return overflow ? (request.retentionTimeMs > 0 ? Int64.max : Int64.min) : sum }() : nil
        for topic in request.topics where groupAllowed && access.allows(.read, topic: topic.name) {
            for partition in topic.partitions {
                offsets.append((TopicPartition(topic: topic.name, partition: partition.partitionIndex),
                                GroupCoordinator.CommittedOffset(offset: partition.committedOffset, leaderEpoch: partition.committedLeaderEpoch,
                                                                 metadata: partition.committedMetadata ?? "", commitTimestamp: now,
                                                                 expireTimestamp: expire)))
            }
        }
        let (groupError, results) = !groupAllowed ? (KafkaError.groupAuthorizationFailed, [])
            : offsets.isEmpty ? (nil, [])
            : notCoordinator(request.groupId)
            ? (KafkaError.notCoordinator, [])
            : await groupCoordinator.commit(
                groupID: request.groupId, generation: request.generationIdOrMemberEpoch, memberID: request.memberId,
                instanceID: request.groupInstanceId, offsets: offsets)
        let replicated = groupError == nil && results.contains(.noError) ? await awaitCoordinatorReplication(request.groupId) : .noError
        var index = 0
        for topic in request.topics {
            var topicResponse = OffsetCommitResponse.OffsetCommitResponseTopic()
            topicResponse.name = topic.name
            let topicAllowed = groupError != nil || access.allows(.read, topic: topic.name)
            for partition in topic.partitions {
                var result = OffsetCommitResponse.OffsetCommitResponsePartition()
                result.partitionIndex = partition.partitionIndex
                if topicAllowed {
                    let error = groupError ?? results[index]
                    result.errorCode = (error == .noError ? replicated : error).code
                    index += groupError == nil ? 1 : 0
                } else {
                    result.errorCode = KafkaError.topicAuthorizationFailed.code
                }
                topicResponse.partitions.append(result)
            }
            response.topics.append(topicResponse)
        }
        return response
    }

    /// OffsetFetch: DESCRIBE on the group (else GROUP_AUTHORIZATION_FAILED); partitions of
    /// topics the principal may not DESCRIBE are TOPIC_AUTHORIZATION_FAILED when named, and left
    /// out of a listing of all.
    func handleOffsetFetch(_ request: OffsetFetchRequest, version: Int16, access: Access = .unrestricted) async -> OffsetFetchResponse {
        var response = OffsetFetchResponse()
        if version >= 8 {
            for group in request.groups {
                var result = OffsetFetchResponse.OffsetFetchResponseGroup()
                result.groupId = group.groupId
                if !access.allows(.describe, group: group.groupId) {
                    result.errorCode = KafkaError.groupAuthorizationFailed.code
                    response.groups.append(result)
                    continue
                }
                if notCoordinator(group.groupId) {
                    result.errorCode = KafkaError.notCoordinator.code
                    response.groups.append(result)
                    continue
                }
                let wanted = group.topics.map { topics in topics.flatMap { t in t.partitionIndexes.map { TopicPartition(topic: t.name, partition: $0) } } }
                let offsets = await groupCoordinator.committed(groupID: group.groupId, partitions: wanted)
                var byTopic: [(String, [OffsetFetchResponse.OffsetFetchResponsePartitions])] = []
                for (tp, committed) in offsets {
                    var partition = OffsetFetchResponse.OffsetFetchResponsePartitions()
                    partition.partitionIndex = tp.partition
                    partition.committedOffset = committed?.offset ?? -1
                    partition.committedLeaderEpoch = committed?.leaderEpoch ?? -1
                    partition.metadata = committed?.metadata ?? ""
                    if !access.allows(.describe, topic: tp.topic) {
                        if wanted == nil { continue }
                        (partition.committedOffset, partition.committedLeaderEpoch, partition.metadata) = (-1, -1, "")
                        partition.errorCode = KafkaError.topicAuthorizationFailed.code
                    }
                    if let last = byTopic.last, last.0 == tp.topic { byTopic[byTopic.count - 1].1.append(partition) } else { byTopic.append((tp.topic, [partition])) }
                }
                result.topics = byTopic.map { name, partitions in
                    var topic = OffsetFetchResponse.OffsetFetchResponseTopics()
                    topic.name = name
                    topic.partitions = partitions
                    return topic
                }
                response.groups.append(result)
            }
            return response
        }
        if !access.allows(.describe, group: request.groupId) {
            response.errorCode = KafkaError.groupAuthorizationFailed.code
            return response
        }
        if notCoordinator(request.groupId) {
            response.errorCode = KafkaError.notCoordinator.code
            return response
        }
        let wanted = request.topics.map { topics in topics.flatMap { t in t.partitionIndexes.map { TopicPartition(topic: t.name, partition: $0) } } }
        let offsets = await groupCoordinator.committed(groupID: request.groupId, partitions: wanted)
        var byTopic: [(String, [OffsetFetchResponse.OffsetFetchResponsePartition])] = []
        for (tp, committed) in offsets {
            var partition = OffsetFetchResponse.OffsetFetchResponsePartition()
            partition.partitionIndex = tp.partition
            partition.committedOffset = committed?.offset ?? -1
            partition.committedLeaderEpoch = version >= 5 ? (committed?.leaderEpoch ?? -1) : -1
            partition.metadata = committed?.metadata ?? ""
            if !access.allows(.describe, topic: tp.topic) {
                if wanted == nil { continue }
                (partition.committedOffset, partition.committedLeaderEpoch, partition.metadata) = (-1, -1, "")
                partition.errorCode = KafkaError.topicAuthorizationFailed.code
            }
            if let last = byTopic.last, last.0 == tp.topic { byTopic[byTopic.count - 1].1.append(partition) } else { byTopic.append((tp.topic, [partition])) }
        }
        response.topics = byTopic.map { name, partitions in
            var topic = OffsetFetchResponse.OffsetFetchResponseTopic()
            topic.name = name
            topic.partitions = partitions
            return topic
        }
        return response
    }

    /// ListGroups: every group with DESCRIBE on the cluster, else those the principal may DESCRIBE.
    func handleListGroups(_ request: ListGroupsRequest, access: Access = .unrestricted) async -> ListGroupsResponse {
        var response = ListGroupsResponse()
        let all = access.allowsCluster(.describe)
        let states = Set(request.statesFilter.map { $0.lowercased() })
        let types = Set(request.typesFilter.map { $0.lowercased() })
        for group in await groupCoordinator.list() {
            if !states.isEmpty && !states.contains(group.state.lowercased()) { continue }
            if !types.isEmpty && !types.contains(group.type) { continue }
            if !all && !access.allows(.describe, group: group.id) { continue }
            var listed = ListGroupsResponse.ListedGroup()
            listed.groupId = group.id
            listed.protocolType = group.protocolType
            listed.groupState = group.state
            listed.groupType = group.type
            response.groups.append(listed)
        }
        return response
    }

    func handleDescribeGroups(_ request: DescribeGroupsRequest, access: Access = .unrestricted) async -> DescribeGroupsResponse {
        var response = DescribeGroupsResponse()
        for id in request.groups {
            var described = DescribeGroupsResponse.DescribedGroup()
            described.groupId = id
            described.authorizedOperations = Int32.min
            if request.includeAuthorizedOperations {
                described.authorizedOperations = access.authorizedOperations(.group, id, among: Self.groupOperations)
            }
            if !access.allows(.describe, group: id) {
                described.errorCode = KafkaError.groupAuthorizationFailed.code
                described.groupState = ""
            } else if await groupCoordinator.isConsumerProtocolGroup(id) {
                // As Kafka: DescribeGroups is for classic groups; ConsumerGroupDescribe for these.
                described.errorCode = KafkaError.groupIdNotFound.code
                described.groupState = "Dead"
            } else if let group = await groupCoordinator.describe(id) {
                described.groupState = group.state
                described.protocolType = group.protocolType
                described.protocolData = group.protocolName
                described.members = group.members.map { member in
                    var entry = DescribeGroupsResponse.DescribedGroupMember()
                    entry.memberId = member.memberID
                    entry.groupInstanceId = member.instanceID
                    entry.clientId = member.clientID
                    entry.clientHost = member.clientHost
                    entry.memberMetadata = member.metadata(for: group.protocolName)
                    entry.memberAssignment = member.assignment
                    return entry
                }
            } else {
                described.groupState = "Dead"
            }
            response.groups.append(described)
        }
        return response
    }

    func handleDeleteGroups(_ request: DeleteGroupsRequest, access: Access = .unrestricted) async -> DeleteGroupsResponse {
        var response = DeleteGroupsResponse()
        for id in request.groupsNames {
            var result = DeleteGroupsResponse.DeletableGroupResult()
            result.groupId = id
            result.errorCode = access.allows(.delete, group: id) ? await groupCoordinator.delete(id).code : KafkaError.groupAuthorizationFailed.code
            response.results.append(result)
        }
        return response
    }

    /// OffsetDelete: DELETE on the group (else GROUP_AUTHORIZATION_FAILED), READ on each topic
    /// (else its partitions are TOPIC_AUTHORIZATION_FAILED and kept).
    func handleOffsetDelete(_ request: OffsetDeleteRequest, access: Access = .unrestricted) async -> OffsetDeleteResponse {
        var response = OffsetDeleteResponse()
        guard access.allows(.delete, group: request.groupId) else {
            response.errorCode = KafkaError.groupAuthorizationFailed.code
            return response
        }
        let topics = request.topics.filter { access.allows(.read, topic: $0.name) }
        let partitions = topics.flatMap { t in t.partitions.map { TopicPartition(topic: t.name, partition: $0.partitionIndex) } }
        let (error, results) = await groupCoordinator.deleteOffsets(groupID: request.groupId, partitions: partitions)
        response.errorCode = error.code
        var index = 0
        for topic in request.topics {
            var topicResponse = OffsetDeleteResponse.OffsetDeleteResponseTopic()
            topicResponse.name = topic.name
            let allowed = access.allows(.read, topic: topic.name)
            for partition in topic.partitions {
                var result = OffsetDeleteResponse.OffsetDeleteResponsePartition()
                result.partitionIndex = partition.partitionIndex
                if allowed {
                    result.errorCode = index < results.count ? results[index].code : error.code
                    index += 1
                } else {
                    result.errorCode = KafkaError.topicAuthorizationFailed.code
                }
                topicResponse.partitions.append(result)
            }
            response.topics.append(topicResponse)
        }
        return response
    }
}
