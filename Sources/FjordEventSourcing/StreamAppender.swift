import FjordClient
import FjordCompression
import FjordProtocol
import Foundation
import NIOCore
import Synchronization

/// Sends an event store's appends, sharing Produce requests between concurrent appends.
///
/// Appends wait in a queue per partition. `maxInFlight` (one) Produce request per partition is in
/// flight; each takes the waiting appends (up to `maxBatchBytes`; an append with an expectation
/// never after another of its stream) and writes their events as one record batch, acks=all. The broker checks every record's
/// expected version and refuses the batch if any fails, naming each refused record (KIP-467
/// record errors, one per record): those appends end with their stream's actual version, the
/// others only shared the batch and are sent again at once. So each append is all-or-nothing and independent of the appends
/// it travelled with; appends that race are not ordered among themselves, as with any
/// concurrent writers.
///
/// Every pending append's continuation is resumed exactly once: by `send` when its fate is known,
/// or with the error that ended its request.
final class StreamAppender: Sendable {
    /// What became of one append. `lastRevision` is the revision of its last event when the
    /// appender learnt it (for `.any`/`.exists` appends, from the stream index); nil otherwise.
    enum Outcome: Sendable {
        case appended(firstOffset: Int64, lastRevision: Int64?)
        case conflict(actual: Int64)
    }

    struct PendingAppend: Sendable {
        let stream: String
        let events: [EventData]
        let expected: ExpectedVersion
        let continuation: CheckedContinuation<Outcome, any Error>

        var estimatedBytes: Int { events.reduce(0) { $0 + $1.data.readableBytes + $1.id.utf8.count + $1.type.utf8.count + stream.utf8.count + 64 } }
    }

    private struct PartitionQueue {
        var waiting: [PendingAppend] = []
        var inFlight = 0
    }

    /// The most bytes of events one shared Produce carries (well under `message.max.bytes`).
    static let maxBatchBytes = 512 * 1024
    /// Produce requests in flight per partition. One: the appends that arrive meanwhile make the
    /// next batch (group commit). Measured with tools/bench streams: 1,000 writers 0.65x the
    /// producer's rate with one, 0.59x with two, 0.50x with four; 50 writers 94,832 vs 62,318
    /// appends/s with one vs two (a broker handles one connection's requests in order, so a
    /// second request only halves the batches).
    static let maxInFlight = 1

    let topic: String
    let cluster: KafkaCluster
    private let queues = Mutex<[Int32: PartitionQueue]>([:])

    init(topic: String, cluster: KafkaCluster) {
        self.topic = topic
        self.cluster = cluster
    }

    func submit(_ append: PendingAppend, partition: Int32) {
        let start = queues.withLock { queues in
            queues[partition, default: PartitionQueue()].waiting.append(append)
            guard queues[partition]!.inFlight < Self.maxInFlight else { return false }
            queues[partition]!.inFlight += 1
            return true
        }
        if start { Task { await self.drain(partition) } }
    }

    /// Sends the partition's waiting appends, a batch at a time, until none is left. Appends a
    /// refused batch only carried along are sent again at once, by themselves (each such round
    /// settles at least one append, so it ends), rather than queued behind new arrivals that
    /// could keep refusing them.
    private func drain(_ partition: Int32) async {
        while let group = takeBatch(partition) {
            var retry = await send(group, partition: partition)
            while !retry.isEmpty {
                retry = await send(retry, partition: partition)
            }
        }
    }

    /// The next appends to send together, or nil (and one sender fewer) when none is waiting:
    /// in arrival order, up to `maxBatchBytes`, and no append with an expectation after another
    /// append of its stream, so that no append's check depends on a neighbour that might yet be
    /// refused (`.any` appends, which nothing refuses, may share a stream); the others wait for
    /// the next batch in their order.
    private func takeBatch(_ partition: Int32) -> [PendingAppend]? {
        queues.withLock { queues in
            guard !queues[partition]!.waiting.isEmpty else {
                queues[partition]!.inFlight -= 1
                return nil
            }
            var batch: [PendingAppend] = []
            var left: [PendingAppend] = []
            var streams = Set<String>()
            var bytes = 0
            for append in queues[partition]!.waiting {
                let fits = batch.isEmpty || bytes + append.estimatedBytes <= Self.maxBatchBytes
                let independent = append.expected == .any || !streams.contains(append.stream)
                if fits && independent {
                    streams.insert(append.stream)
                    batch.append(append)
                    bytes += append.estimatedBytes
                } else {
                    left.append(append)
                }
            }
            queues[partition]!.waiting = left
            return batch
        }
    }

