import FjordClient
import FjordCompression
import FjordProtocol
import FjordTesting
import NIOCore
import Synchronization
import Testing

@Suite("KafkaProducer against an in-process broker")
struct KafkaProducerTests {
    /// Reads every record of a partition back through raw Fetch requests.
    func readBack(_ connection: BrokerConnection, topic: String, partition: Int32) async throws -> [Record] {
        var records: [Record] = []
        var offset: Int64 = 0
        while true {
            var request = FetchRequest()
            request.replicaId = -1
            request.maxWaitMs = 0
            request.minBytes = 0
            request.maxBytes = 8 << 20
            request.sessionEpoch = -1
            var fetchTopic = FetchRequest.FetchTopic()
            fetchTopic.topic = topic
            var fetchPartition = FetchRequest.FetchPartition()
            fetchPartition.partition = partition
            fetchPartition.fetchOffset = offset
            fetchPartition.partitionMaxBytes = 8 << 20
            fetchTopic.partitions = [fetchPartition]
            request.topics = [fetchTopic]
            // Fetch v13 and later name topics by id only; this request names them.
            let response = try await connection.send(request, version: try connection.version(of: .fetch, max: 12))
            guard var bytes = response.responses.first?.partitions.first?.records, bytes.readableBytes > 0 else { return records }
            while let batch = try RecordBatch.read(from: &bytes) {
                records += try batch.records().filter { $0.offset >= offset }
                offset = batch.nextOffset
            }
        }
    }

    @Test("10,000 keyed records land on Kafka's partitions, in order, exactly once", arguments: [CompressionCodec.none, .lz4, .zstd])
    func produceAndReadBack(codec: CompressionCodec) async throws {
        let broker = try await InProcessBroker.start()
        let admin = try await KafkaAdmin.connect(bootstrap: broker.bootstrap)
        try await admin.createTopic("produced", partitions: 4)
        var configuration = ProducerConfiguration(bootstrap: broker.bootstrap)
        configuration.compression = codec
        configuration.lingerMs = 2
        let producer = try await KafkaProducer.connect(configuration)
        let results = try await withThrowingTaskGroup(of: (Int, RecordMetadata).self) { group in
            for i in 0..<10_000 {
                group.addTask {
                    let metadata = try await producer.send(topic: "produced", key: ByteBuffer(string: "key-\(i % 100)"),
                                                           value: ByteBuffer(string: "value-\(i)"),
                                                           headers: [RecordHeader(key: "n", value: ByteBuffer(string: "\(i)"))])
                    return (i, metadata)
                }
            }
            var all: [(Int, RecordMetadata)] = []
            for try await result in group { all.append(result) }
            return all
        }
        await producer.flush()
        #expect(results.count == 10_000)
        for (i, metadata) in results {
            #expect(metadata.partition == DefaultPartitioner.partition(forKey: Array("key-\(i % 100)".utf8), partitions: 4))
        }
        var seen = 0
        for partition in Int32(0)..<4 {
            let records = try await readBack(try await admin.anyConnection(), topic: "produced", partition: partition)
            #expect(records.map(\.offset) == Array(0..<Int64(records.count)), "dense offsets")
            seen += records.count
            let offsets = Set(results.filter { $0.1.partition == partition }.map(\.1.offset.rawValue))
            #expect(offsets == Set(records.map(\.offset)), "every acknowledged offset holds a record")
        }
        #expect(seen == 10_000)
        await producer.close()
        await admin.close()
        try await broker.stop()
    }

