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
    /// Distinct keys in this pass's key map.
    public var mapKeys = 0
    /// The cleaner checkpoint after the pass: records below it are clean.
    public var cleanedThrough: Int64 = 0
    /// When the first tombstone this pass kept (too young to go) may be removed, if any.
    public var nextTombstoneExpiryMs: Int64? = nil
}

/// Log compaction for `cleanup.policy=compact` (Kafka's `LogCleaner`): keeps the latest record
/// of each key in the closed segments below the high watermark, at its original offset.
///
/// One pass: (1) read the dirty part (from the cleaner checkpoint on) of the cleanable segments
/// (closed, below the high watermark, older than `min.compaction.lag.ms`) into a key → latest
/// offset map, until the map's budget (`log.cleaner.dedupe.buffer.size`) is spent: the map then
/// covers [checkpoint, mapEnd); (2) rewrite every cleanable segment that starts below mapEnd into
/// a scratch directory, dropping a record when the map holds a later offset for its key, and
/// tombstones (null values) older than `delete.retention.ms` that nothing in the map supersedes;
/// records from mapEnd on are kept as they are; rewritten batches keep their base offset, last
/// offset delta, producer fields and codec; batches left empty are dropped; (3) swap the cleaned
/// segments in crash-safely (`.swap` files, see `LocalLog`) and move the checkpoint to mapEnd.
/// A log with more keys than one map holds is thus cleaned over several passes, each with
/// bounded memory. The active segment is never cleaned, so records there are never removed, and
/// keys superseded only there stay until it rolls.
public enum LogCleaner {
    /// Kafka's default `log.cleaner.dedupe.buffer.size` (128 MiB).
    public static let defaultDedupeBufferBytes = 128 * 1024 * 1024

    /// Whether `log` has cleanable segments whose dirty part (from the cleaner checkpoint) is at
    /// least `min.cleanable.dirty.ratio` of their bytes (when Kafka's cleaner would pick it), or
    /// a tombstone an earlier pass kept has outlived `delete.retention.ms` (known since that pass;
    /// after a restart, from the next pass on).
    public static func needsCleaning(_ log: LocalLog, nowMs: Int64) -> Bool {
        let (closed, config, firstDirty, _) = log.closedSegmentsForCleaning()
        guard config.compactEnabled else { return false }
        let cleanable = cleanableSegments(closed, config: config, nowMs: nowMs)
        let total = cleanable.reduce(Int64(0)) { $0 + $1.size }
        guard total > 0 else { return false }
        if let due = log.nextTombstoneExpiryMs, nowMs >= due { return true }
        // A segment counts as dirty from the one holding the checkpoint on.
        let dirty = cleanable.filter { $0.nextOffset > firstDirty }.reduce(Int64(0)) { $0 + $1.size }
        return Double(dirty) / Double(total) >= config.minCleanableDirtyRatio
    }

    static func cleanableSegments(_ closed: [LocalLog.SegmentSnapshot], config: LogConfig, nowMs: Int64) -> [LocalLog.SegmentSnapshot] {
        var cleanable: [LocalLog.SegmentSnapshot] = []
        for segment in closed {
            if config.minCompactionLagMs > 0 && nowMs - segment.largestTimestamp < config.minCompactionLagMs { break }
            cleanable.append(segment)
        }
        return cleanable
    }