    /// One Produce (acks=all) carrying `group`'s events as one record batch. Resumes the appends
    /// that landed or conflicted; returns the ones to send again.
    private func send(_ group: [PendingAppend], partition: Int32) async -> [PendingAppend] {
        func fail(_ error: any Error) -> [PendingAppend] {
            for append in group { append.continuation.resume(throwing: error) }
            return []
        }
        let request: ProduceRequest
        var firstRecord: [Int] = []  // each append's first record index in the batch
        do {
            var builder = RecordBatchBuilder(attributes: RecordBatchAttributes(compression: .none))
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            for append in group {
                firstRecord.append(Int(builder.recordCount))
                Self.encode(append, into: &builder, timestamp: now)
            }
            request = Self.produceRequest(topic: topic, partition: partition, records: try builder.build().bytes)
        } catch {
            return fail(error)
        }
        var attempts = 0
        while true {
            attempts += 1
            let response: ProduceResponse
            do {
                response = try await cluster.leader(topic: topic, partition: partition).connection.send(request)
            } catch let error as ClientError where error.isRetriable && attempts < 5 {
                await cluster.invalidate(topic: topic)
                try? await Task.sleep(for: .milliseconds(100 * attempts))
                continue
            } catch {
                return fail(error)
            }
            guard let result = response.responses.first?.partitionResponses.first else {
                return fail(EventStoreError.broker("empty Produce response"))
            }
            let error = KafkaError(code: result.errorCode)
            switch error {
            case .noError:
                // Exact and no-stream appends know their version; the others' revisions come from
                // the stream index, one request for the whole batch, off the sending loop.
                var unknown: [(append: PendingAppend, firstOffset: Int64)] = []
                for (append, first) in zip(group, firstRecord) {
                    let firstOffset = result.baseOffset + Int64(first)
                    switch append.expected {
                    case .exact, .noStream: append.continuation.resume(returning: .appended(firstOffset: firstOffset, lastRevision: nil))
                    case .any, .exists: unknown.append((append, firstOffset))
                    }
                }
                if !unknown.isEmpty { Task { await self.resolveRevisions(unknown, partition: partition) } }
                return []
            case .invalidRecord:
                // Each refused record names its stream's actual version; an append is refused
                // when one of its records is, the others only shared the batch.
                var actual: [Int: Int64] = [:]
                for recordError in result.recordErrors {
                    if let message = recordError.batchIndexErrorMessage, let version = EventStore.actualVersion(in: message) {
                        actual[Int(recordError.batchIndex)] = version
                    }
                }
                guard !actual.isEmpty else {
                    return fail(EventStoreError.broker(result.recordErrors.first?.batchIndexErrorMessage ?? result.errorMessage ?? error.message))
                }
                let refused = zip(group, firstRecord).map { append, first in
                    (first..<first + append.events.count).lazy.compactMap { actual[$0] }.first
                }
                guard refused.contains(where: { $0 != nil }) else {
                    // Record errors that name none of our records: resending would not help.
                    return fail(EventStoreError.broker(result.recordErrors.first?.batchIndexErrorMessage ?? error.message))
                }
                var retry: [PendingAppend] = []
                for (append, version) in zip(group, refused) {
                    if let version {
                        append.continuation.resume(returning: .conflict(actual: version))
                    } else {
                        retry.append(append)
                    }
                }
                return retry
            case let error where error.isRetriable && attempts < 5:
                await cluster.invalidate(topic: topic)
                try? await Task.sleep(for: .milliseconds(100 * attempts))
            default:
                return fail(EventStoreError.broker("\(error.name): \(result.errorMessage ?? error.message)"))
            }
        }
    }

    /// Resumes landed appends with their last event's revision, asked of the broker's stream
    /// index in one `FjordStreamRevisions` request per 10,000; nil when it cannot tell (the
    /// caller then reads the stream's index itself).
    private func resolveRevisions(_ appends: [(append: PendingAppend, firstOffset: Int64)], partition: Int32) async {
        for start in stride(from: 0, to: appends.count, by: 10_000) {
            let chunk = appends[start..<Swift.min(start + 10_000, appends.count)]
            var request = FjordStreamRevisionsRequest()
            request.topic = topic
            request.partition = partition
            request.events = chunk.map { pending in
                var event = FjordStreamRevisionsRequest.EventPosition()
                event.streamKey = ByteBuffer(string: pending.append.stream)
                event.offset = pending.firstOffset + Int64(pending.append.events.count - 1)
                return event
            }
            let revisions: [Int64]
            do {
                let response = try await cluster.leader(topic: topic, partition: partition).connection.send(request)
                revisions = response.errorCode == 0 && response.revisions.count == chunk.count ? response.revisions : []
            } catch {
                revisions = []
            }
            for (index, pending) in chunk.enumerated() {
                let revision = index < revisions.count && revisions[index] >= 0 ? revisions[index] : nil
                pending.append.continuation.resume(returning: .appended(firstOffset: pending.firstOffset, lastRevision: revision))
            }
        }
    }

    /// An append's events as records: ids, types, metadata and expected versions as headers.
    static func encode(_ append: PendingAppend, into builder: inout RecordBatchBuilder, timestamp: Int64) {
        let key = ByteBuffer(string: append.stream)
        for (index, event) in append.events.enumerated() {
            var headers = [
                RecordHeader(key: EventStore.eventIDHeader, value: ByteBuffer(string: event.id)),
                RecordHeader(key: EventStore.eventTypeHeader, value: ByteBuffer(string: event.type)),
            ]
            for (key, value) in event.metadata.sorted(by: { $0.key < $1.key }) {
                headers.append(RecordHeader(key: EventStore.metadataPrefix + key, value: ByteBuffer(string: value)))
            }
            // The first event carries the caller's expectation; the others follow it exactly.
            let expectation: String
            switch append.expected {
            case .exact(let n): expectation = String(n + Int64(index))
            case .noStream: expectation = index == 0 ? "no-stream" : String(index - 1)
            default: expectation = index == 0 ? append.expected.description : "any"
            }
            headers.append(RecordHeader(key: EventStore.expectedVersionHeader, value: ByteBuffer(string: expectation)))
            builder.append(timestamp: timestamp, key: key, value: event.data, headers: headers)
        }
    }

    static func produceRequest(topic: String, partition: Int32, records: ByteBuffer) -> ProduceRequest {
        var request = ProduceRequest()
        request.acks = -1
        request.timeoutMs = 30_000
        var topicData = ProduceRequest.TopicProduceData()
        topicData.name = topic
        var partitionData = ProduceRequest.PartitionProduceData()
        partitionData.index = partition
        partitionData.records = records
        topicData.partitionData = [partitionData]
        request.topicData = [topicData]
        return request
    }
}
