import FjordProtocol
import FjordStorage
import Logging
import NIOCore

/// Replays one `__consumer_offsets` partition into the group coordinator's state (Kafka's
/// `CoordinatorLoaderImpl`): every record from the log start to the high watermark, in offset
/// order.
///
/// Damage never deletes state: a batch that fails its CRC or does not decompress, and a record
/// whose key or value does not decode, is logged with its offset and skipped, so the state
/// before it stands and every record after it is still read. Only a tombstone (a record without
/// a value) deletes. A batch whose header is unreadable ends the load of that partition (its
/// length, hence where the next batch begins, is unknown); the partition's groups then hold what
/// was read before it, and the error is logged.
struct CoordinatorLoader {
    struct Summary: Equatable {
        var records = 0
        var skippedRecords = 0
        var skippedBatches = 0
        var completed = true
    }

    let logger: Logger

    func load(_ log: LocalLog, replay: (CoordinatorRecord) -> Void) -> Summary {
        var summary = Summary()
        let partition = log.topicPartition
        var offset = log.logStartOffset
        while offset < log.highWatermark.offset {
            var bytes: ByteBuffer
            do {
                let read = try log.read(from: offset, maxBytes: 1 << 20, upperBound: .highWatermark, minOneMessage: true)
                guard let slice = read.records else { break }
                bytes = try slice.readBytes()
            } catch {
                logger.error("cannot read the group log; its groups hold what was read so far",
                             metadata: ["partition": "\(partition)", "offset": "\(offset)", "error": "\(error)"])
                summary.completed = false
                return summary
            }
            var next = offset
            while bytes.readableBytes > 0 {
                let batch: RecordBatch
                do {
                    guard let read = try RecordBatch.read(from: &bytes) else { break }
                    batch = read
                } catch {
                    logger.error("unreadable batch header in the group log; its groups hold what was read so far",
                                 metadata: ["partition": "\(partition)", "offset": "\(next)", "error": "\(error)"])
                    summary.completed = false
                    return summary
                }
                next = Offset(batch.nextOffset)
                do {
                    try batch.validate()
                    var records = try batch.makeRecordIterator()
                    while let record = try records.next() {
                        guard record.offset >= offset.rawValue else { continue }
                        do {
                            replay(try CoordinatorRecordSerde.decode(key: record.key, value: record.value))
                            summary.records += 1
                        } catch {
                            summary.skippedRecords += 1
                            logger.warning("skipped an undecodable group record; the state before it stands",
                                           metadata: ["partition": "\(partition)", "offset": "\(record.offset)", "error": "\(error)"])
                        }
                    }
                } catch {
                    summary.skippedBatches += 1
                    logger.error("skipped a damaged batch (from the first record it could not read) in the group log; the state before it stands",
                                 metadata: ["partition": "\(partition)", "offsets": "\(batch.baseOffset)...\(batch.lastOffset)",
                                            "error": "\(error)"])
                }
            }
            guard next > offset else { break }
            offset = next
        }
        return summary
    }
}