    /// Cleans `log` once with a key map of at most `dedupeBufferBytes`; returns what was done
    /// (zero segments when nothing changed).
    public static func clean(_ log: LocalLog, nowMs: Int64, dedupeBufferBytes: Int = defaultDedupeBufferBytes) throws(StorageError) -> CleanerStats {
        var stats = CleanerStats()
        let (closed, config, checkpoint, truncations) = log.closedSegmentsForCleaning()
        stats.cleanedThrough = checkpoint
        guard config.compactEnabled else { return stats }
        let cleanable = cleanableSegments(closed, config: config, nowMs: nowMs)
        guard let cleanableEnd = cleanable.last?.nextOffset else { return stats }
        let firstDirty = Swift.min(checkpoint, cleanableEnd)

        // 1. Latest offset per key over [firstDirty, mapEnd).
        var map = OffsetMap(budget: dedupeBufferBytes)
        var mapEnd = cleanableEnd
        for segment in cleanable where segment.nextOffset > firstDirty {
            try forEachRecord(in: segment) { _, record in
                guard record.offset >= firstDirty, record.offset < mapEnd, let key = record.key else { return true }
                guard map.put(key, offset: record.offset) else {
                    mapEnd = record.offset  // the budget is spent: the next pass goes on from here
                    return false
                }
                return true
            }
            if mapEnd < cleanableEnd { break }
        }
        stats.mapKeys = map.count

        // 2. Rewrite each segment that starts below mapEnd into a scratch directory.
        let scratch = log.directory.appending("cleaning")
        removeDirectory(scratch)
        mkdir(scratch.string, 0o755)
        defer { removeDirectory(scratch) }
        var rewritten: [LocalLog.SegmentSnapshot] = []
        for segment in cleanable where segment.baseOffset < mapEnd {
            let output = try LogSegment(directory: scratch, baseOffset: segment.baseOffset, config: config, nowMs: nowMs, preallocateIndexes: true)
            var changed = false
            try forEachBatch(in: segment) { (batch) throws(StorageError) -> Bool in
                if batch.attributes.isControl || batch.baseOffset >= mapEnd {
                    try output.append(batch, assignedBaseOffset: batch.baseOffset, leaderEpoch: batch.partitionLeaderEpoch)
                    return true
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
                        if record.offset < mapEnd {
                            guard let key = record.key else { continue }
                            if let latest = map.latest(key), latest > record.offset { continue }
                            if record.value == nil {
                                // Timestamps are the producer's: clamped, never trapping.
                                if nowMs.clampedMinus(record.timestamp) > config.deleteRetentionMs {
                                    stats.tombstonesRemoved += 1
                                    continue
                                }
                                let expiry = record.timestamp.clampedPlus(config.deleteRetentionMs).clampedPlus(1)
                                stats.nextTombstoneExpiryMs = Swift.min(stats.nextTombstoneExpiryMs ?? expiry, expiry)
                            }
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
                    return true
                }
                changed = true
                guard kept > 0 else { return true }
                do {
                    let cleaned = try builder.build()
                    try output.append(cleaned, assignedBaseOffset: batch.baseOffset, leaderEpoch: batch.partitionLeaderEpoch)
                } catch let error as StorageError {
                    throw error
                } catch {
                    throw StorageError.corruptRecord("re-encoding \(log.topicPartition) at \(batch.baseOffset): \(error)")
                }
                return true
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
        // 3. Swap in and move the checkpoint past what the map covered, unless the log was
        //    truncated meanwhile (then the pass is dropped; the next one starts afresh).
        guard let swapped = try log.swapInCleanedSegments(rewritten, cleanedDirectory: scratch, cleanedThrough: mapEnd,
                                                          truncations: truncations, nowMs: nowMs) else {
            return CleanerStats(cleanedThrough: log.cleanerCheckpoint.rawValue)
        }
        stats.segmentsCleaned = swapped
        stats.cleanedThrough = mapEnd
        log.nextTombstoneExpiryMs = stats.nextTombstoneExpiryMs
        return stats
    }

    /// Calls `body` for every batch of a segment, one `pread` per batch into a reused buffer,
    /// until it returns false.
    static func forEachBatch(in segment: LocalLog.SegmentSnapshot, _ body: (RecordBatch) throws(StorageError) -> Bool) throws(StorageError) {
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
                guard try body(batch) else { return }
            } catch let error as StorageError {
                throw error
            } catch {
                throw StorageError.corruptRecord("\(segment.file.path.string) at \(position): \(error)")
            }
            position += Int64(length) + Int64(RecordBatch.logOverhead)
        }
    }

    /// Calls `body` for every record of a segment's data batches, until it returns false.
    static func forEachRecord(in segment: LocalLog.SegmentSnapshot, _ body: (RecordBatch, Record) -> Bool) throws(StorageError) {
        try forEachBatch(in: segment) { (batch) throws(StorageError) -> Bool in
            guard !batch.attributes.isControl else { return true }
            do {
                var iterator = try batch.makeRecordIterator()
                while let record = try iterator.next() {
                    guard body(batch, record) else { return false }
                }
                return true
            } catch {
                throw StorageError.corruptRecord("\(segment.file.path.string) batch \(batch.baseOffset): \(error)")
            }
        }
    }

    static func removeDirectory(_ path: FilePath) {
        if let names = try? LogLoader.listDirectory(path) {
            for name in names { unlink(path.appending(name).string) }
        }
        rmdir(path.string)
    }
}
