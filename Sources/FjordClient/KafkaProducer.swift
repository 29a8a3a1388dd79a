#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
public import FjordCompression
public import FjordProtocol
public import NIOCore
public import NIOPosix

/// Where a record landed.
public struct RecordMetadata: Sendable, Equatable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
}

/// Producer settings, with Kafka's property names accepted by `init(properties:)`.
public struct ProducerConfiguration: Sendable {
    public var bootstrap: String
    public var clientID = "fjord-producer"
    /// `acks`: 0, 1 or -1 (all).
    public var acks: Int16 = -1
    /// `linger.ms`: how long a partition's batch waits for more records.
    public var lingerMs: Int = 5
    /// `batch.size`: a batch is sent once its records reach this many bytes.
    public var batchSize: Int = 16 * 1024
    /// `compression.type`.
    public var compression: CompressionCodec = .none
    /// `enable.idempotence`: producer id, epoch and sequences, so retries never duplicate.
    public var idempotence = true
    /// `buffer.memory`: bytes of unsent records before `send` waits.
    public var bufferMemory: Int = 32 * 1024 * 1024
    /// `retries` for retriable errors (with the same sequence numbers when idempotent).
    public var retries = 5

    public init(bootstrap: String) {
        self.bootstrap = bootstrap
    }

    /// Reads librdkafka/Java property names; unknown keys are returned for a warning.
    public init(properties: [String: String]) throws {
        guard let bootstrap = properties["bootstrap.servers"]?.split(separator: ",").first.map(String.init) else {
            throw ClientError.connection("bootstrap.servers is required")
        }
        self.init(bootstrap: bootstrap)
        for (key, value) in properties {
            switch key {
            case "bootstrap.servers": break
            case "client.id": clientID = value
            case "acks": acks = value == "all" ? -1 : Int16(value) ?? -1
            case "linger.ms": lingerMs = Int(value) ?? lingerMs
            case "batch.size": batchSize = Int(value) ?? batchSize
            case "compression.type", "compression.codec": compression = CompressionCodec(name: value) ?? .none
            case "enable.idempotence": idempotence = value == "true"
            case "buffer.memory": bufferMemory = Int(value) ?? bufferMemory
            case "retries": retries = Int(value) ?? retries
            default: break
            }
        }
    }
}

