#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
public import FjordCompression
public import FjordProtocol
import CoreMetrics
import Logging
public import NIOCore
public import NIOPosix

/// Where a record landed.
public struct RecordMetadata: Sendable, Equatable {
    public var topic: String
    public var partition: Int32
    /// The record's offset; -1 with acks=0, where the broker does not answer.
    public var offset: Int64
}

/// A Kafka producer: per-partition batching with `linger.ms`/`batch.size`, compression,
/// routing to each partition's leader, idempotence, retries and bounded buffering.
///
/// Guarantees, per partition:
/// - **Order.** Batches leave in the order their records were sent. Up to
///   `max.in.flight.requests.per.connection` batches are pipelined on the leader's connection
///   (the broker answers a connection's requests in order); after a retriable failure every
///   unacknowledged batch is resent in its original order.
/// - **No duplicates with idempotence** (the default): each batch carries the producer id,
///   epoch and its first sequence number; a resent batch keeps them, and the broker answers a
///   duplicate with the original offsets. A batch the broker refuses (e.g. INVALID_RECORD) is
///   failed and the sequences of the batches behind it are renumbered, so they still append.
/// - **Bounded memory.** `send`/`produce` suspend while unacknowledged records hold
///   `buffer.memory` bytes.
/// - **Bounded time.** A record fails with `ClientError.timeout` once `delivery.timeout.ms`
///   has passed since it was sent; a batch whose fate is unknown after a timeout makes its
///   partition continue under a fresh producer id, so the sequences never collide.
///
/// Keyed records go to Kafka's murmur2 partition; records without a key stick to one partition
/// until its batch is closed (KIP-480).
public actor KafkaProducer {
    public nonisolated let configuration: ProducerConfiguration
    nonisolated let cluster: KafkaCluster
    private let metrics: ProducerMetrics
    private let ownsCluster: Bool
    private var logger: Logger { configuration.client.logger }

    private var producerID: Int64 = RecordBatch.noProducerID
    private var producerEpoch: Int16 = RecordBatch.noProducerEpoch
    private var partitions: [TopicPartition: PartitionState] = [:]
    private var partitionCounts: [String: Int32] = [:]
    private var stickyPartition: [String: Int32] = [:]
    private var bufferedBytes = 0
    private var spaceWaiters: [CheckedContinuation<Void, Never>] = []
    private var idleWaiters: [CheckedContinuation<Void, Never>] = []
    private var nextBatchID: UInt64 = 0
    private var closed = false

    /// How a record's outcome is reported.
    enum Waiter {
        case continuation(CheckedContinuation<RecordMetadata, any Error>)
        case callback(@Sendable (Result<RecordMetadata, any Error>) -> Void)
        case none
    }

    struct PendingBatch {
        let id: UInt64
        var builder: RecordBatchBuilder
        var waiters: [Waiter] = []
        var bytes = 0
        let createdAt: ContinuousClock.Instant
        /// Set when the batch first goes out; kept for every resend.
        var producerID: Int64 = RecordBatch.noProducerID
        var producerEpoch: Int16 = RecordBatch.noProducerEpoch
        var baseSequence: Int32 = RecordBatch.noSequence
        var built: ByteBuffer? = nil
    }

    struct PartitionState {
        /// The batch records are being added to.
        var open: PendingBatch? = nil
        /// Closed batches, oldest first, waiting for the sender.
        var ready = CircularBuffer<PendingBatch>()
        var senderRunning = false
        var inFlightCount = 0
        /// This partition's producer id and next sequence (a partition moves to a new id after
        /// a batch's fate became unknown).
        var producerID: Int64 = RecordBatch.noProducerID
        var producerEpoch: Int16 = RecordBatch.noProducerEpoch
        var nextSequence: Int32 = 0
    }

    init(configuration: ProducerConfiguration, cluster: KafkaCluster, ownsCluster: Bool) {
        self.configuration = configuration
        self.cluster = cluster
        self.ownsCluster = ownsCluster
        self.metrics = ProducerMetrics(clientID: configuration.client.clientID)
    }

    /// Connects to the cluster and, with idempotence, obtains a producer id.
    public static func connect(_ configuration: ProducerConfiguration,
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> KafkaProducer {
        try configuration.validate()
        let cluster = try await KafkaCluster.connect(configuration.client, group: group)
        let producer = KafkaProducer(configuration: configuration, cluster: cluster, ownsCluster: true)
        do {
            if configuration.idempotence { try await producer.initProducerID() }
        } catch {
            await cluster.close()
            throw error
        }
        return producer
    }

    private func initProducerID() async throws {
        (producerID, producerEpoch) = try await newProducerID()
    }

    private func newProducerID() async throws -> (Int64, Int16) {
        var request = InitProducerIdRequest()
        request.transactionalId = nil
        request.transactionTimeoutMs = 60_000
        request.producerId = -1
        request.producerEpoch = -1
        var backoff = ExponentialBackoff(baseMs: configuration.client.retryBackoffMs, maxMs: configuration.client.retryBackoffMaxMs)
        let deadline = ContinuousClock.now + .milliseconds(configuration.deliveryTimeoutMs)
        while true {
            do {
                let response = try await cluster.anyConnection().send(request)
                let error = KafkaError(code: response.errorCode)
                guard error == .noError else { throw ClientError.kafka(error, "InitProducerId") }
                return (response.producerId, response.producerEpoch)
            } catch let error as ClientError where error.isRetriable && ContinuousClock.now < deadline {
                backoff.recordFailure()
                try await Task.sleep(for: .milliseconds(backoff.delayMs()))
            }
        }
    }

    // MARK: Sending

    /// Sends one record and returns where it landed once the broker acknowledged it (with
    /// acks=0: once it was written to the connection, with offset -1). Suspends while
    /// `buffer.memory` is full.
    public func send(topic: String, key: ByteBuffer? = nil, value: ByteBuffer?, headers: [RecordHeader] = [],
                     partition: Int32? = nil, timestamp: Int64? = nil) async throws -> RecordMetadata {
        let (tp, size) = try await admit(topic: topic, key: key, value: value, headers: headers, partition: partition)
        return try await withCheckedThrowingContinuation { continuation in
            append(tp, size: size, timestamp: timestamp, key: key, value: value, headers: headers, waiter: .continuation(continuation))
        }
    }

    /// Queues one record and returns as soon as it is buffered (suspending only while
    /// `buffer.memory` is full); `onDelivery`, if given, is called with the outcome. This is
    /// librdkafka's `produce` + delivery report: the fast path for many records. `flush()`
    /// waits for every queued record.
    public func produce(topic: String, key: ByteBuffer? = nil, value: ByteBuffer?, headers: [RecordHeader] = [],
                        partition: Int32? = nil, timestamp: Int64? = nil,
                        onDelivery: (@Sendable (Result<RecordMetadata, any Error>) -> Void)? = nil) async throws {
        let (tp, size) = try await admit(topic: topic, key: key, value: value, headers: headers, partition: partition)
        append(tp, size: size, timestamp: timestamp, key: key, value: value, headers: headers,
               waiter: onDelivery.map { .callback($0) } ?? .none)
    }

    /// Waits for buffer space and chooses the partition.
    private func admit(topic: String, key: ByteBuffer?, value: ByteBuffer?, headers: [RecordHeader],
                       partition explicit: Int32?) async throws -> (TopicPartition, Int) {
        if closed { throw ClientError.closed }
        var size = (key?.readableBytes ?? 0) + (value?.readableBytes ?? 0) + 24
        for header in headers { size += header.key.utf8.count + (header.value?.readableBytes ?? 0) + 4 }
        guard size <= configuration.maxRequestSize else {
            throw ClientError.kafka(.messageTooLarge, "record of \(size) bytes exceeds max.request.size \(configuration.maxRequestSize)")
        }
        while bufferedBytes + size > configuration.bufferMemory && bufferedBytes > 0 {
            await withCheckedContinuation { spaceWaiters.append($0) }
            if closed { throw ClientError.closed }
        }
        let partition = try await choosePartition(topic: topic, key: key, explicit: explicit)
        return (TopicPartition(topic: topic, partition: partition), size)
    }

    private func append(_ tp: TopicPartition, size: Int, timestamp: Int64?, key: ByteBuffer?, value: ByteBuffer?,
                        headers: [RecordHeader], waiter: Waiter) {
        bufferedBytes += size
        var state = partitions[tp] ?? PartitionState()
        // Close the open batch first if this record would overflow it (Kafka's RecordAccumulator).
        if let open = state.open, open.bytes > 0, open.bytes + size > configuration.batchSize {
            state.ready.append(open)
            state.open = nil
        }
        var fresh = false
        if state.open == nil {
            nextBatchID &+= 1
            let builder = RecordBatchBuilder(attributes: RecordBatchAttributes(compression: configuration.compression),
                                             initialCapacity: Swift.min(configuration.batchSize, 1 << 20) + 64)
            state.open = PendingBatch(id: nextBatchID, builder: builder, createdAt: .now)
            fresh = true
        }
        state.open!.builder.append(timestamp: timestamp ?? currentTimeMs(), key: key, value: value, headers: headers)
        state.open!.waiters.append(waiter)  // one per record: its index is the offset delta
        state.open!.bytes += size
        let full = state.open!.bytes >= configuration.batchSize || configuration.lingerMs == 0
        let openID = state.open!.id
        if full {
            state.ready.append(state.open!)
            state.open = nil
        }
        partitions[tp] = state
        if full || !state.ready.isEmpty {
            if stickyPartition[tp.topic] == tp.partition { stickyPartition[tp.topic] = nil }
            startSender(tp)
        }
        if fresh && !full {
            let linger = configuration.lingerMs
            Task {
                try? await Task.sleep(for: .milliseconds(linger))
                self.lingerExpired(tp, batchID: openID)
            }
        }
    }

    private func lingerExpired(_ tp: TopicPartition, batchID: UInt64) {
        guard var state = partitions[tp], let open = state.open, open.id == batchID else { return }
        state.ready.append(open)
        state.open = nil
        partitions[tp] = state
        if stickyPartition[tp.topic] == tp.partition { stickyPartition[tp.topic] = nil }
        startSender(tp)
    }

    /// Waits until every record sent so far is acknowledged or failed.
    public func flush() async {
        for (tp, var state) in partitions {
            if let open = state.open {
                state.ready.append(open)
                state.open = nil
                partitions[tp] = state
                startSender(tp)
            }
        }
        while partitions.values.contains(where: { $0.open != nil || !$0.ready.isEmpty || $0.senderRunning }) {
            await withCheckedContinuation { idleWaiters.append($0) }
        }
    }

    /// Flushes, then closes the connections. Later sends throw `ClientError.closed`.
    public func close() async {
        await flush()
        closed = true
        let waiting = spaceWaiters
        spaceWaiters = []
        for waiter in waiting { waiter.resume() }
        if ownsCluster { await cluster.close() }
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
        let count = Int32(try await cluster.topic(topic).partitions.count)
        partitionCounts[topic] = count
        return count
    }

    // MARK: The sender

    private func startSender(_ tp: TopicPartition) {
        guard var state = partitions[tp], !state.senderRunning else { return }
        state.senderRunning = true
        partitions[tp] = state
        Task { await self.runSender(tp) }
    }

    /// One sender per partition with ready batches: pipelines up to `maxInFlight` of them to
    /// the leader, completes them in order, and on a retriable failure resends every
    /// unacknowledged batch in order after a backoff.
    private func runSender(_ tp: TopicPartition) async {
        var window = CircularBuffer<PendingBatch>()
        var backoff = ExponentialBackoff(baseMs: configuration.client.retryBackoffMs, maxMs: configuration.client.retryBackoffMaxMs)
        while true {
            // Take new batches into the window.
            while window.count < configuration.maxInFlight, var batch = partitions[tp]?.ready.popFirst() {
                assignSequence(tp, &batch)
                window.append(batch)
            }
            if window.isEmpty { break }
            let outcomes = await sendWindow(tp, &window)
            var retry = false
            var retryError: (any Error)? = nil
            while let outcome = outcomes.first(where: { $0.batchID == window.first?.id }) {
                let batch = window.removeFirst()
                switch outcome.result {
                case .success(let baseOffset):
                    backoff.reset()
                    complete(tp, batch, .success(baseOffset))
                case .failure(let error) where isRetriable(error):
                    window.prepend(batch)
                    retry = true
                    retryError = error
                case .failure(let error):
                    complete(tp, batch, .failure(error))
                    if !(error is CancellationError) { renumber(tp, after: batch, in: &window) }
                }
                if retry { break }
            }
            if retry {
                // Batches that timed out for delivery fail; the fate of a batch that was on the
                // wire is unknown, so the partition continues under a new producer id.
                let now = ContinuousClock.now
                let limit = Duration.milliseconds(configuration.deliveryTimeoutMs)
                if let first = window.first, now - first.createdAt > limit {
                    let expired = window
                    window.removeAll()
                    for batch in expired {
                        complete(tp, batch, .failure(ClientError.timeout(
                            "delivery.timeout.ms expired for \(tp.topic)-\(tp.partition): \(retryError.map { "\($0)" } ?? "")")))
                    }
                    await resetProducerID(tp)
                    continue
                }
                await cluster.invalidate(topic: tp.topic)
                backoff.recordFailure()
                logger.debug("retrying produce", metadata: ["partition": "\(tp.topic)-\(tp.partition)",
                                                            "error": "\(retryError.map { "\($0)" } ?? "")"])
                try? await Task.sleep(for: .milliseconds(backoff.delayMs()))
            }
        }
        partitions[tp]?.senderRunning = false
        if let state = partitions[tp], !state.ready.isEmpty { startSender(tp) }
        wakeIdleWaiters()
    }

    private func isRetriable(_ error: any Error) -> Bool {
        guard let error = error as? ClientError else { return false }
        switch error {
        case .kafka(.outOfOrderSequenceNumber, _): return true  // an earlier batch is being resent
        default: return error.isRetriable
        }
    }

    private struct Outcome {
        var batchID: UInt64
        var result: Result<Int64, any Error>
    }

    /// Sends every batch of the window on the leader's connection (pipelined, in order) and
    /// collects each outcome. All outcomes are awaited, so nothing is left on the wire.
    private func sendWindow(_ tp: TopicPartition, _ window: inout CircularBuffer<PendingBatch>) async -> [Outcome] {
        let connection: BrokerConnection
        do {
            connection = try await cluster.leader(topic: tp.topic, partition: tp.partition).connection
        } catch {
            return window.map { Outcome(batchID: $0.id, result: .failure(error)) }
        }
        var pending: [(UInt64, Result<PendingResponse<ProduceRequest>, any Error>)] = []
        for index in window.indices {
            let records: ByteBuffer
            do {
                if window[index].built == nil { window[index].built = try build(window[index]) }
                records = window[index].built!
            } catch {
                pending.append((window[index].id, .failure(error)))
                continue
            }
            var request = ProduceRequest()
            request.acks = configuration.acks
            request.timeoutMs = Int32(clamping: configuration.client.requestTimeoutMs)
            var topic = ProduceRequest.TopicProduceData()
            topic.name = tp.topic
            var data = ProduceRequest.PartitionProduceData()
            data.index = tp.partition
            data.records = records
            topic.partitionData = [data]
            request.topicData = [topic]
            if configuration.acks == 0 {
                do {
                    try await connection.sendWithoutResponse(request)
                    pending.append((window[index].id, .failure(AcksZero())))
                } catch {
                    pending.append((window[index].id, .failure(error)))
                }
                continue
            }
            pending.append((window[index].id, Result { try connection.submit(request) }))
        }
        var outcomes: [Outcome] = []
        for (id, submitted) in pending {
            switch submitted {
            case .failure(let error) where error is AcksZero:
                outcomes.append(Outcome(batchID: id, result: .success(-1)))
            case .failure(let error):
                outcomes.append(Outcome(batchID: id, result: .failure(error)))
            case .success(let response):
                do {
                    let answer = try await response.response()
                    guard let result = answer.responses.first?.partitionResponses.first else {
                        throw ClientError.protocolViolation("empty Produce response")
                    }
                    let error = KafkaError(code: result.errorCode)
                    if error == .noError || error == .duplicateSequenceNumber {
                        outcomes.append(Outcome(batchID: id, result: .success(result.baseOffset)))
                    } else {
                        var message = result.errorMessage ?? error.message
                        if let first = result.recordErrors.first {
                            message = "record \(first.batchIndex): \(first.batchIndexErrorMessage ?? message)"
                        }
                        outcomes.append(Outcome(batchID: id, result: .failure(ClientError.kafka(error, message))))
                    }
                } catch {
                    outcomes.append(Outcome(batchID: id, result: .failure(error)))
                }
            }
        }
        return outcomes
    }

    private struct AcksZero: Error {}

    private func build(_ batch: PendingBatch) throws -> ByteBuffer {
        var builder = batch.builder
        builder.producerID = batch.producerID
        builder.producerEpoch = batch.producerEpoch
        builder.baseSequence = batch.baseSequence
        return try builder.build().bytes
    }

    private func assignSequence(_ tp: TopicPartition, _ batch: inout PendingBatch) {
        guard configuration.idempotence, batch.baseSequence == RecordBatch.noSequence else { return }
        var state = partitions[tp] ?? PartitionState()
        if state.producerID == RecordBatch.noProducerID {
            state.producerID = producerID
            state.producerEpoch = producerEpoch
        }
        batch.producerID = state.producerID
        batch.producerEpoch = state.producerEpoch
        batch.baseSequence = state.nextSequence
        state.nextSequence = Self.add(state.nextSequence, batch.builder.recordCount)
        partitions[tp] = state
    }

    /// Sequences wrap from Int32.max to 0, as in Kafka.
    private static func add(_ sequence: Int32, _ count: Int32) -> Int32 {
        let next = Int64(sequence) + Int64(count)
        return Int32(truncatingIfNeeded: next > Int64(Int32.max) ? next - Int64(Int32.max) - 1 : next)
    }

    /// A refused batch did not append: the batches behind it take its sequence numbers.
    private func renumber(_ tp: TopicPartition, after failed: PendingBatch, in window: inout CircularBuffer<PendingBatch>) {
        guard configuration.idempotence, failed.baseSequence != RecordBatch.noSequence,
              var state = partitions[tp], state.producerID == failed.producerID else { return }
        var sequence = failed.baseSequence
        for index in window.indices where window[index].producerID == failed.producerID {
            window[index].baseSequence = sequence
            window[index].built = nil
            sequence = Self.add(sequence, window[index].builder.recordCount)
        }
        state.nextSequence = sequence
        partitions[tp] = state
    }

    /// After a batch's fate became unknown: the partition's next batches use a new producer id.
    private func resetProducerID(_ tp: TopicPartition) async {
        guard configuration.idempotence else { return }
        do {
            let (id, epoch) = try await newProducerID()
            partitions[tp]?.producerID = id
            partitions[tp]?.producerEpoch = epoch
            partitions[tp]?.nextSequence = 0
        } catch {
            logger.error("could not obtain a new producer id", metadata: ["error": "\(error)"])
        }
    }

    private func complete(_ tp: TopicPartition, _ batch: PendingBatch, _ result: Result<Int64, any Error>) {
        bufferedBytes -= batch.bytes
        switch result {
        case .success(let baseOffset):
            metrics.records.increment(by: Int64(batch.waiters.count))
            metrics.bytes.increment(by: Int64(batch.bytes))
            metrics.batchRecords.record(batch.waiters.count)
            for (index, waiter) in batch.waiters.enumerated() {
                let metadata = RecordMetadata(topic: tp.topic, partition: tp.partition,
                                              offset: baseOffset < 0 ? -1 : baseOffset + Int64(index))
                switch waiter {
                case .continuation(let continuation): continuation.resume(returning: metadata)
                case .callback(let callback): callback(.success(metadata))
                case .none: break
                }
            }
        case .failure(let error):
            metrics.errors.increment(by: Int64(batch.waiters.count))
            logger.debug("batch failed", metadata: ["partition": "\(tp.topic)-\(tp.partition)", "error": "\(error)"])
            for waiter in batch.waiters {
                switch waiter {
                case .continuation(let continuation): continuation.resume(throwing: error)
                case .callback(let callback): callback(.failure(error))
                case .none: break
                }
            }
        }
        let waiting = spaceWaiters
        spaceWaiters = []
        for waiter in waiting { waiter.resume() }
    }

    private func wakeIdleWaiters() {
        guard !partitions.values.contains(where: { $0.open != nil || !$0.ready.isEmpty || $0.senderRunning }) else { return }
        let idle = idleWaiters
        idleWaiters = []
        for waiter in idle { waiter.resume() }
    }

    private func currentTimeMs() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }
}
