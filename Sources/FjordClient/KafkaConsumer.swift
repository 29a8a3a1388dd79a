public import FjordProtocol
public import NIOCore
public import NIOPosix

/// A consumed record.
public struct ConsumerRecord: Sendable, Equatable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public var timestamp: Int64
    public var key: ByteBuffer?
    public var value: ByteBuffer?
    public var headers: [RecordHeader]
}

/// Consumer settings, with Kafka's property names accepted by `init(properties:)`.
public struct ConsumerConfiguration: Sendable {
    public enum OffsetReset: Sendable { case earliest, latest, none }

    public var bootstrap: String
    public var clientID = "fjord-consumer"
    /// `group.id`: the group whose committed offsets `commit()` writes and assigned partitions start from.
    public var groupID: String? = nil
    /// `auto.offset.reset`.
    public var autoOffsetReset: OffsetReset = .latest
    /// `fetch.max.wait.ms`, `fetch.min.bytes`, `fetch.max.bytes`, `max.partition.fetch.bytes`.
    public var fetchMaxWaitMs: Int32 = 500
    public var fetchMinBytes: Int32 = 1
    public var fetchMaxBytes: Int32 = 50 * 1024 * 1024
    public var maxPartitionFetchBytes: Int32 = 1024 * 1024
    /// `isolation.level`: read_committed stops at the last stable offset.
    public var readCommitted = false

    public init(bootstrap: String) {
        self.bootstrap = bootstrap
    }

    public init(properties: [String: String]) throws {
        guard let bootstrap = properties["bootstrap.servers"]?.split(separator: ",").first.map(String.init) else {
            throw ClientError.connection("bootstrap.servers is required")
        }
        self.init(bootstrap: bootstrap)
        for (key, value) in properties {
            switch key {
            case "client.id": clientID = value
            case "group.id": groupID = value
            case "auto.offset.reset": autoOffsetReset = value == "earliest" ? .earliest : value == "none" ? .none : .latest
            case "fetch.max.wait.ms": fetchMaxWaitMs = Int32(value) ?? fetchMaxWaitMs
            case "fetch.min.bytes": fetchMinBytes = Int32(value) ?? fetchMinBytes
            case "fetch.max.bytes": fetchMaxBytes = Int32(value) ?? fetchMaxBytes
            case "max.partition.fetch.bytes": maxPartitionFetchBytes = Int32(value) ?? maxPartitionFetchBytes
            case "isolation.level": readCommitted = value == "read_committed"
            default: break
            }
        }
    }
}

