#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import FjordCompression
public import FjordProtocol
import CoreMetrics
import Logging
public import NIOCore
public import NIOPosix

/// Counts since the producer connected (`KafkaProducer.statistics()`).
public struct ProducerStatistics: Sendable, Equatable {
    /// Records the broker acknowledged (with acks=0: written to the connection).
    public var recordsDelivered = 0
    /// Records whose delivery failed.
    public var recordsFailed = 0
    /// Batches completed (delivered or failed).
    public var batches = 0
}

/// Where a record landed.
public struct RecordMetadata: Sendable, Equatable {
    public var topic: String
    public var partition: Int32
    /// The record's offset; -1 with acks=0, where the broker does not answer.
    public var offset: Offset
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
    /// Per topic: its partition count (refreshed after `metadata.max.age.ms`), the sticky
    /// partition and the partitions' states, so a record costs one topic lookup, not three.
    private var topics: [String: TopicState] = [:]
    /// The topic of the previous record: consecutive records to one topic skip even that lookup.
    private var lastTopic: TopicState? = nil
    /// Every batch created and not yet completed (`flush` waits for a snapshot of it).
    private var pendingBatches: Set<UInt64> = []
    private var fastPathCount = 0
    private var counters = ProducerStatistics()

    /// What was delivered and what failed so far.
    public func statistics() -> ProducerStatistics { counters }
    private var bufferedBytes = 0
    private var spaceWaiters: [CheckedContinuation<Void, Never>] = []
    private var idleWaiters: [CheckedContinuation<Void, Never>] = []
    private var nextBatchID: UInt64 = 0
    private var closed = false

    /// How a record's outcome is reported.
    enum Waiter {
        case continuation(CheckedContinuation<RecordMetadata, any Error>)
        case callback(@Sendable (Result<RecordMetadata, any Error>) -> Void)
    }

    /// A topic's producer-side state, confined to the actor.
    final class TopicState {
        let name: String
        var partitionCount: Int32? = nil
        var refreshedAt: ContinuousClock.Instant = .now
        /// Records without a key stick to this partition until its batch closes (KIP-480).
        var sticky: Int32? = nil
        /// The partitions' states by index (nil until a record goes there).
        var partitions: [PartitionState?] = []

        init(name: String) { self.name = name }
    }

    struct PendingBatch {
        let id: UInt64
        var builder: RecordBatchBuilder
        /// The records that wait for their outcome, by offset delta; records produced without a
        /// delivery report take no entry.
        var waiters: [(offsetDelta: Int32, waiter: Waiter)] = []
        var recordCount: Int { Int(builder.recordCount) }
        var bytes = 0
        let createdAt: ContinuousClock.Instant
        /// Set when the batch first goes out; kept for every resend.
        var producerID: Int64 = RecordBatch.noProducerID
        var producerEpoch: Int16 = RecordBatch.noProducerEpoch
        var baseSequence: Int32 = RecordBatch.noSequence
        var built: ByteBuffer? = nil
        /// Failed attempts so far (bounded by `retries`).
        var attempts = 0
        /// After renumbering: the sequence after this batch.
        var renumberedNext: Int32? = nil
    }

    /// A partition's accumulator and sender state. A class so that appending to the open batch
    /// mutates it in place (a struct in the dictionary would copy the batch buffer on write);
    /// confined to the actor like every other stored property.
    final class PartitionState {
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
        let headers = configuration.withTraceContext(headers)
        let (tp, size) = try await admit(topic: topic, key: key, value: value, headers: headers, partition: partition)
        return try await withCheckedThrowingContinuation { continuation in
            append(tp, state: state(tp), size: size, timestamp: timestamp, key: key, value: value, headers: headers,
                   waiter: .continuation(continuation))
        }
    }

