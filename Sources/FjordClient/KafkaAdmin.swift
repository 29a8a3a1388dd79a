public import FjordProtocol
public import NIOCore
public import NIOPosix

/// A topic as the admin client reports it.
public struct TopicDescription: Sendable, Equatable {
    public var name: String
    public var topicID: KafkaUUID
    public var isInternal: Bool
    public var partitions: [PartitionDescription]
}

/// One partition's leader and replicas.
public struct PartitionDescription: Sendable, Equatable {
    public var partition: Int32
    public var leader: Int32
    public var leaderEpoch: LeaderEpoch
    public var replicas: [Int32]
    public var isr: [Int32]
}

/// Administrative operations (Kafka's `Admin`): topics, configs, offsets and groups.
///
/// Requests go where Kafka's admin client sends them: topic creation, deletion and new
/// partitions to the controller; ListOffsets and DeleteRecords to each partition's leader;
/// group requests to the group's coordinator; the rest to any broker. Every Kafka error
/// becomes `ClientError.kafka` with the broker's message.
public final class KafkaAdmin: Sendable {
    public let cluster: KafkaCluster

    public init(cluster: KafkaCluster) {
        self.cluster = cluster
    }

    /// Connects to `bootstrap` (`host:port[,host:port…]`).
    public static func connect(bootstrap: String, clientID: String = "fjord-admin",
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> KafkaAdmin {
        try await connect(ClientConfiguration(bootstrap: bootstrap, clientID: clientID), group: group)
    }

    public static func connect(_ configuration: ClientConfiguration,
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> KafkaAdmin {
        var configuration = configuration
        configuration.allowAutoCreateTopics = false
        return KafkaAdmin(cluster: try await KafkaCluster.connect(configuration, group: group))
    }

    public func close() async {
        await cluster.close()
    }

    /// A connection to any broker (for tests and tools that send raw requests).
    public func anyConnection() async throws -> BrokerConnection {
        try await cluster.anyConnection()
    }

    /// The controller (from metadata), else any broker.
    func controllerConnection() async throws -> BrokerConnection {
        let metadata = try await cluster.currentMetadata()
        if metadata.controllerID >= 0, metadata.brokers[metadata.controllerID] != nil {
            return try await cluster.connection(to: metadata.controllerID)
        }
        return try await cluster.anyConnection()
    }

    /// Groups partitions of `topic` by their leader.
    func byLeader(_ topic: String, _ partitions: [Int32]) async throws -> [Int32: [Int32]] {
        var result: [Int32: [Int32]] = [:]
        for partition in partitions {
            let leader = try await cluster.leader(topic: topic, partition: partition).node
            result[leader, default: []].append(partition)
        }
        return result
    }

    // MARK: Topics

    /// Every topic (internal ones too, marked `isInternal`).
    public func describeTopics(_ names: [String]? = nil) async throws -> [TopicDescription] {
        let connection = try await cluster.anyConnection()
        var request = MetadataRequest()
        request.topics = names.map { $0.map { name in
            var topic = MetadataRequest.MetadataRequestTopic()
            topic.name = name
            return topic
        } }
        request.allowAutoTopicCreation = false
        let response = try await connection.send(request)
        return try response.topics.map { topic in
            if topic.errorCode != 0 { throw ClientError.kafka(KafkaError(code: topic.errorCode), topic.name) }
            return TopicDescription(
                name: topic.name ?? "", topicID: topic.topicId, isInternal: topic.isInternal,
                partitions: topic.partitions.sorted { $0.partitionIndex < $1.partitionIndex }.map {
                    PartitionDescription(partition: $0.partitionIndex, leader: $0.leaderId, leaderEpoch: LeaderEpoch($0.leaderEpoch),
                                         replicas: $0.replicaNodes, isr: $0.isrNodes)
                })
        }
    }

    public func listTopics(includeInternal: Bool = false) async throws -> [String] {
        try await describeTopics().filter { includeInternal || !$0.isInternal }.map(\.name).sorted()
    }

    /// Creates a topic; -1 means the broker's default (`num.partitions`, `default.replication.factor`).
    @discardableResult
    public func createTopic(_ name: String, partitions: Int32 = -1, replicationFactor: Int16 = -1,
                            configs: [String: String] = [:], validateOnly: Bool = false) async throws -> KafkaUUID {
        let connection = try await controllerConnection()
        var request = CreateTopicsRequest()
        var topic = CreateTopicsRequest.CreatableTopic()
        topic.name = name
        topic.numPartitions = partitions
        topic.replicationFactor = replicationFactor
        topic.configs = configs.sorted { $0.key < $1.key }.map { key, value in
            var config = CreateTopicsRequest.CreatableTopicConfig()
            config.name = key
            config.value = value
            return config
        }
        request.topics = [topic]
        request.timeoutMs = 30_000
        request.validateOnly = validateOnly
        let response = try await connection.send(request)
        guard let result = response.topics.first else { throw ClientError.protocolViolation("empty CreateTopics response") }
        if result.errorCode != 0 { throw ClientError.kafka(KafkaError(code: result.errorCode), result.errorMessage) }
        return result.topicId
    }

    public func deleteTopics(_ names: [String]) async throws {
        let connection = try await controllerConnection()
        var request = DeleteTopicsRequest()
        let version = try connection.version(of: .deleteTopics)
        if version >= 6 {
            request.topics = names.map { name in
                var state = DeleteTopicsRequest.DeleteTopicState()
                state.name = name
                return state
            }
        } else {
            request.topicNames = names
        }
        request.timeoutMs = 30_000
        let response = try await connection.send(request, version: version)
        for result in response.responses where result.errorCode != 0 {
            throw ClientError.kafka(KafkaError(code: result.errorCode), result.errorMessage ?? result.name)
        }
    }

    public func createPartitions(_ topic: String, totalCount: Int32) async throws {
        let connection = try await controllerConnection()
        var request = CreatePartitionsRequest()
        var entry = CreatePartitionsRequest.CreatePartitionsTopic()
        entry.name = topic
        entry.count = totalCount
        entry.assignments = nil  // let the broker place the new partitions
        request.topics = [entry]
        request.timeoutMs = 30_000
        let response = try await connection.send(request)
        for result in response.results where result.errorCode != 0 {
            throw ClientError.kafka(KafkaError(code: result.errorCode), result.errorMessage)
        }
    }

    // MARK: Configs

    /// A topic's effective configs (name → value).
    public func describeTopicConfigs(_ topic: String) async throws -> [String: String] {
        let connection = try await cluster.anyConnection()
        var request = DescribeConfigsRequest()
        var resource = DescribeConfigsRequest.DescribeConfigsResource()
        resource.resourceType = 2
        resource.resourceName = topic
        resource.configurationKeys = nil  // all keys (an empty list would mean none)
        request.resources = [resource]
        let response = try await connection.send(request)
        guard let result = response.results.first else { throw ClientError.protocolViolation("empty DescribeConfigs response") }
        if result.errorCode != 0 { throw ClientError.kafka(KafkaError(code: result.errorCode), result.errorMessage) }
        var configs: [String: String] = [:]
        for entry in result.configs { configs[entry.name] = entry.value }
        return configs
    }

    /// Sets (non-nil) or removes (nil) topic config overrides, leaving the others.
    public func alterTopicConfigs(_ topic: String, _ changes: [String: String?]) async throws {
        let connection = try await cluster.anyConnection()
        var request = IncrementalAlterConfigsRequest()
        var resource = IncrementalAlterConfigsRequest.AlterConfigsResource()
        resource.resourceType = 2
        resource.resourceName = topic
        resource.configs = changes.sorted { $0.key < $1.key }.map { key, value in
            var entry = IncrementalAlterConfigsRequest.AlterableConfig()
            entry.name = key
            entry.value = value
            entry.configOperation = value == nil ? 1 : 0
            return entry
        }
        request.resources = [resource]
        let response = try await connection.send(request)
        for result in response.responses where result.errorCode != 0 {
            throw ClientError.kafka(KafkaError(code: result.errorCode), result.errorMessage)
        }
    }

    // MARK: Offsets

    /// Kafka's special ListOffsets timestamps.
    public enum OffsetSpec: Sendable {
        case earliest
        case latest
        case maxTimestamp
        case timestamp(Int64)

        var value: Int64 {
            switch self {
            case .earliest: return -2
            case .latest: return -1
            case .maxTimestamp: return -3
            case .timestamp(let t): return t
            }
        }
    }

    /// The offset for `spec` in each partition of `topic` (partition → offset; -1 when none),
    /// asked of each partition's leader.
    public func listOffsets(_ topic: String, partitions: [Int32], spec: OffsetSpec) async throws -> [Int32: Offset] {
        var result: [Int32: Offset] = [:]
        for (leader, indexes) in try await byLeader(topic, partitions) {
            var request = ListOffsetsRequest()
            request.replicaId = -1
            var entry = ListOffsetsRequest.ListOffsetsTopic()
            entry.name = topic
            entry.partitions = indexes.map { index in
                var partition = ListOffsetsRequest.ListOffsetsPartition()
                partition.partitionIndex = index
                partition.timestamp = spec.value
                partition.currentLeaderEpoch = -1
                return partition
            }
            request.topics = [entry]
            let response = try await cluster.connection(to: leader).send(request)
            for topic in response.topics {
                for partition in topic.partitions {
                    if partition.errorCode != 0 {
                        throw ClientError.kafka(KafkaError(code: partition.errorCode), "\(topic.name)-\(partition.partitionIndex)")
                    }
                    result[partition.partitionIndex] = Offset(partition.offset)
                }
            }
        }
        return result
    }

    /// Moves the log start offset of each partition up to the given offset (DeleteRecords, at
    /// each leader); returns the new low watermarks.
    public func deleteRecords(_ topic: String, before offsets: [Int32: Offset]) async throws -> [Int32: Offset] {
        var result: [Int32: Offset] = [:]
        for (leader, indexes) in try await byLeader(topic, Array(offsets.keys)) {
            var request = DeleteRecordsRequest()
            var entry = DeleteRecordsRequest.DeleteRecordsTopic()
            entry.name = topic
            entry.partitions = indexes.sorted().map { index in
                var partition = DeleteRecordsRequest.DeleteRecordsPartition()
                partition.partitionIndex = index
                partition.offset = (offsets[index] ?? .none).rawValue
                return partition
            }
            request.topics = [entry]
            request.timeoutMs = 30_000
            let response = try await cluster.connection(to: leader).send(request)
            for topic in response.topics {
                for partition in topic.partitions {
                    if partition.errorCode != 0 {
                        throw ClientError.kafka(KafkaError(code: partition.errorCode), "\(topic.name)-\(partition.partitionIndex)")
                    }
                    result[partition.partitionIndex] = Offset(partition.lowWatermark)
                }
            }
        }
        return result
    }

    // MARK: Groups

    public struct GroupListing: Sendable, Equatable {
        public var groupID: String
        public var state: String
        public var protocolType: String
        /// `classic`, or `consumer` for a KIP-848 group (empty from brokers before ListGroups v5).
        public var type: String = ""
    }

    /// Every group of every broker (ListGroups is answered per coordinator).
    public func listGroups() async throws -> [GroupListing] {
        let metadata = try await cluster.currentMetadata()
        var nodes = metadata.brokers.keys.sorted()
        if nodes.isEmpty { nodes = [-1] }
        var groups: [String: GroupListing] = [:]
        for node in nodes {
            let connection = node < 0 ? try await cluster.anyConnection() : try await cluster.connection(to: node)
            let response = try await connection.send(ListGroupsRequest())
            if response.errorCode != 0 { throw ClientError.kafka(KafkaError(code: response.errorCode), nil) }
            for group in response.groups {
                groups[group.groupId] = GroupListing(groupID: group.groupId, state: group.groupState, protocolType: group.protocolType,
                                                     type: group.groupType)
            }
        }
        return groups.values.sorted { $0.groupID < $1.groupID }
    }

    /// A group member as DescribeGroups reports it, with its assignment decoded.
    public struct GroupMemberDescription: Sendable, Equatable {
        public var memberID: String
        public var instanceID: String?
        public var clientID: String
        public var host: String
        public var assignment: [TopicPartition]
    }

    /// A group's state, protocol and members.
    public struct GroupDescription: Sendable, Equatable {
        public var groupID: String
        public var state: String
        public var protocolType: String
        public var protocolName: String
        public var members: [GroupMemberDescription]
    }

    /// Describes a group at its coordinator: DescribeGroups, or for a KIP-848 group (which
    /// DescribeGroups answers GROUP_ID_NOT_FOUND) ConsumerGroupDescribe, whose members' current
    /// assignments are reported (protocol name: the server assignor).
    public func describeGroup(_ groupID: String) async throws -> GroupDescription {
        let connection = try await cluster.coordinator(group: groupID).connection
        var request = DescribeGroupsRequest()
        request.groups = [groupID]
        let response = try await connection.send(request)
        guard let group = response.groups.first else { throw ClientError.protocolViolation("empty DescribeGroups response") }
        if KafkaError(code: group.errorCode) == .groupIdNotFound, connection.versions(of: .consumerGroupDescribe) != nil {
            return try await describeConsumerGroup(groupID, connection: connection)
        }
        if group.errorCode != 0 { throw ClientError.kafka(KafkaError(code: group.errorCode), groupID) }
        let members = group.members.map { member in
            let assignment = group.protocolType == "consumer"
                ? ((try? KafkaConsumer.decodeAssignment(member.memberAssignment)) ?? []).sorted() : []
            return GroupMemberDescription(memberID: member.memberId, instanceID: member.groupInstanceId,
                                          clientID: member.clientId, host: member.clientHost, assignment: assignment)
        }
        return GroupDescription(groupID: group.groupId, state: group.groupState, protocolType: group.protocolType,
                                protocolName: group.protocolData, members: members)
    }

    private func describeConsumerGroup(_ groupID: String, connection: BrokerConnection) async throws -> GroupDescription {
        var request = ConsumerGroupDescribeRequest()
        request.groupIds = [groupID]
        let response = try await connection.send(request)
        guard let group = response.groups.first else { throw ClientError.protocolViolation("empty ConsumerGroupDescribe response") }
        if group.errorCode != 0 { throw ClientError.kafka(KafkaError(code: group.errorCode), group.errorMessage ?? groupID) }
        let members = group.members.map { member in
            GroupMemberDescription(memberID: member.memberId, instanceID: member.instanceId, clientID: member.clientId,
                                   host: member.clientHost,
                                   assignment: member.assignment.topicPartitions.flatMap { entry in
                                       entry.partitions.map { TopicPartition(entry.topicName, $0) }
                                   }.sorted())
        }
        return GroupDescription(groupID: group.groupId, state: group.groupState, protocolType: "consumer",
                                protocolName: group.assignorName, members: members)
    }

    /// A group's committed offsets (topic-partition → offset).
    public func listGroupOffsets(_ groupID: String) async throws -> [String: [Int32: Offset]] {
        let connection = try await cluster.coordinator(group: groupID).connection
        var request = OffsetFetchRequest()
        let version = try connection.version(of: .offsetFetch, max: 7)
        request.groupId = groupID
        request.topics = nil
        let response = try await connection.send(request, version: version)
        if response.errorCode != 0 { throw ClientError.kafka(KafkaError(code: response.errorCode), groupID) }
        var result: [String: [Int32: Offset]] = [:]
        for topic in response.topics {
            for partition in topic.partitions { result[topic.name, default: [:]][partition.partitionIndex] = Offset(partition.committedOffset) }
        }
        return result
    }

    /// Sets a group's committed offsets (the group must have no active members).
    public func alterGroupOffsets(_ groupID: String, topic: String, offsets: [Int32: Offset]) async throws {
        let connection = try await cluster.coordinator(group: groupID).connection
        var request = OffsetCommitRequest()
        request.groupId = groupID
        request.generationIdOrMemberEpoch = -1
        request.memberId = ""
        var entry = OffsetCommitRequest.OffsetCommitRequestTopic()
        entry.name = topic
        entry.partitions = offsets.sorted { $0.key < $1.key }.map { index, offset in
            var partition = OffsetCommitRequest.OffsetCommitRequestPartition()
            partition.partitionIndex = index
            partition.committedOffset = offset.rawValue
            partition.committedLeaderEpoch = -1
            return partition
        }
        request.topics = [entry]
        let response = try await connection.send(request, version: try connection.version(of: .offsetCommit, max: 8))
        for topic in response.topics {
            for partition in topic.partitions where partition.errorCode != 0 {
                throw ClientError.kafka(KafkaError(code: partition.errorCode), "\(topic.name)-\(partition.partitionIndex)")
            }
        }
    }

    /// Deletes groups that have no members (their committed offsets go with them).
    public func deleteGroups(_ groupIDs: [String]) async throws {
        for groupID in groupIDs {
            var request = DeleteGroupsRequest()
            request.groupsNames = [groupID]
            let response = try await cluster.coordinator(group: groupID).connection.send(request)
            for result in response.results where result.errorCode != 0 {
                throw ClientError.kafka(KafkaError(code: result.errorCode), result.groupId)
            }
        }
    }

    // MARK: Cluster

    public struct ClusterDescription: Sendable, Equatable {
        public var clusterID: String
        public var controllerID: Int32
        public var brokers: [(id: Int32, host: String, port: Int32)]

        public static func == (a: ClusterDescription, b: ClusterDescription) -> Bool {
            a.clusterID == b.clusterID && a.controllerID == b.controllerID
                && a.brokers.map(\.id) == b.brokers.map(\.id) && a.brokers.map(\.host) == b.brokers.map(\.host)
                && a.brokers.map(\.port) == b.brokers.map(\.port)
        }
    }

    public func describeCluster() async throws -> ClusterDescription {
        let connection = try await cluster.anyConnection()
        let response = try await connection.send(DescribeClusterRequest())
        if response.errorCode != 0 { throw ClientError.kafka(KafkaError(code: response.errorCode), response.errorMessage) }
        return ClusterDescription(clusterID: response.clusterId, controllerID: response.controllerId,
                                  brokers: response.brokers.map { ($0.brokerId, $0.host, $0.port) })
    }
}

