import FjordMetadata
import FjordProtocol
import FjordStorage
import NIOCore

/// Fjord's own stream API (`FjordReadStream`, key 32000): one stream of a
/// `fjord.stream.versioning` topic, found through the partition's stream index instead of a
/// scan. The answer lists (revision, offset) of the events asked for and carries the record
/// batches that hold them (unless the request, from version 1, leaves them out), read below the
/// high watermark; other records in those batches are left to the client to skip.
extension KafkaAPIs {
    /// At most this many events per request, whatever the client asks.
    static let maxStreamEventsPerRead: Int32 = 10_000

    struct StreamRefusal: Error {
        let error: KafkaError
        let message: String
    }

    /// The partition a stream request reads, led here, or why not (with a message for the client).
    func streamPartition(_ topic: String, _ index: Int32) -> Result<Partition, StreamRefusal> {
        leaderPartition(TopicPartition(topic: topic, partition: index), metadata.image).mapError { error in
            StreamRefusal(error: error, message: error == .notLeaderOrFollower
                ? "broker \(replicaManager.nodeID) does not lead \(topic)-\(index)"
                : "no partition \(topic)-\(index) on this broker")
        }
    }

    func handleFjordReadStream(_ request: FjordReadStreamRequest) -> FjordReadStreamResponse {
        var response = FjordReadStreamResponse()
        let partition: Partition
        switch streamPartition(request.topic, request.partition) {
        case .success(let found): partition = found
        case .failure(let refusal):
            (response.errorCode, response.errorMessage) = (refusal.error.code, refusal.message)
            return response
        }
        let limit = Int(Swift.min(Swift.max(0, request.maxEvents), Self.maxStreamEventsPerRead))
        guard let found = partition.log.streamEvents(key: Array(request.streamKey.readableBytesView), from: request.fromRevision,
                                                     limit: limit, forwards: request.forwards) else {
            response.errorCode = KafkaError.invalidRequest.code
            response.errorMessage = "topic \(request.topic) does not version streams (fjord.stream.versioning=false)"
            return response
        }
        let highWatermark = partition.log.highWatermark.offset.rawValue
        var records = ByteBuffer()
        var included: [ClosedRange<Int64>] = []
        var version = found.version
        do {
            for event in found.events {
                guard event.offset < highWatermark else {
                    // Not yet committed: the stream's visible version ends before it.
                    version = Swift.min(version, event.revision - 1)
                    continue
                }
                if request.includeRecords, !included.contains(where: { $0.contains(event.offset) }) {
                    let read = try partition.log.read(from: Offset(event.offset), maxBytes: 1, upperBound: .highWatermark, minOneMessage: true)
                    guard var bytes = try read.records?.readBytes(), let batch = try RecordBatch.read(from: &bytes) else { continue }
                    included.append(batch.baseOffset...batch.lastOffset)
                    records.writeImmutableBuffer(batch.bytes)
                }
                var entry = FjordReadStreamResponse.StreamEvent()
                entry.revision = event.revision
                entry.offset = event.offset
                response.events.append(entry)
            }
        } catch {
            response.errorCode = KafkaError.kafkaStorageError.code
            response.errorMessage = "\(error)"
            response.events = []
            return response
        }
        response.streamVersion = version
        response.records = records
        return response
    }

    /// `FjordStreamRevisions` (key 32001): the revisions of events given by stream and offset,
    /// -1 for one the stream does not have at that offset or that is not yet below the high
    /// watermark.
    func handleFjordStreamRevisions(_ request: FjordStreamRevisionsRequest) -> FjordStreamRevisionsResponse {
        var response = FjordStreamRevisionsResponse()
        let partition: Partition
        switch streamPartition(request.topic, request.partition) {
        case .success(let found): partition = found
        case .failure(let refusal):
            (response.errorCode, response.errorMessage) = (refusal.error.code, refusal.message)
            return response
        }
        guard request.events.count <= Int(Self.maxStreamEventsPerRead) else {
            response.errorCode = KafkaError.invalidRequest.code
            response.errorMessage = "at most \(Self.maxStreamEventsPerRead) events per request, not \(request.events.count)"
            return response
        }
        let highWatermark = partition.log.highWatermark.offset.rawValue
        guard let revisions = partition.log.streamRevisions(request.events.map { (Array($0.streamKey.readableBytesView), $0.offset) }) else {
            response.errorCode = KafkaError.invalidRequest.code
            response.errorMessage = "topic \(request.topic) does not version streams (fjord.stream.versioning=false)"
            return response
        }
        response.revisions = zip(request.events, revisions).map { event, revision in
            event.offset < highWatermark ? revision ?? -1 : -1
        }
        return response
    }
}