/// A Kafka consumer of explicitly assigned partitions (`assign`), with positions, `seek`,
/// `auto.offset.reset`, long-polling fetches and offset commits to a group. Records come from
/// `poll()` or as an `AsyncSequence` from `records()`.
///
/// This first version fetches from the bootstrap broker (a single-node cluster's only leader);
/// group membership with `subscribe` arrives with the next step of the client.
public actor KafkaConsumer {
    public let configuration: ConsumerConfiguration
    private let connection: BrokerConnection
    private var positions: [PartitionKey: Int64] = [:]
    private var order: [PartitionKey] = []

    struct PartitionKey: Hashable {
        var topic: String
        var partition: Int32
    }

    init(configuration: ConsumerConfiguration, connection: BrokerConnection) {
        self.configuration = configuration
        self.connection = connection
    }

    public static func connect(_ configuration: ConsumerConfiguration,
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> KafkaConsumer {
        let (host, port) = try parseHostPort(configuration.bootstrap)
        let connection = try await BrokerConnection.connect(host: host, port: port, clientID: configuration.clientID, group: group)
        return KafkaConsumer(configuration: configuration, connection: connection)
    }

    /// Where an assigned partition starts.
    public enum StartPosition: Sendable {
        /// The group's committed offset, else `auto.offset.reset`.
        case committed
        case earliest
        case latest
        case offset(Int64)
    }

    /// Assigns `partitions` of `topic` (replacing earlier assignments of that topic).
    public func assign(topic: String, partitions: [Int32], from start: StartPosition = .committed) async throws {
        order.removeAll { $0.topic == topic }
        for key in positions.keys where key.topic == topic { positions[key] = nil }
        for partition in partitions {
            let key = PartitionKey(topic: topic, partition: partition)
            order.append(key)
            positions[key] = try await resolve(key, start)
        }
    }

    /// Moves a partition's position.
    public func seek(topic: String, partition: Int32, to start: StartPosition) async throws {
        let key = PartitionKey(topic: topic, partition: partition)
        guard positions[key] != nil else { throw ClientError.kafka(.unknownTopicOrPartition, "\(topic)-\(partition) is not assigned") }
        positions[key] = try await resolve(key, start)
    }

    /// The next offset to be read from a partition.
    public func position(topic: String, partition: Int32) -> Int64? {
        positions[PartitionKey(topic: topic, partition: partition)]
    }

    private func resolve(_ key: PartitionKey, _ start: StartPosition) async throws -> Int64 {
        switch start {
        case .offset(let offset): return offset
        case .earliest: return try await listOffset(key, timestamp: -2)
        case .latest: return try await listOffset(key, timestamp: -1)
        case .committed:
            if let group = configuration.groupID, let committed = try await committedOffset(group: group, key), committed >= 0 {
                return committed
            }
            return try await reset(key)
        }
    }

    private func reset(_ key: PartitionKey) async throws -> Int64 {
        switch configuration.autoOffsetReset {
        case .earliest: return try await listOffset(key, timestamp: -2)
        case .latest: return try await listOffset(key, timestamp: -1)
        case .none: throw ClientError.kafka(.offsetOutOfRange, "\(key.topic)-\(key.partition): no committed offset and auto.offset.reset=none")
        }
    }

    private func listOffset(_ key: PartitionKey, timestamp: Int64) async throws -> Int64 {
        var request = ListOffsetsRequest()
        request.replicaId = -1
        request.isolationLevel = configuration.readCommitted ? 1 : 0
        var topic = ListOffsetsRequest.ListOffsetsTopic()
        topic.name = key.topic
        var partition = ListOffsetsRequest.ListOffsetsPartition()
        partition.partitionIndex = key.partition
        partition.timestamp = timestamp
        partition.currentLeaderEpoch = -1
        topic.partitions = [partition]
        request.topics = [topic]
        let response = try await connection.send(request)
        guard let result = response.topics.first?.partitions.first else { throw ClientError.protocolViolation("empty ListOffsets response") }
        if result.errorCode != 0 { throw ClientError.kafka(KafkaError(code: result.errorCode), "\(key.topic)-\(key.partition)") }
        return result.offset
    }

    private func committedOffset(group: String, _ key: PartitionKey) async throws -> Int64? {
        var request = OffsetFetchRequest()
        request.groupId = group
        var topic = OffsetFetchRequest.OffsetFetchRequestTopic()
        topic.name = key.topic
        topic.partitionIndexes = [key.partition]
        request.topics = [topic]
        let response = try await connection.send(request, version: try connection.version(of: .offsetFetch, max: 7))
        return response.topics.first?.partitions.first?.committedOffset
    }

    // MARK: Fetching

    /// Fetches once (long-polling up to `fetch.max.wait.ms`) and returns the records, advancing
    /// positions. Partitions whose position fell out of range are reset by `auto.offset.reset`.
    public func poll() async throws -> [ConsumerRecord] {
        guard !order.isEmpty else { return [] }
        var request = FetchRequest()
        request.replicaId = -1
        request.maxWaitMs = configuration.fetchMaxWaitMs
        request.minBytes = configuration.fetchMinBytes
        request.maxBytes = configuration.fetchMaxBytes
        request.isolationLevel = configuration.readCommitted ? 1 : 0
        request.sessionId = 0
        request.sessionEpoch = -1
        var byTopic: [String: [FetchRequest.FetchPartition]] = [:]
        var topicOrder: [String] = []
        for key in order {
            guard let position = positions[key] else { continue }
            var partition = FetchRequest.FetchPartition()
            partition.partition = key.partition
            partition.fetchOffset = position
            partition.partitionMaxBytes = configuration.maxPartitionFetchBytes
            partition.currentLeaderEpoch = -1
            partition.logStartOffset = -1
            if byTopic[key.topic] == nil { topicOrder.append(key.topic) }
            byTopic[key.topic, default: []].append(partition)
        }
        request.topics = topicOrder.map { name in
            var topic = FetchRequest.FetchTopic()
            topic.topic = name
            topic.partitions = byTopic[name] ?? []
            return topic
        }
        let response = try await connection.send(request, version: try connection.version(of: .fetch, max: 12))
        if response.errorCode != 0 { throw ClientError.kafka(KafkaError(code: response.errorCode), "Fetch") }
        var out: [ConsumerRecord] = []
        for topic in response.responses {
            for data in topic.partitions {
                let key = PartitionKey(topic: topic.topic, partition: data.partitionIndex)
                guard let position = positions[key] else { continue }
                switch KafkaError(code: data.errorCode) {
                case .noError: break
                case .offsetOutOfRange:
                    positions[key] = try await reset(key)
                    continue
                case let error:
                    throw ClientError.kafka(error, "\(key.topic)-\(key.partition)")
                }
                guard var bytes = data.records else { continue }
                var next = position
                do {
                    while let batch = try RecordBatch.read(from: &bytes) {
                        try batch.validate()
                        if !batch.attributes.isControl {
                            for record in try batch.records() where record.offset >= next {
                                out.append(ConsumerRecord(topic: key.topic, partition: key.partition, offset: record.offset,
                                                          timestamp: record.timestamp, key: record.key, value: record.value,
                                                          headers: record.headers))
                            }
                        }
                        next = Swift.max(next, batch.nextOffset)
                    }
                } catch {
                    throw ClientError.protocolViolation("\(key.topic)-\(key.partition) at \(next): \(error)")
                }
                positions[key] = next
            }
        }
        return out
    }

    /// Records as they arrive, until the task is cancelled or an error occurs.
    public nonisolated func records() -> AsyncThrowingStream<ConsumerRecord, any Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    while !Task.isCancelled {
                        for record in try await self.poll() { continuation.yield(record) }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Commits the current positions (or `offsets`) to `group.id`, outside the group protocol.
    public func commit(_ offsets: [(topic: String, partition: Int32, offset: Int64)]? = nil) async throws {
        guard let group = configuration.groupID else { throw ClientError.kafka(.invalidGroupId, "group.id is not set") }
        let entries = offsets ?? order.compactMap { key in positions[key].map { (key.topic, key.partition, $0) } }
        var request = OffsetCommitRequest()
        request.groupId = group
        request.generationIdOrMemberEpoch = -1
        var byTopic: [String: [OffsetCommitRequest.OffsetCommitRequestPartition]] = [:]
        for (topic, partition, offset) in entries {
            var entry = OffsetCommitRequest.OffsetCommitRequestPartition()
            entry.partitionIndex = partition
            entry.committedOffset = offset
            entry.committedLeaderEpoch = -1
            byTopic[topic, default: []].append(entry)
        }
        request.topics = byTopic.sorted { $0.key < $1.key }.map { name, partitions in
            var topic = OffsetCommitRequest.OffsetCommitRequestTopic()
            topic.name = name
            topic.partitions = partitions
            return topic
        }
        let response = try await connection.send(request, version: try connection.version(of: .offsetCommit, max: 8))
        for topic in response.topics {
            for partition in topic.partitions where partition.errorCode != 0 {
                throw ClientError.kafka(KafkaError(code: partition.errorCode), "\(topic.name)-\(partition.partitionIndex)")
            }
        }
    }

    public func close() async {
        await connection.close()
    }
}
