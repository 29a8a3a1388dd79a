import FjordClient
import FjordEventSourcing
import FjordProtocol
import NIOCore
import Synchronization

/// Where a projection runner keeps its read model: the checkpoint it starts each partition
/// from, and one poll's events applied together with the new checkpoint.
///
/// `apply` must be one transaction: the events' effects, the stream versions they reach, and
/// `next` as the partition's checkpoint commit together or not at all. That is the whole of
/// the runner's exactly-once guarantee.
protocol ProjectionStore: Sendable {
    func checkpoint(partition: Int32) async throws -> Int64?
    /// Applies `records` (consecutive records of `partition`) and stores `next`; returns the
    /// stream versions it set. `knownVersions` are versions this follower set earlier.
    func apply(_ records: [ConsumerRecord], partition: Int32, next: Int64, knownVersions: [String: Int64]) async throws -> [String: Int64]
}

/// One partition of a projection: from the store's checkpoint, poll, apply, repeat until
/// cancelled; reports once when it reaches the end it saw at start (`caughtUp`).
enum PartitionFollower {
    static func follow(partition: Int32, topic: String, consumer: KafkaConsumer, store: some ProjectionStore, caughtUp: CaughtUp,
                       counted: @Sendable (Int) async -> Void) async throws {
        let start = try await store.checkpoint(partition: partition)
        let tp = TopicPartition(topic, partition)
        try await consumer.assign([(tp, start.map { .offset(Offset($0)) } ?? .earliest)])
        let end = try await consumer.endOffsets([tp])[tp] ?? 0
        var reportedCaughtUp = false
        var versions: [String: Int64] = [:]
        while !Task.isCancelled {
            let records = try await consumer.poll()
            if !records.isEmpty {
                let touched = try await store.apply(records, partition: partition, next: records.last!.offset.rawValue + 1,
                                                    knownVersions: versions)
                for (stream, version) in touched { versions[stream] = version }
                await counted(records.count)
            }
            if !reportedCaughtUp, (await consumer.position(topic: topic, partition: partition) ?? 0) >= end {
                reportedCaughtUp = true
                await caughtUp.partitionCaughtUp()
            }
        }
    }

    /// Starts following every partition of `topic`: one consumer and one task each, the task
    /// applying into the store `store(partition)` returns. A task ends quietly when cancelled or
    /// its consumer is closed, and reports any other error to `failed` before ending with it.
    /// When a partition cannot be set up, the consumers opened so far are closed and the tasks
    /// cancelled before the error is thrown.
    static func startAll<Store: ProjectionStore>(
        bootstrap: String, projection name: String, topic: String, onCaughtUp: (@Sendable () async -> Void)?,
        store: @Sendable (Int32) async throws -> Store, counted: @escaping @Sendable (Int) async -> Void,
        failed: @escaping @Sendable (any Error) async -> Void
    ) async throws -> (consumers: [KafkaConsumer], tasks: [Task<Void, any Error>]) {
        let probe = try await KafkaConsumer.connect(ConsumerConfiguration(bootstrap: bootstrap, clientID: "fjord-projection"))
        let partitions: [Int32]
        do {
            partitions = try await probe.partitions(of: topic)
            await probe.close()
        } catch {
            await probe.close()
            throw error
        }
        let caughtUp = CaughtUp(remaining: partitions.count, action: onCaughtUp)
        var consumers: [KafkaConsumer] = []
        var tasks: [Task<Void, any Error>] = []
        do {
            for partition in partitions {
                var settings = ConsumerConfiguration(bootstrap: bootstrap, clientID: "fjord-projection-\(name)")
                settings.enableAutoCommit = false
                settings.fetchMaxWaitMs = 200
                settings.maxPollRecords = 5_000
                let consumer = try await KafkaConsumer.connect(settings)
                consumers.append(consumer)
                let partitionStore = try await store(partition)
                tasks.append(Task {
                    do {
                        try await follow(partition: partition, topic: topic, consumer: consumer, store: partitionStore,
                                         caughtUp: caughtUp, counted: counted)
                    } catch is CancellationError {
                    } catch ClientError.closed {
                    } catch {
                        await failed(error)
                        throw error
                    }
                })
            }
        } catch {
            for task in tasks { task.cancel() }
            for consumer in consumers { await consumer.close() }
            throw error
        }
        return (consumers, tasks)
    }

    /// The streams (record keys) of `records`.
    static func streams(_ records: [ConsumerRecord]) -> Set<String> {
        Set(records.compactMap { $0.key.map { String(decoding: $0.readableBytesView, as: UTF8.self) } })
    }

    /// The events of `records` with their stream revisions: each record's key is its stream,
    /// and its revision one past the stream's last (from this batch, `known`, or `lookup`).
    /// Returns the events and the last revision of every stream touched.
    static func events(_ records: [ConsumerRecord], partition: Int32, known: [String: Int64],
                       lookup: (String) throws -> Int64?) rethrows -> ([RecordedEvent], [String: Int64]) {
        var touched: [String: Int64] = [:]
        var events: [RecordedEvent] = []
        events.reserveCapacity(records.count)
        for record in records {
            guard let key = record.key else { continue }
            let stream = String(decoding: key.readableBytesView, as: UTF8.self)
            var version: Int64
            if let current = touched[stream] ?? known[stream] {
                version = current
            } else {
                version = try lookup(stream) ?? -1
            }
            version += 1
            touched[stream] = version
            events.append(EventStore.recorded(headers: record.headers, value: record.value, offset: record.offset.rawValue,
                                              timestamp: record.timestamp, stream: stream, revision: version, partition: partition))
        }
        return (events, touched)
    }
}

/// Calls `action` once every partition has reached the end it saw when it started.
final class CaughtUp: Sendable {
    private let state: Mutex<(remaining: Int, action: (@Sendable () async -> Void)?)>

    init(remaining: Int, action: (@Sendable () async -> Void)?) {
        state = Mutex((remaining, action))
    }

    func partitionCaughtUp() async {
        let fire = state.withLock { s -> (@Sendable () async -> Void)? in
            s.remaining -= 1
            guard s.remaining == 0 else { return nil }
            defer { s.action = nil }
            return s.action
        }
        await fire?()
    }
}

extension ProjectionRunner.Status {
    /// A runner's status from its checkpoints and the topic's end offsets.
    static func measure(projection: String, topic: String, bootstrap: String, positions: [Int32: Int64], applied: Int,
                        startedAt: ContinuousClock.Instant?, rebuilding: Bool) async throws -> ProjectionRunner.Status {
        let admin = try await KafkaAdmin.connect(bootstrap: bootstrap)
        let partitions: [Int32]
        let ends: [Int32: Int64]
        do {
            partitions = try await admin.describeTopics([topic]).first?.partitions.map(\.partition) ?? []
            ends = try await admin.listOffsets(topic, partitions: partitions, spec: .latest).mapValues(\.rawValue)
            await admin.close()
        } catch {
            await admin.close()
            throw error
        }
        let elapsed = startedAt.map { start -> Double in
            let duration = ContinuousClock.now - start
            return Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        } ?? 0
        return ProjectionRunner.Status(
            projection: projection,
            partitions: partitions.map { p in
                let position = positions[p] ?? 0
                return ProjectionRunner.PartitionStatus(partition: p, position: position, lag: Swift.max(0, (ends[p] ?? 0) - position))
            },
            eventsApplied: applied, eventsPerSecond: elapsed > 0 ? Double(applied) / elapsed : 0, rebuilding: rebuilding)
    }
}