    /// Queues one record and returns as soon as it is buffered (suspending only while
    /// `buffer.memory` is full); `onDelivery`, if given, is called with the outcome. This is
    /// librdkafka's `produce` + delivery report: the fast path for many records. `flush()`
    /// waits for every queued record.
    ///
    /// Inlined into the caller so that a record that can be queued at once costs one
    /// synchronous call on the actor (`produceNow`), without an async frame of its own.
    @inlinable
    public nonisolated func produce(topic: String, key: ByteBuffer? = nil, value: ByteBuffer?, headers: [RecordHeader] = [],
                                    partition: Int32? = nil, timestamp: Int64? = nil,
                                    onDelivery: (@Sendable (Result<RecordMetadata, any Error>) -> Void)? = nil) async throws {
        if try await produceNow(topic: topic, key: key, value: value, headers: headers, partition: partition,
                                timestamp: timestamp, onDelivery: onDelivery) {
            return
        }
        try await produceWaiting(topic: topic, key: key, value: value, headers: headers, partition: partition,
                                 timestamp: timestamp, onDelivery: onDelivery)
    }

    /// Queues one record if that needs no waiting (room in `buffer.memory`, the topic's
    /// partition count known) and returns true; otherwise queues nothing and returns false.
    public func produceNow(topic: String, key: ByteBuffer? = nil, value: ByteBuffer?, headers: [RecordHeader] = [],
                           partition: Int32? = nil, timestamp: Int64? = nil,
                           onDelivery: (@Sendable (Result<RecordMetadata, any Error>) -> Void)? = nil) throws -> Bool {
        let headers = configuration.instrument == nil ? headers : configuration.withTraceContext(headers)
        guard let (tp, state, size) = try admitNow(topic: topic, key: key, value: value, headers: headers, partition: partition)
        else { return false }
        append(tp, state: state, size: size, timestamp: timestamp, key: key, value: value, headers: headers,
               waiter: onDelivery.map { Waiter.callback($0) })
        return true
    }

    /// `produce` when it has to wait for buffer space or metadata.
    @usableFromInline
    func produceWaiting(topic: String, key: ByteBuffer?, value: ByteBuffer?, headers: [RecordHeader], partition: Int32?,
                        timestamp: Int64?, onDelivery: (@Sendable (Result<RecordMetadata, any Error>) -> Void)?) async throws {
        let headers = configuration.instrument == nil ? headers : configuration.withTraceContext(headers)
        let (tp, size) = try await admit(topic: topic, key: key, value: value, headers: headers, partition: partition)
        append(tp, state: state(tp), size: size, timestamp: timestamp, key: key, value: value, headers: headers,
               waiter: onDelivery.map { Waiter.callback($0) })
    }

