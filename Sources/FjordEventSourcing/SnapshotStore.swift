import FjordClient
import FjordProtocol
import Foundation
public import NIOCore
public import NIOPosix


/// Snapshots of streams on a compacted topic (`cleanup.policy=compact`): the record key is the
/// stream, the value its state, headers carry the version and schema; the log cleaner keeps the
/// latest snapshot of each stream, and `delete` writes a tombstone.
///
/// A compacted topic has no index by key, so the store keeps an index of the topic in memory (as
/// a Kafka Streams `GlobalKTable` keeps a table): for each stream the offset, version and schema
/// of its latest snapshot, not the state itself. `latest` first reads the stream's partition up
/// to the end offset it had when called, so a snapshot saved before the call (by any process) is
/// seen, then fetches that one record's state. Memory grows with the number of streams that have
/// a snapshot (the key and three numbers each), not with the size of their states.
public actor SnapshotStore {
    public nonisolated let topic: String
    nonisolated let partitionCount: Int32
    private let producer: KafkaProducer
    private let consumer: KafkaConsumer
    /// For the state fetches.
    private let cluster: KafkaCluster

    /// Where a stream's latest snapshot is.
    struct Location {
        var offset: Int64
        var version: Int64
        var schemaVersion: Int
    }

    private var snapshots: [String: Location] = [:]
    /// How far the view has read each partition.
    private var positions: [Int32: Int64] = [:]
    /// One catch-up at a time: concurrent `latest` calls wait for the running one.
    private var catchingUp: Task<Void, any Error>?

    static let versionHeader = "fjord-snapshot-version"
    static let schemaHeader = "fjord-snapshot-schema"

    private init(topic: String, partitionCount: Int32, producer: KafkaProducer, consumer: KafkaConsumer, cluster: KafkaCluster) {
        self.topic = topic
        self.partitionCount = partitionCount
        self.producer = producer
        self.consumer = consumer
        self.cluster = cluster
    }

    /// Connects; with `createTopic`, creates the compacted topic if it is missing. A topic that
    /// is not compacted is refused: snapshots would pile up without end.
    public static func connect(bootstrap: String, topic: String, createTopic: Bool = true, partitions: Int32 = 1,
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> SnapshotStore {
        var client = ClientConfiguration(bootstrap: bootstrap, clientID: "fjord-snapshot-store")
        client.allowAutoCreateTopics = false
        let cluster = try await KafkaCluster.connect(client, group: group)
        do {
            return try await connect(cluster: cluster, bootstrap: bootstrap, topic: topic, createTopic: createTopic,
                                     partitions: partitions, group: group)
        } catch {
            await cluster.close()
            throw error
        }
    }

    private static func connect(cluster: KafkaCluster, bootstrap: String, topic: String, createTopic: Bool, partitions: Int32,
                                group: any EventLoopGroup) async throws -> SnapshotStore {
        let admin = KafkaAdmin(cluster: cluster)
        if createTopic {
            do {
                try await admin.createTopic(topic, partitions: partitions, configs: ["cleanup.policy": "compact"])
            } catch ClientError.kafka(.topicAlreadyExists, _) {
            }
        }
        guard try await admin.describeTopicConfigs(topic)["cleanup.policy"]?.contains("compact") == true else {
            throw EventStoreError.notACompactedTopic(topic)
        }
        var producerConfiguration = ProducerConfiguration(bootstrap: bootstrap, clientID: "fjord-snapshot-store")
        producerConfiguration.lingerMs = 0
        let producer = try await KafkaProducer.connect(producerConfiguration, group: group)
        var consumerConfiguration = ConsumerConfiguration(bootstrap: bootstrap, clientID: "fjord-snapshot-store")
        consumerConfiguration.enableAutoCommit = false
        consumerConfiguration.fetchMaxWaitMs = 50
        let consumer = try await KafkaConsumer.connect(consumerConfiguration, group: group)
        let partitions = try await consumer.partitions(of: topic)
        try await consumer.assign(topic: topic, partitions: partitions, from: .earliest)
        return SnapshotStore(topic: topic, partitionCount: Int32(partitions.count), producer: producer, consumer: consumer,
                             cluster: cluster)
    }

    public func close() async {
        await producer.close()
        await consumer.close()
        await cluster.close()
    }

    /// Saves a stream's state at `version`; returns once the broker has it (acks=all).
    public func save(stream: String, _ snapshot: Snapshot) async throws {
        let sent = try await producer.send(topic: topic, key: ByteBuffer(string: stream), value: snapshot.data, headers: [
            RecordHeader(key: Self.versionHeader, value: ByteBuffer(string: String(snapshot.version))),
            RecordHeader(key: Self.schemaHeader, value: ByteBuffer(string: String(snapshot.schemaVersion))),
        ], partition: partition(of: stream))
        snapshots[stream] = Location(offset: sent.offset.rawValue, version: snapshot.version, schemaVersion: snapshot.schemaVersion)
    }

    /// Removes a stream's snapshot (a tombstone the cleaner drops after `delete.retention.ms`).
    public func delete(stream: String) async throws {
        _ = try await producer.send(topic: topic, key: ByteBuffer(string: stream), value: nil, partition: partition(of: stream))
        snapshots[stream] = nil
    }

    /// The stream's latest snapshot, including every one saved before this call. Throws when
    /// the snapshot partition cannot be read that far within `timeout`.
    public func latest(stream: String, timeout: Duration = .seconds(30)) async throws -> Snapshot? {
        let partition = TopicPartition(topic, partition(of: stream))
        let end = try await consumer.endOffsets([partition])[partition]?.rawValue ?? 0
        let deadline = ContinuousClock.now + timeout
        while positions[partition.partition, default: 0] < end {
            guard ContinuousClock.now < deadline else {
                throw EventStoreError.broker("snapshots of \(topic)-\(partition.partition) not readable up to offset \(end) within \(timeout)")
            }
            if let running = catchingUp {
                _ = try? await running.value
                continue
            }
            let task = Task { try await self.readMore() }
            catchingUp = task
            defer { catchingUp = nil }
            try await task.value
        }
        guard let location = snapshots[stream] else { return nil }
        guard let data = try await state(at: location.offset, partition: partition.partition) else {
            // Gone (retention on a compact,delete topic): forget it, so the caller folds from the
            // start and its next snapshot takes the place.
            if snapshots[stream]?.offset == location.offset { snapshots[stream] = nil }
            return nil
        }
        return Snapshot(version: location.version, schemaVersion: location.schemaVersion, data: data)
    }

    /// The value of the record at `offset` (nil if the cleaner removed it meanwhile).
    private func state(at offset: Int64, partition: Int32) async throws -> ByteBuffer? {
        var request = FetchRequest()
        request.replicaId = -1
        request.maxWaitMs = 0
        request.minBytes = 1
        request.maxBytes = 64 * 1024 * 1024
        request.sessionEpoch = -1
        var wanted = FetchRequest.FetchPartition()
        wanted.partition = partition
        wanted.fetchOffset = offset
        wanted.partitionMaxBytes = 1024 * 1024  // at least the first batch, whatever its size
        wanted.currentLeaderEpoch = -1
        wanted.logStartOffset = -1
        wanted.lastFetchedEpoch = -1
        var fetchTopic = FetchRequest.FetchTopic()
        fetchTopic.topic = topic
        fetchTopic.partitions = [wanted]
        request.topics = [fetchTopic]
        let connection = try await cluster.leader(topic: topic, partition: partition).connection
        // Fetch v13 and later name topics by id only; this request names them.
        let response = try await connection.send(request, version: try connection.version(of: .fetch, max: 12))
        guard let answer = response.responses.first?.partitions.first else { return nil }
        if KafkaError(code: answer.errorCode) == .offsetOutOfRange { return nil }
        if answer.errorCode != 0 {
            throw EventStoreError.broker("fetching snapshot \(topic)-\(partition)@\(offset): \(KafkaError(code: answer.errorCode).name)")
        }
        guard var bytes = answer.records else { return nil }
        while let batch = try RecordBatch.read(from: &bytes) {
            guard batch.lastOffset >= offset else { continue }
            for record in try batch.records() where record.offset == offset { return record.value }
            return nil
        }
        return nil
    }

    private func readMore() async throws {
        let records = try await consumer.poll()
        for partition in 0..<partitionCount {
            if let position = await consumer.position(topic: topic, partition: partition) { positions[partition] = position.rawValue }
        }
        for record in records {
            guard let key = record.key else { continue }
            let stream = String(buffer: key)
            guard record.value != nil else {
                snapshots[stream] = nil  // a tombstone
                continue
            }
            var version: Int64?
            var schema = 1
            for header in record.headers {
                let text = header.value.map { String(buffer: $0) } ?? ""
                if header.key == Self.versionHeader { version = Int64(text) }
                if header.key == Self.schemaHeader { schema = Int(text) ?? 1 }
            }
            guard let version else { continue }  // not a snapshot: ignored
            snapshots[stream] = Location(offset: record.offset.rawValue, version: version, schemaVersion: schema)
        }
    }

    /// Snapshots are partitioned as the events are: Kafka's murmur2 of the stream.
    nonisolated func partition(of stream: String) -> Int32 {
        DefaultPartitioner.partition(forKey: Array(stream.utf8), partitions: partitionCount)
    }
}
