#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import FjordProtocol
import NIOCore
import SystemPackage

/// What one cleaning pass did.
public struct CleanerStats: Sendable, Equatable {
    public var segmentsCleaned = 0
    public var recordsRead = 0
    public var recordsRetained = 0
    public var tombstonesRemoved = 0
    public var bytesBefore: Int64 = 0
    public var bytesAfter: Int64 = 0
}

/// Log compaction for `cleanup.policy=compact` (Kafka's `LogCleaner`): keeps the latest record
/// of each key in the closed segments below the high watermark, at its original offset.
///
/// One pass: (1) build a map key → latest offset over the cleanable segments (closed, below the
/// high watermark, older than `min.compaction.lag.ms`); (2) rewrite each of those segments into a
/// scratch directory, keeping a record only if it is its key's latest, and dropping tombstones
/// (null values) whose timestamp is older than `delete.retention.ms`; rewritten batches keep
/// their base offset, last offset delta, producer fields and codec; batches left empty are
/// dropped; (3) swap the cleaned segments in crash-safely (`.swap` files, see `LocalLog`).
/// The active segment is never cleaned, so records there are never removed, and keys superseded
/// only there stay until it rolls.
///
/// Limitation: the key map holds every distinct key of the cleanable range in memory (Kafka
/// bounds it with `log.cleaner.dedupe.buffer.size` and cleans in several passes).
public enum LogCleaner {
    /// Cleans `log` once; returns what was done (zero segments when nothing is cleanable).
    public static func clean(_ log: LocalLog, nowMs: Int64) throws(StorageError) -> CleanerStats {
        var stats = CleanerStats()
        let (closed, config) = log.closedSegmentsForCleaning()
        guard config.compactEnabled else { return stats }
        var cleanable: [LocalLog.SegmentSnapshot] = []
        for segment in closed {
            if config.minCompactionLagMs > 0 && nowMs - segment.largestTimestamp < config.minCompactionLagMs { break }
            cleanable.append(segment)
        }
        guard !cleanable.isEmpty else { return stats }

        // 1. Latest offset per key.
        var latest: [ByteBuffer: Int64] = [:]
        for segment in cleanable {
            try forEachRecord(in: segment) { _, record in
                if let key = record.key { latest[key] = record.offset }
            }
        }

        // 2. Rewrite each segment into a scratch directory.
        let scratch = log.directory.appending("cleaning")
        removeDirectory(scratch)
        mkdir(scratch.string, 0o755)
        defer { removeDirectory(scratch) }
        var rewritten: [LocalLog.SegmentSnapshot] = []
        for segment in cleanable {
            let output = try LogSegment(directory: scratch, baseOffset: segment.baseOffset, config: config, nowMs: nowMs, preallocateIndexes: true)
            var changed = false
            try forEachBatch(in: segment) { (batch) throws(StorageError) in
                if batch.attributes.isControl {
                    try output.append(batch, assignedBaseOffset: batch.baseOffset, leaderEpoch: batch.partitionLeaderEpoch)
                    return
                }
                var builder = RecordBatchBuilder(baseOffset: batch.baseOffset, attributes: batch.attributes)
                builder.partitionLeaderEpoch = batch.partitionLeaderEpoch
                builder.producerID = batch.producerID
                builder.producerEpoch = batch.producerEpoch
                builder.baseSequence = batch.baseSequence
                builder.lastOffsetDeltaOverride = batch.lastOffsetDelta
                var kept = 0
                var total = 0
                do {
                    var iterator = try batch.makeRecordIterator()
                    while let record = try iterator.next() {
                        total += 1
                        guard let key = record.key, latest[key] == record.offset else { continue }
                        if record.value == nil && nowMs - record.timestamp > config.deleteRetentionMs {
                            stats.tombstonesRemoved += 1
                            continue
                        }
                        builder.append(offsetDelta: record.offsetDelta, timestamp: record.timestamp, key: record.key,
                                       value: record.value, headers: record.headers)
                        kept += 1
                    }
                } catch {
                    throw StorageError.corruptRecord("cleaning \(log.topicPartition) at \(batch.baseOffset): \(error)")
                }
                stats.recordsRead += total
                stats.recordsRetained += kept
                if kept == total {
                    try output.append(batch, assignedBaseOffset: batch.baseOffset, leaderEpoch: batch.partitionLeaderEpoch)
                    return
                }
                changed = true
                guard kept > 0 else { return }
                do {
                    let cleaned = try builder.build()
                    try output.append(cleaned, assignedBaseOffset: batch.baseOffset, leaderEpoch: batch.partitionLeaderEpoch)
                } catch let error as StorageError {
                    throw error
                } catch {
                    throw StorageError.corruptRecord("re-encoding \(log.topicPartition) at \(batch.baseOffset): \(error)")
                }
            }
            stats.bytesBefore += segment.size
            if changed {
                try output.onBecomeInactive()
                try output.flush()
                output.close()
                stats.bytesAfter += output.size
                rewritten.append(segment)
            } else {
                output.close()
                output.deleteFiles()
                stats.bytesAfter += segment.size
            }
        }
        // 3. Swap in.
        stats.segmentsCleaned = try log.swapInCleanedSegments(rewritten, cleanedDirectory: scratch, nowMs: nowMs)
        return stats
    }

    /// Calls `body` for every batch of a segment, one `pread` per batch into a reused buffer.
    static func forEachBatch(in segment: LocalLog.SegmentSnapshot, _ body: (RecordBatch) throws(StorageError) -> Void) throws(StorageError) {
        var position: Int64 = 0
        var buffer = ByteBuffer()
        while position + Int64(RecordBatch.logOverhead) <= segment.size {
            buffer.clear()
            guard try segment.file.read(at: position, count: RecordBatch.logOverhead, into: &buffer) == RecordBatch.logOverhead,
                let length = buffer.getInteger(at: 8, endianness: .big, as: Int32.self),
                Int(length) >= RecordBatch.headerSize - RecordBatch.logOverhead,
                position + Int64(length) + Int64(RecordBatch.logOverhead) <= segment.size
            else {
                throw StorageError.corruptRecord("\(segment.file.path.string) at \(position): bad batch length")
            }
            _ = try segment.file.read(at: position + Int64(RecordBatch.logOverhead), count: Int(length), into: &buffer)
            do {
                let batch = try RecordBatch(bytes: buffer)
                try batch.validate()
                try body(batch)
            } catch let error as StorageError {
                throw error
            } catch {
                throw StorageError.corruptRecord("\(segment.file.path.string) at \(position): \(error)")
            }
            position += Int64(length) + Int64(RecordBatch.logOverhead)
        }
    }

    static func forEachRecord(in segment: LocalLog.SegmentSnapshot, _ body: (RecordBatch, Record) -> Void) throws(StorageError) {
        try forEachBatch(in: segment) { (batch) throws(StorageError) in
            guard !batch.attributes.isControl else { return }
            do {
                var iterator = try batch.makeRecordIterator()
                while let record = try iterator.next() { body(batch, record) }
            } catch {
                throw StorageError.corruptRecord("\(segment.file.path.string) batch \(batch.baseOffset): \(error)")
            }
        }
    }

    static func removeDirectory(_ path: FilePath) {
        if let names = try? LocalLog.listDirectory(path) {
            for name in names { unlink(path.appending(name).string) }
        }
        rmdir(path.string)
    }
}
