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
    public var leaderEpoch: Int32
    public var replicas: [Int32]
    public var isr: [Int32]
}

/// Administrative operations (Kafka's `Admin`): topics, configs, offsets and groups.
///
/// This first version talks to the bootstrap broker over one `BrokerConnection`, which is
/// complete on a single-node cluster; routing partition requests to their leaders arrives with
/// multi-broker clusters. Every Kafka error becomes `ClientError.kafka` with the broker's message.
public final class KafkaAdmin: Sendable {
    let connection: BrokerConnection

    public init(connection: BrokerConnection) {
        self.connection = connection
    }

    /// Connects to `bootstrap` (`host:port`).
    public static func connect(bootstrap: String, clientID: String = "fjord-admin",
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> KafkaAdmin {
        let (host, port) = try parseHostPort(bootstrap)
        return KafkaAdmin(connection: try await BrokerConnection.connect(host: host, port: port, clientID: clientID, group: group))
    }

    public func close() async {
        await connection.close()
    }

    /// The underlying connection (for tests that send raw requests).
    public var connectionForTests: BrokerConnection { connection }

    // MARK: Topics

    /// Every topic (internal ones too, marked `isInternal`).
    public func describeTopics(_ names: [String]? = nil) async throws -> [TopicDescription] {
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
                    PartitionDescription(partition: $0.partitionIndex, leader: $0.leaderId, leaderEpoch: $0.leaderEpoch,
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

    /// The offset for `spec` in each partition of `topic` (partition → offset; -1 when none).
    public func listOffsets(_ topic: String, partitions: [Int32], spec: OffsetSpec) async throws -> [Int32: Int64] {
        var request = ListOffsetsRequest()
        request.replicaId = -1
        var entry = ListOffsetsRequest.ListOffsetsTopic()
        entry.name = topic
        entry.partitions = partitions.map { index in
            var partition = ListOffsetsRequest.ListOffsetsPartition()
            partition.partitionIndex = index
            partition.timestamp = spec.value
            partition.currentLeaderEpoch = -1
            return partition
        }
        request.topics = [entry]
        let response = try await connection.send(request)
        var result: [Int32: Int64] = [:]
        for topic in response.topics {
            for partition in topic.partitions {
                if partition.errorCode != 0 { throw ClientError.kafka(KafkaError(code: partition.errorCode), "\(topic.name)-\(partition.partitionIndex)") }
                result[partition.partitionIndex] = partition.offset
            }
        }
        return result
    }

    /// Moves the log start offset of each partition up to the given offset (DeleteRecords).
    public func deleteRecords(_ topic: String, before offsets: [Int32: Int64]) async throws -> [Int32: Int64] {
        var request = DeleteRecordsRequest()
        var entry = DeleteRecordsRequest.DeleteRecordsTopic()
        entry.name = topic
        entry.partitions = offsets.sorted { $0.key < $1.key }.map { index, offset in
            var partition = DeleteRecordsRequest.DeleteRecordsPartition()
            partition.partitionIndex = index
            partition.offset = offset
            return partition
        }
        request.topics = [entry]
        request.timeoutMs = 30_000
        let response = try await connection.send(request)
        var result: [Int32: Int64] = [:]
        for topic in response.topics {
            for partition in topic.partitions {
                if partition.errorCode != 0 { throw ClientError.kafka(KafkaError(code: partition.errorCode), "\(topic.name)-\(partition.partitionIndex)") }
                result[partition.partitionIndex] = partition.lowWatermark
            }
        }
        return result
    }

    // MARK: Groups

    public struct GroupListing: Sendable, Equatable {
        public var groupID: String
        public var state: String
        public var protocolType: String
    }

    public func listGroups() async throws -> [GroupListing] {
        let response = try await connection.send(ListGroupsRequest())
        if response.errorCode != 0 { throw ClientError.kafka(KafkaError(code: response.errorCode), nil) }
        return response.groups.map { GroupListing(groupID: $0.groupId, state: $0.groupState, protocolType: $0.protocolType) }
            .sorted { $0.groupID < $1.groupID }
    }

    /// A group's committed offsets (topic-partition → offset).
    public func listGroupOffsets(_ groupID: String) async throws -> [String: [Int32: Int64]] {
        var request = OffsetFetchRequest()
        let version = try connection.version(of: .offsetFetch, max: 7)
        request.groupId = groupID
        request.topics = nil
        let response = try await connection.send(request, version: version)
        if response.errorCode != 0 { throw ClientError.kafka(KafkaError(code: response.errorCode), groupID) }
        var result: [String: [Int32: Int64]] = [:]
        for topic in response.topics {
            for partition in topic.partitions { result[topic.name, default: [:]][partition.partitionIndex] = partition.committedOffset }
        }
        return result
    }

    /// Sets a group's committed offsets (the group must have no active members).
    public func alterGroupOffsets(_ groupID: String, topic: String, offsets: [Int32: Int64]) async throws {
        var request = OffsetCommitRequest()
        request.groupId = groupID
        request.generationIdOrMemberEpoch = -1
        request.memberId = ""
        var entry = OffsetCommitRequest.OffsetCommitRequestTopic()
        entry.name = topic
        entry.partitions = offsets.sorted { $0.key < $1.key }.map { index, offset in
            var partition = OffsetCommitRequest.OffsetCommitRequestPartition()
            partition.partitionIndex = index
            partition.committedOffset = offset
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

    public func deleteGroups(_ groupIDs: [String]) async throws {
        var request = DeleteGroupsRequest()
        request.groupsNames = groupIDs
        let response = try await connection.send(request)
        for result in response.results where result.errorCode != 0 {
            throw ClientError.kafka(KafkaError(code: result.errorCode), result.groupId)
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
        let response = try await connection.send(DescribeClusterRequest())
        if response.errorCode != 0 { throw ClientError.kafka(KafkaError(code: response.errorCode), response.errorMessage) }
        return ClusterDescription(clusterID: response.clusterId, controllerID: response.controllerId,
                                  brokers: response.brokers.map { ($0.brokerId, $0.host, $0.port) })
    }
}

/// Parses `host:port` (and `[v6]:port`).
func parseHostPort(_ text: String) throws -> (String, Int) {
    guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else {
        throw ClientError.connection("bad bootstrap address '\(text)': expected host:port")
    }
    var host = String(text[..<colon])
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    return (host, port)
}