    /// `admit` without waiting: nil when it would have to wait (buffer full, metadata unknown).
    private func admitNow(topic: String, key: ByteBuffer?, value: ByteBuffer?, headers: [RecordHeader],
                          partition explicit: Int32?) throws -> (TopicPartition, PartitionState, Int)? {
        if closed { throw ClientError.closed }
        var size = (key?.readableBytes ?? 0) + (value?.readableBytes ?? 0) + 24
        for header in headers { size += header.key.utf8.count + (header.value?.readableBytes ?? 0) + 4 }
        guard bufferedBytes + size <= configuration.bufferMemory, size <= configuration.maxRequestSize else { return nil }
        let topicState: TopicState
        if let last = lastTopic, last.name == topic {
            topicState = last
        } else if let known = topics[topic] {
            topicState = known
            lastTopic = known
        } else {
            return nil
        }
        guard let count = topicState.partitionCount else { return nil }
        // The age check reads the clock once every 1,024 records, not per record.
        fastPathCount &+= 1
        if fastPathCount & 1023 == 0,
           ContinuousClock.now - topicState.refreshedAt >= .milliseconds(configuration.client.metadataMaxAgeMs) {
            return nil
        }
        let partition: Int32
        if let explicit {
            guard explicit >= 0 && explicit < count else { return nil }
            partition = explicit
        } else if let key {
            partition = DefaultPartitioner.partition(forKey: key.readableBytesView, partitions: count)
        } else if let sticky = topicState.sticky, sticky < count {
            partition = sticky
        } else {
            return nil
        }
        let index = Int(partition)
        if index < topicState.partitions.count, let state = topicState.partitions[index] {
            return (TopicPartition(topic: topicState.name, partition: partition), state, size)
        }
        let tp = TopicPartition(topic: topicState.name, partition: partition)
        return (tp, state(tp), size)
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

    private func append(_ tp: TopicPartition, state: PartitionState, size: Int, timestamp: Int64?, key: ByteBuffer?,
                        value: ByteBuffer?, headers: [RecordHeader], waiter: Waiter?) {
        bufferedBytes += size
        // The open batch is moved out of the state while records are added (a unique value:
        // no copy-on-write, and one exclusivity check instead of one per field access).
        var fresh = false
        var batch: PendingBatch
        if var open = state.open.take() {
            if open.bytes > 0, open.bytes + size > configuration.batchSize {
                // This record would overflow it: close it first (Kafka's RecordAccumulator).
                state.ready.append(open)
                open = newBatch()
                fresh = true
            }
            batch = consume open
        } else {
            batch = newBatch()
            fresh = true
        }
        if let waiter { batch.waiters.append((batch.builder.recordCount, waiter)) }
        batch.builder.append(timestamp: timestamp ?? currentTimeMs(), key: key, value: value, headers: headers)
        batch.bytes += size
        // Moved, not copied, back into the state (a copy would retain and release every
        // buffer the batch holds, once per record).
        if batch.bytes >= configuration.batchSize {
            state.ready.append(consume batch)
        } else {
            state.open = consume batch
        }
        if !state.ready.isEmpty || (configuration.lingerMs == 0 && state.open != nil) {
            if state.open == nil { unstick(tp) }
            startSender(tp)
        }
        // Every new open batch gets its linger timer, whether or not the sender is busy.
        if fresh, configuration.lingerMs > 0, let openID = state.open?.id {
            let linger = configuration.lingerMs
            Task {
                try? await Task.sleep(for: .milliseconds(linger))
                self.lingerExpired(tp, batchID: openID)
            }
        }
    }

    private func newBatch() -> PendingBatch {
        nextBatchID &+= 1
        pendingBatches.insert(nextBatchID)
        let builder = RecordBatchBuilder(attributes: RecordBatchAttributes(compression: configuration.compression),
                                         initialCapacity: Swift.min(configuration.batchSize, 16 * 1024) + 64)
        return PendingBatch(id: nextBatchID, builder: builder, createdAt: .now)
    }

    private func state(_ tp: TopicPartition) -> PartitionState {
        if let state = partitions[tp] { return state }
        let state = PartitionState()
        partitions[tp] = state
        let topicState = self.topicState(tp.topic)
        let index = Int(tp.partition)
        if topicState.partitions.count <= index { topicState.partitions += Array(repeating: nil, count: index + 1 - topicState.partitions.count) }
        topicState.partitions[index] = state
        return state
    }

    private func topicState(_ topic: String) -> TopicState {
        if let known = topics[topic] { return known }
        let created = TopicState(name: topic)
        topics[topic] = created
        return created
    }

    /// The partition's batch closed: the next keyless record of its topic picks a new one.
    private func unstick(_ tp: TopicPartition) {
        if let topicState = topics[tp.topic], topicState.sticky == tp.partition { topicState.sticky = nil }
    }

    private func lingerExpired(_ tp: TopicPartition, batchID: UInt64) {
        guard let state = partitions[tp], let open = state.open, open.id == batchID else { return }
        state.ready.append(open)
        state.open = nil
        unstick(tp)
        startSender(tp)
    }

    /// Waits until every record sent before this call is acknowledged or failed (records sent
    /// meanwhile by other tasks do not hold it up).
    public func flush() async {
        for (tp, state) in partitions {
            if let open = state.open {
                state.ready.append(open)
                state.open = nil
                startSender(tp)
            }
        }
        let snapshot = pendingBatches
        while !snapshot.isDisjoint(with: pendingBatches) {
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
        var count = try await partitionCount(topic)
        if let explicit {
            if explicit >= count {
                // Maybe partitions were added since: look again before refusing.
                topics[topic]?.partitionCount = nil
                count = try await partitionCount(topic)
            }
            guard explicit >= 0 && explicit < count else {
                throw ClientError.kafka(.unknownTopicOrPartition, "\(topic)-\(explicit)")
            }
            return explicit
        }
        if let key {
            return DefaultPartitioner.partition(forKey: key.readableBytesView, partitions: count)
        }
        let topicState = self.topicState(topic)
        if let sticky = topicState.sticky, sticky < count { return sticky }
        let chosen = Int32.random(in: 0..<count)
        topicState.sticky = chosen
        return chosen
    }

    /// The topic's partition count, refreshed once older than `metadata.max.age.ms` so
    /// partitions added later are used.
    private func partitionCount(_ topic: String) async throws -> Int32 {
        if let known = topics[topic], let count = known.partitionCount,
           ContinuousClock.now - known.refreshedAt < .milliseconds(configuration.client.metadataMaxAgeMs) {
            return count
        }
        let count = Int32(try await cluster.topic(topic).partitions.count)
        let topicState = self.topicState(topic)
        topicState.partitionCount = count
        topicState.refreshedAt = .now
        return count
    }

    // MARK: The sender

    private func startSender(_ tp: TopicPartition) {
        guard let state = partitions[tp], !state.senderRunning else { return }
        state.senderRunning = true
        Task { await self.runSender(tp) }
    }

    /// The next batch to send: a closed one, or with linger.ms=0 the open one.
    private func nextBatch(_ tp: TopicPartition) -> PendingBatch? {
        guard let state = partitions[tp] else { return nil }
        if let batch = state.ready.popFirst() { return batch }
        if configuration.lingerMs == 0, let open = state.open {
            state.open = nil
            unstick(tp)
            return open
        }
        return nil
    }

    /// One sender per partition with ready batches: a sliding window of up to `maxInFlight`
    /// batches on the leader's connection; a new batch goes out as soon as the oldest is
    /// answered. On a failure every batch still on the wire is awaited, then the window is
    /// settled as a whole (`settle`): with idempotence, batches complete in order and after a
    /// retriable failure every unacknowledged batch is resent in order with its sequences (the
    /// broker answers a resent duplicate with its original offsets); without it, only failed
    /// batches are resent.
    private func runSender(_ tp: TopicPartition) async {
        var inflight = CircularBuffer<(batch: PendingBatch, response: Result<PendingResponse<ProduceRequest>?, any Error>)>()
        var backoff = ExponentialBackoff(baseMs: configuration.client.retryBackoffMs, maxMs: configuration.client.retryBackoffMaxMs)
        var connection: BrokerConnection? = nil
        while true {
            while inflight.count < configuration.maxInFlight, var batch = nextBatch(tp) {
                assignSequence(tp, &batch)
                if connection == nil || connection?.isActive == false {
                    do {
                        connection = try await cluster.leader(topic: tp.topic, partition: tp.partition).connection
                    } catch {
                        inflight.append((batch, .failure(error)))
                        break
                    }
                }
                let response = submit(tp, &batch, on: connection!)
                inflight.append((batch, response))
            }
            guard let oldest = inflight.popFirst() else { break }
            let result = await outcome(oldest.response)
            if case .success(let baseOffset) = result {
                backoff.reset()
                complete(tp, oldest.batch, .success(baseOffset))
                continue
            }
            // A failure: learn the fate of everything still on the wire, then settle the window.
            var window = CircularBuffer<PendingBatch>([oldest.batch])
            var results: [UInt64: Result<Int64, any Error>] = [oldest.batch.id: result]
            while let next = inflight.popFirst() {
                window.append(next.batch)
                results[next.batch.id] = await outcome(next.response)
            }
            connection = nil
            let (kept, retryError) = await settle(tp, window: window, results: results, backoff: &backoff)
            // Kept batches go back to the front of the queue, in order, keeping their sequences.
            if let state = partitions[tp] {
                for batch in kept.reversed() { state.ready.prepend(batch) }
            }
            guard let retryError else { continue }
            let limit = Duration.milliseconds(configuration.deliveryTimeoutMs)
            if let first = kept.first, ContinuousClock.now - first.createdAt > limit {
                // Out of time: fail what is left; its fate is unknown, so a new producer id follows.
                if let state = partitions[tp] {
                    let expired = Set(kept.map(\.id))
                    let failing = state.ready.filter { expired.contains($0.id) }
                    state.ready.removeAll { expired.contains($0.id) }
                    for batch in failing {
                        complete(tp, batch, .failure(ClientError.timeout(
                            "delivery.timeout.ms expired for \(tp.topic)-\(tp.partition): \(retryError)")))
                    }
                }
                if configuration.idempotence { await resetProducerID(tp) }
                continue
            }
            await cluster.invalidate(topic: tp.topic)
            backoff.recordFailure()
            logger.debug("retrying produce", metadata: ["partition": "\(tp.topic)-\(tp.partition)", "error": "\(retryError)"])
            try? await Task.sleep(for: .milliseconds(backoff.delayMs()))
        }
        partitions[tp]?.senderRunning = false
        if let state = partitions[tp], !state.ready.isEmpty || (configuration.lingerMs == 0 && state.open != nil) {
            startSender(tp)
        }
    }

    /// Decides the fate of every batch of a window that saw a failure; returns the batches to
    /// send again (in order) and the first retriable error, if any.
    private func settle(_ tp: TopicPartition, window: CircularBuffer<PendingBatch>, results: [UInt64: Result<Int64, any Error>],
                        backoff: inout ExponentialBackoff) async -> (CircularBuffer<PendingBatch>, (any Error)?) {
        var kept = CircularBuffer<PendingBatch>()
        var retryError: (any Error)? = nil
        var renumberFrom: PendingBatch? = nil
        var resequenceRest = false
        for var batch in window {
            let result = results[batch.id] ?? .failure(ClientError.protocolViolation("no outcome"))
            if let failed = renumberFrom {
                // Behind a refused batch (which did not append): take over its sequences.
                renumber(tp, &batch, after: failed)
                renumberFrom = batch
                kept.append(batch)
                continue
            }
            if resequenceRest {
                // Behind a batch of unknown fate: what failed goes again under the new producer id.
                if case .success(let baseOffset) = result {
                    complete(tp, batch, .success(baseOffset))
                } else {
                    batch.producerID = RecordBatch.noProducerID
                    batch.baseSequence = RecordBatch.noSequence
                    batch.built = nil
                    assignSequence(tp, &batch)
                    kept.append(batch)
                }
                continue
            }
            if retryError != nil && configuration.idempotence {
                // In order: everything behind a failure waits for the resend (a success here
                // comes back as a duplicate with its original offsets).
                kept.append(batch)
                continue
            }
            switch result {
            case .success(let baseOffset):
                backoff.reset()
                complete(tp, batch, .success(baseOffset))
            case .failure(let error) where isRetriable(error) && batch.attempts < configuration.retries:
                batch.attempts += 1
                retryError = retryError ?? error
                kept.append(batch)
            case .failure(let error):
                complete(tp, batch, .failure(error))
                guard configuration.idempotence else { break }
                if Self.refusedWithoutAppend(error) {
                    if let state = partitions[tp], state.producerID == batch.producerID { state.nextSequence = batch.baseSequence }
                    renumberFrom = batch
                } else {
                    // The batch may have been written: continue under a new producer id.
                    await resetProducerID(tp)
                    resequenceRest = true
                }
            }
        }
        return (kept, retryError)
    }

    /// Errors after which Kafka guarantees the batch was not appended, so the batches behind it
    /// can take its sequence numbers.
    static func refusedWithoutAppend(_ error: any Error) -> Bool {
        guard case .kafka(let code, _) = error as? ClientError else { return false }
        switch code {
        case .corruptMessage, .messageTooLarge, .recordListTooLarge, .invalidRecord, .invalidTimestamp,
             .invalidRequiredAcks, .topicAuthorizationFailed, .clusterAuthorizationFailed, .invalidTopicException,
             .unsupportedForMessageFormat, .unsupportedCompressionType, .policyViolation, .invalidRequest:
            return true
        default:
            return false
        }
    }

    private func isRetriable(_ error: any Error) -> Bool {
        guard let error = error as? ClientError else { return false }
        switch error {
        case .kafka(.outOfOrderSequenceNumber, _): return true  // an earlier batch is being resent
        default: return error.isRetriable
        }
    }

    /// Builds (once) and writes one batch to the leader; nil response means acks=0 (no answer).
    private func submit(_ tp: TopicPartition, _ batch: inout PendingBatch,
                        on connection: BrokerConnection) -> Result<PendingResponse<ProduceRequest>?, any Error> {
        let records: ByteBuffer
        do {
            if batch.built == nil { batch.built = try build(batch) }
            records = batch.built!
        } catch {
            return .failure(error)
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
            return Result { try connection.submitWithoutResponse(request) }.map { nil }
        }
        return Result { try connection.submit(request) }
    }

    /// Waits for a submitted batch's answer: its base offset, or why it failed.
    private func outcome(_ submitted: Result<PendingResponse<ProduceRequest>?, any Error>) async -> Result<Int64, any Error> {
        switch submitted {
        case .failure(let error):
            return .failure(error)
        case .success(nil):
            return .success(-1)
        case .success(let response?):
            do {
                let answer = try await response.response()
                guard let result = answer.responses.first?.partitionResponses.first else {
                    throw ClientError.protocolViolation("empty Produce response")
                }
                let error = KafkaError(code: result.errorCode)
                if error == .noError || error == .duplicateSequenceNumber { return .success(result.baseOffset) }
                var message = result.errorMessage ?? error.message
                if let first = result.recordErrors.first {
                    message = "record \(first.batchIndex): \(first.batchIndexErrorMessage ?? message)"
                }
                return .failure(ClientError.kafka(error, message))
            } catch {
                return .failure(error)
            }
        }
    }

    private func build(_ batch: PendingBatch) throws -> ByteBuffer {
        var builder = batch.builder
        builder.producerID = batch.producerID
        builder.producerEpoch = batch.producerEpoch
        builder.baseSequence = batch.baseSequence
        return try builder.build().bytes
    }

    private func assignSequence(_ tp: TopicPartition, _ batch: inout PendingBatch) {
        guard configuration.idempotence, batch.baseSequence == RecordBatch.noSequence else { return }
        let state = self.state(tp)
        if state.producerID == RecordBatch.noProducerID {
            state.producerID = producerID
            state.producerEpoch = producerEpoch
        }
        batch.producerID = state.producerID
        batch.producerEpoch = state.producerEpoch
        batch.baseSequence = state.nextSequence
        state.nextSequence = Self.add(state.nextSequence, batch.builder.recordCount)
    }

    /// Sequences wrap from Int32.max to 0, as in Kafka.
    private static func add(_ sequence: Int32, _ count: Int32) -> Int32 {
        let next = Int64(sequence) + Int64(count)
        return Int32(truncatingIfNeeded: next > Int64(Int32.max) ? next - Int64(Int32.max) - 1 : next)
    }

    /// A batch behind a refused one takes the sequences right after `previous`'s start (the
    /// refused batch's own start for the first one), and the partition's next sequence follows.
    private func renumber(_ tp: TopicPartition, _ batch: inout PendingBatch, after previous: PendingBatch) {
        guard batch.producerID == previous.producerID, let state = partitions[tp] else { return }
        let start = previous.renumberedNext ?? previous.baseSequence
        batch.baseSequence = start
        batch.built = nil
        batch.renumberedNext = Self.add(start, batch.builder.recordCount)
        if state.producerID == batch.producerID { state.nextSequence = batch.renumberedNext! }
    }

    /// After a batch's fate became unknown: the partition's next batches use a new producer id.
    private func resetProducerID(_ tp: TopicPartition) async {
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
        pendingBatches.remove(batch.id)
        counters.batches += 1
        switch result {
        case .success(let baseOffset):
            counters.recordsDelivered += batch.recordCount
            metrics.records.increment(by: Int64(batch.recordCount))
            metrics.bytes.increment(by: Int64(batch.bytes))
            metrics.batchRecords.record(batch.recordCount)
            for (offsetDelta, waiter) in batch.waiters {
                let metadata = RecordMetadata(topic: tp.topic, partition: tp.partition,
                                              offset: baseOffset < 0 ? .none : Offset(baseOffset + Int64(offsetDelta)))
                switch waiter {
                case .continuation(let continuation): continuation.resume(returning: metadata)
                case .callback(let callback): callback(.success(metadata))
                }
            }
        case .failure(let error):
            counters.recordsFailed += batch.recordCount
            metrics.errors.increment(by: Int64(batch.recordCount))
            logger.debug("batch failed", metadata: ["partition": "\(tp.topic)-\(tp.partition)", "error": "\(error)"])
            for (_, waiter) in batch.waiters {
                switch waiter {
                case .continuation(let continuation): continuation.resume(throwing: error)
                case .callback(let callback): callback(.failure(error))
                }
            }
        }
        let waiting = spaceWaiters
        spaceWaiters = []
        for waiter in waiting { waiter.resume() }
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