    @Test("a broker restart during production: with idempotence no record is lost, duplicated or reordered")
    func restartDuringProduction() async throws {
        var broker = try await InProcessBroker.start()
        let admin = try await KafkaAdmin.connect(bootstrap: broker.bootstrap)
        try await admin.createTopic("restart", partitions: 3)
        await admin.close()
        var configuration = ProducerConfiguration(bootstrap: broker.bootstrap)
        configuration.client.reconnectBackoffMaxMs = 200
        configuration.client.retryBackoffMaxMs = 200
        let producer = try await KafkaProducer.connect(configuration)
        let failures = Mutex<[String]>([])
        let total = 20_000
        let acknowledged = Mutex(0)
        let sending = Task {
            for i in 0..<total {
                try await producer.produce(topic: "restart", key: ByteBuffer(string: "k\(i % 10)"), value: ByteBuffer(string: "\(i)")) {
                    switch $0 {
                    case .failure(let error): failures.withLock { $0.append("\(error)") }
                    case .success: acknowledged.withLock { $0 += 1 }
                    }
                }
                if i % 200 == 0 { try await Task.sleep(for: .milliseconds(10)) }  // ≥ 1 s in all
            }
        }
        let deadline = ContinuousClock.now + .seconds(30)
        while acknowledged.withLock({ $0 }) < 2_000 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        let beforeRestart = acknowledged.withLock { $0 }
        broker = try await broker.restart()  // connections drop mid-stream; the producer reconnects
        #expect(beforeRestart > 0 && beforeRestart < total, "the restart happened mid-stream (\(beforeRestart) acknowledged)")
        try await sending.value
        await producer.flush()
        #expect(failures.withLock { $0 } == [])
        await producer.close()

        let reader = try await KafkaAdmin.connect(bootstrap: broker.bootstrap)
        var values: [Int] = []
        for partition in Int32(0)..<3 {
            let records = try await readBack(try await reader.anyConnection(), topic: "restart", partition: partition)
            #expect(records.map(\.offset) == Array(0..<Int64(records.count)), "no gap in partition \(partition)")
            var lastPerKey: [String: Int] = [:]
            for record in records {
                let key = String(buffer: record.key!)
                let value = Int(String(buffer: record.value!))!
                #expect(value > (lastPerKey[key] ?? -1), "per-key order kept")
                lastPerKey[key] = value
                values.append(value)
            }
        }
        #expect(values.count == total, "no duplicate, nothing lost")
        #expect(Set(values).count == total)
        await reader.close()
        try await broker.stop()
    }

    @Test("properties with Kafka's and librdkafka's names configure the producer; typos are refused")
    func properties() throws {
        let configuration = try ProducerConfiguration(properties: [
            "bootstrap.servers": "127.0.0.1:9092, other:9092", "acks": "all", "queue.buffering.max.ms": "20",
            "compression.type": "zstd", "enable.idempotence": "false", "reconnect.backoff.max.ms": "5000",
            "message.timeout.ms": "30000", "batch.num.messages": "10000",
        ])
        #expect(configuration.client.bootstrapServers == ["127.0.0.1:9092", "other:9092"])
        #expect(configuration.acks == -1)
        #expect(configuration.lingerMs == 20)
        #expect(configuration.compression == .zstd)
        #expect(!configuration.idempotence)
        #expect(configuration.client.reconnectBackoffMaxMs == 5000)
        #expect(configuration.deliveryTimeoutMs == 30000)
        #expect(throws: ClientError.self) { try ProducerConfiguration(properties: ["bootstrap.servers": "a:1", "linger.mss": "5"]) }
        #expect(throws: ClientError.self) { try ProducerConfiguration(properties: ["bootstrap.servers": "a:1", "linger.ms": "soon"]) }
        #expect(throws: ClientError.self) { try ProducerConfiguration(properties: ["bootstrap.servers": "a:1", "acks": "2"]) }
        let consumer = try ConsumerConfiguration(properties: [
            "bootstrap.servers": "a:1", "group.id": "g", "auto.offset.reset": "smallest",
            "partition.assignment.strategy": "roundrobin,cooperative-sticky", "enable.auto.commit": "false",
            "group.instance.id": "i-1", "max.poll.records": "10",
        ])
        #expect(consumer.groupID == "g" && consumer.groupInstanceID == "i-1")
        #expect(consumer.autoOffsetReset == .earliest && !consumer.enableAutoCommit && consumer.maxPollRecords == 10)
        #expect(consumer.assignors.map(\.name) == ["roundrobin", "cooperative-sticky"])
    }

    @Test("backoff grows exponentially to its cap, with jitter within ±20 %")
    func backoff() {
        var backoff = ExponentialBackoff(baseMs: 50, maxMs: 1_000)
        #expect(backoff.delayMs() == 0)
        var seen: [Int] = []
        for _ in 0..<8 {
            backoff.recordFailure()
            seen.append(backoff.delayMs())
        }
        let expected = [50, 100, 200, 400, 800, 1_000, 1_000, 1_000]
        for (delay, nominal) in zip(seen, expected) {
            #expect(Double(delay) >= Double(nominal) * 0.8 - 1 && Double(delay) <= Double(nominal) * 1.2 + 1)
        }
        backoff.reset()
        #expect(backoff.delayMs() == 0)
    }
}