/// A Kafka producer: per-partition batching with `linger.ms`/`batch.size`, compression,
/// idempotence (InitProducerId and per-partition sequences) and bounded buffering.
///
/// This first version sends to the bootstrap broker (a single-node cluster's only leader) and
/// keeps one request in flight per partition, which preserves order without relying on
/// broker-side reordering. Keyed records use Kafka's murmur2 partitioner; records without a key
/// stick to one partition until its batch is sent.
public actor KafkaProducer {
    public let configuration: ProducerConfiguration
    private let connection: BrokerConnection
    private var partitionCounts: [String: Int32] = [:]
    private var producerID: Int64 = RecordBatch.noProducerID
    private var producerEpoch: Int16 = RecordBatch.noProducerEpoch
    private var sequences: [TopicPartitionKey: Int32] = [:]
    private var batches: [TopicPartitionKey: PendingBatch] = [:]
    private var inFlight: Set<TopicPartitionKey> = []
    private var stickyPartition: [String: Int32] = [:]
    private var bufferedBytes = 0
    private var spaceWaiters: [CheckedContinuation<Void, Never>] = []
    private var idleWaiters: [CheckedContinuation<Void, Never>] = []

    struct TopicPartitionKey: Hashable {
        var topic: String
        var partition: Int32
    }

    struct PendingBatch {
        var builder: RecordBatchBuilder
        var waiters: [CheckedContinuation<RecordMetadata, any Error>] = []
        var bytes = 0
        var lingerScheduled = false
    }

    init(configuration: ProducerConfiguration, connection: BrokerConnection) {
        self.configuration = configuration
        self.connection = connection
    }

    /// Connects and, with idempotence, obtains a producer id.
    public static func connect(_ configuration: ProducerConfiguration,
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> KafkaProducer {
        let (host, port) = try parseHostPort(configuration.bootstrap)
        let connection = try await BrokerConnection.connect(host: host, port: port, clientID: configuration.clientID, group: group)
        let producer = KafkaProducer(configuration: configuration, connection: connection)
        if configuration.idempotence { try await producer.initProducerID() }
        return producer
    }

    private func initProducerID() async throws {
        var request = InitProducerIdRequest()
        request.transactionalId = nil
        request.transactionTimeoutMs = 60_000
        request.producerId = -1
        request.producerEpoch = -1
        let response = try await connection.send(request)
        guard response.errorCode == 0 else { throw ClientError.kafka(KafkaError(code: response.errorCode), "InitProducerId") }
        producerID = response.producerId
        producerEpoch = response.producerEpoch
    }

    // MARK: Sending

    /// Sends one record and returns where it landed, once the broker acknowledged it (or, with
    /// acks=0, once it was written to the connection, with offset -1). Suspends while
    /// `buffer.memory` is full.
    public func send(topic: String, key: ByteBuffer? = nil, value: ByteBuffer?, headers: [RecordHeader] = [],
                     partition explicit: Int32? = nil, timestamp: Int64? = nil) async throws -> RecordMetadata {
        let size = (key?.readableBytes ?? 0) + (value?.readableBytes ?? 0) + 32
        while bufferedBytes + size > configuration.bufferMemory && bufferedBytes > 0 {
            await withCheckedContinuation { spaceWaiters.append($0) }
        }
        let partition = try await choosePartition(topic: topic, key: key, explicit: explicit)
        let tp = TopicPartitionKey(topic: topic, partition: partition)
        let now = timestamp ?? currentTimeMs()
        bufferedBytes += size
        return try await withCheckedThrowingContinuation { continuation in
            var batch = batches[tp] ?? PendingBatch(builder: RecordBatchBuilder(attributes: RecordBatchAttributes(compression: configuration.compression)))
            batch.builder.append(timestamp: now, key: key, value: value, headers: headers)
            batch.waiters.append(continuation)
            batch.bytes += size
            let full = batch.bytes >= configuration.batchSize
            let needsLinger = !batch.lingerScheduled && !full
            if needsLinger { batch.lingerScheduled = true }
            batches[tp] = batch
            if full {
                drain(tp)
            } else if needsLinger {
                let linger = configuration.lingerMs
                Task {
                    if linger > 0 { try? await Task.sleep(for: .milliseconds(linger)) }
                    self.drain(tp)
                }
            }
        }
    }

    /// Waits until every record sent so far is acknowledged (or failed).
    public func flush() async {
        for tp in Array(batches.keys) { drain(tp) }
        while !batches.isEmpty || !inFlight.isEmpty {
            await withCheckedContinuation { idleWaiters.append($0) }
            for tp in Array(batches.keys) { drain(tp) }
        }
    }

    /// Flushes, then closes the connection.
    public func close() async {
        await flush()
        await connection.close()
    }

    private func choosePartition(topic: String, key: ByteBuffer?, explicit: Int32?) async throws -> Int32 {
        let count = try await partitionCount(topic)
        if let explicit {
            guard explicit >= 0 && explicit < count else {
                throw ClientError.kafka(.unknownTopicOrPartition, "\(topic)-\(explicit)")
            }
            return explicit
        }
        if let key {
            return DefaultPartitioner.partition(forKey: key.readableBytesView, partitions: count)
        }
        if let sticky = stickyPartition[topic], sticky < count { return sticky }
        let chosen = Int32.random(in: 0..<count)
        stickyPartition[topic] = chosen
        return chosen
    }

    private func partitionCount(_ topic: String) async throws -> Int32 {
        if let count = partitionCounts[topic] { return count }
        var request = MetadataRequest()
        var wanted = MetadataRequest.MetadataRequestTopic()
        wanted.name = topic
        request.topics = [wanted]
        request.allowAutoTopicCreation = true
        let response = try await connection.send(request)
        guard let result = response.topics.first else { throw ClientError.protocolViolation("empty Metadata response") }
        if result.errorCode != 0 { throw ClientError.kafka(KafkaError(code: result.errorCode), topic) }
        let count = Int32(result.partitions.count)
        guard count > 0 else { throw ClientError.kafka(.leaderNotAvailable, topic) }
        partitionCounts[topic] = count
        return count
    }

    // MARK: Draining

    /// Sends the partition's pending batch unless a request for it is already in flight (one in
    /// flight per partition keeps order); the completion drains again.
    private func drain(_ tp: TopicPartitionKey) {
        guard !inFlight.contains(tp), var batch = batches.removeValue(forKey: tp) else { return }
        if stickyPartition[tp.topic] == tp.partition { stickyPartition[tp.topic] = nil }
        inFlight.insert(tp)
        if configuration.idempotence {
            let sequence = sequences[tp] ?? 0
            batch.builder.producerID = producerID
            batch.builder.producerEpoch = producerEpoch
            batch.builder.baseSequence = sequence
            let next = Int64(sequence) + Int64(batch.builder.recordCount)
            sequences[tp] = Int32(truncatingIfNeeded: next > Int64(Int32.max) ? next - Int64(Int32.max) - 1 : next)
        }
        let pending = batch
        Task { await self.sendBatch(tp, pending) }
    }

    private func sendBatch(_ tp: TopicPartitionKey, _ batch: PendingBatch) async {
        var outcome: Result<Int64, any Error>
        do {
            let built = try batch.builder.build()
            outcome = .success(try await produce(tp, records: built.bytes))
        } catch {
            outcome = .failure(error)
        }
        inFlight.remove(tp)
        bufferedBytes -= batch.bytes
        switch outcome {
        case .success(let baseOffset):
            for (index, waiter) in batch.waiters.enumerated() {
                waiter.resume(returning: RecordMetadata(topic: tp.topic, partition: tp.partition,
                                                        offset: baseOffset < 0 ? -1 : baseOffset + Int64(index)))
            }
        case .failure(let error):
            for waiter in batch.waiters { waiter.resume(throwing: error) }
        }
        let waiting = spaceWaiters
        spaceWaiters = []
        for waiter in waiting { waiter.resume() }
        if batches[tp] != nil { drain(tp) }
        if batches.isEmpty && inFlight.isEmpty {
            let idle = idleWaiters
            idleWaiters = []
            for waiter in idle { waiter.resume() }
        }
    }

    /// One Produce request for one batch, retried on retriable errors with the same sequence.
    private func produce(_ tp: TopicPartitionKey, records: ByteBuffer) async throws -> Int64 {
        var request = ProduceRequest()
        request.acks = configuration.acks
        request.timeoutMs = 30_000
        var topic = ProduceRequest.TopicProduceData()
        topic.name = tp.topic
        var data = ProduceRequest.PartitionProduceData()
        data.index = tp.partition
        data.records = records
        topic.partitionData = [data]
        request.topicData = [topic]
        var attempt = 0
        while true {
            attempt += 1
            if configuration.acks == 0 {
                try await connection.sendWithoutResponse(request)
                return -1
            }
            let response = try await connection.send(request)
            guard let result = response.responses.first?.partitionResponses.first else {
                throw ClientError.protocolViolation("empty Produce response")
            }
            let error = KafkaError(code: result.errorCode)
            if error == .noError || error == .duplicateSequenceNumber { return result.baseOffset }
            if error.isRetriable && attempt <= configuration.retries {
                try? await Task.sleep(for: .milliseconds(100 * attempt))
                continue
            }
            throw ClientError.kafka(error, result.errorMessage)
        }
    }

    private func currentTimeMs() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }
}
