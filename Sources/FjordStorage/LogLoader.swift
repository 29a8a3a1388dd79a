#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import FjordProtocol
import NIOCore
import SystemPackage

/// What opening a log found and fixed.
public struct LogLoadReport: Sendable {
    public var recoveredSegments: Int = 0
    public var truncatedBytes: Int64 = 0
    public var problems: [String] = []
    public var rebuiltIndexes: Int = 0
}

/// Opens a partition directory and recovers it (Kafka's `LogLoader`): the segments, their
/// indexes, the leader epochs and the producer state, consistent with each other and with the
/// log end, before the log serves anything.
///
/// Recovery, in order:
/// 1. Leftovers of interrupted operations: `.deleted`, `.cleaned` and `.tmp` files and the
///    `cleaning/` scratch directory are removed; `.swap` files (a compaction that crashed after
///    writing its replacement) are renamed into place; index files without a log are removed.
/// 2. Segments, in base-offset order. The active (last) one is always scanned batch by batch
///    (length, CRC32C, contiguous offsets) and its indexes rebuilt, since torn writes live there.
///    Closed segments are trusted after an index sanity check when the shutdown was clean;
///    otherwise every segment holding offsets at or after the recovery point is scanned. The
///    first bad batch and everything after it are truncated and reported, and later segments
///    are removed: offsets stay contiguous.
/// 3. Leader epochs: the checkpoint, trimmed to [log start, log end]. When it is missing or
///    damaged, or the shutdown was unclean, the epochs of the batch headers are assigned again.
/// 4. Producer state: the newest snapshot at or below the log end (a damaged one is skipped),
///    then the batch headers after it, in `replayProducerState`, the one replay the log uses
///    (also after a truncation).
///
/// Crash behaviour: loading only removes what recovery proves unreachable or unfinished, so
/// crashing during a load and loading again reaches the same state.
enum LogLoader {
    struct Loaded {
        var segments: LogSegments
        var logStartOffset: Int64
        var recoveryPoint: Int64
        var leaderEpochCache: LeaderEpochFileCache
        var producerState: ProducerStateManager
        var report: LogLoadReport
    }

    static func load(
        directory: FilePath, topicPartition: TopicPartition, config: LogConfig, recoveryPoint: Int64,
        logStartOffset: Int64, cleanShutdown: Bool, nowMs: Int64
    ) throws(StorageError) -> Loaded {
        mkdir(directory.string, 0o755)
        var report = LogLoadReport()
        let baseOffsets = try removeLeftovers(in: directory)
        let epochCache = try LeaderEpochFileCache(path: directory.appending("leader-epoch-checkpoint"))
        let epochCacheWasEmpty = epochCache.entries.isEmpty
        let producerState = ProducerStateManager(directory: directory)
        var segments: [LogSegment] = []
        let maxBatch = Swift.max(config.maxMessageBytes, config.segmentBytes) + RecordBatch.logOverhead
        var needsRecovery = !cleanShutdown
        for (index, base) in baseOffsets.enumerated() {
            let isLast = index == baseOffsets.count - 1
            let segment = try LogSegment(directory: directory, baseOffset: base, config: config, nowMs: nowMs, preallocateIndexes: false)
            let nextBase = isLast ? Int64.max : baseOffsets[index + 1]
            // The active segment is always scanned (mmap + CRC32C: well under a second even for
            // a full 1 GiB segment), since that is where torn writes and tail damage live; closed
            // segments are scanned only past the recovery point after an unclean shutdown.
            var recover = isLast || (needsRecovery && nextBase > recoveryPoint)
            if !recover {
                if try !segment.loadAfterCleanShutdown(maxBatchSize: maxBatch) {
                    report.problems.append("\(topicPartition) segment \(base): index inconsistent with log, rebuilding")
                    report.rebuiltIndexes += 1
                    recover = true
                } else if epochCacheWasEmpty {
                    // No checkpoint to trust: the epochs come from the batch headers.
                    var position: Int64 = 0
                    while let header = try segment.readHeader(at: position) {
                        epochCache.assign(epoch: header.partitionLeaderEpoch, startOffset: header.baseOffset)
                        position += Int64(header.sizeInBytes)
                    }
                }
            }
            if recover {
                report.recoveredSegments += 1
                let result = try segment.recover(maxBatchSize: maxBatch, contiguousOffsets: !config.compactEnabled) { header in
                    if epochCacheWasEmpty || !cleanShutdown {
                        epochCache.assign(epoch: header.partitionLeaderEpoch, startOffset: header.baseOffset)
                    }
                }
                if result.truncatedBytes > 0 {
                    report.truncatedBytes += result.truncatedBytes
                    report.problems.append(
                        "\(topicPartition) segment \(base): truncated \(result.truncatedBytes) bytes at position \(result.validBytes) (offsets from \(segment.nextOffset) on): \(result.problem ?? "incomplete batch")")
                    // Everything after a damaged segment is unreachable: drop later segments.
                    for later in baseOffsets[(index + 1)...] {
                        for suffix in [".log", ".index", ".timeindex"] {
                            unlink(directory.appending(LogSegment.fileName(later, suffix)).string)
                        }
                        report.problems.append("\(topicPartition) segment \(later): removed, it followed a truncated segment")
                    }
                    segments.append(segment)
                    needsRecovery = true
                    break
                }
            }
            segments.append(segment)
        }
        if segments.isEmpty {
            let start = Swift.max(0, logStartOffset)
            segments.append(try LogSegment(directory: directory, baseOffset: start, config: config, nowMs: nowMs, preallocateIndexes: true))
        } else {
            try segments[segments.count - 1].reopenAsActive(maxIndexSize: config.segmentIndexBytes)
        }
        let loaded = LogSegments(segments)
        let logEnd = loaded.logEndOffset
        var start = Swift.max(logStartOffset, loaded.oldest.baseOffset)
        if start > logEnd { start = logEnd }
        epochCache.truncateFromEnd(logEnd)
        epochCache.truncateFromStart(start)
        try epochCache.flush()
        try replayProducerState(producerState, segments: loaded)
        return Loaded(segments: loaded, logStartOffset: start, recoveryPoint: Swift.min(recoveryPoint, logEnd),
                      leaderEpochCache: epochCache, producerState: producerState, report: report)
    }

    /// Step 1 of recovery; returns the base offsets of the segments found, sorted.
    private static func removeLeftovers(in directory: FilePath) throws(StorageError) -> [Int64] {
        for name in try listDirectory(directory) {
            if name == "cleaning" {
                // Scratch space of a compaction that did not finish: its output was never swapped in.
                LogCleaner.removeDirectory(directory.appending(name))
                continue
            }
            if name.hasSuffix(".deleted") || name.hasSuffix(".cleaned") || name.hasSuffix(".tmp") {
                unlink(directory.appending(name).string)
                continue
            }
            if name.hasSuffix(".swap") {
                // A compaction that crashed after writing its replacement: finish the swap.
                let final = String(name.dropLast(".swap".count))
                rename(directory.appending(name).string, directory.appending(final).string)
            }
        }
        var baseOffsets: [Int64] = []
        for name in try listDirectory(directory) where name.hasSuffix(".log") {
            if let offset = Int64(name.dropLast(4)), name.count == 24 {
                baseOffsets.append(offset)
            }
        }
        for name in try listDirectory(directory) where name.hasSuffix(".index") || name.hasSuffix(".timeindex") {
            let stem = name.hasSuffix(".index") ? name.dropLast(6) : name.dropLast(10)
            if let offset = Int64(stem), !baseOffsets.contains(offset) {
                unlink(directory.appending(name).string)
            }
        }
        return baseOffsets.sorted()
    }

    /// Rebuilds producer state up to the log end: the newest valid snapshot at or below it
    /// (snapshots above it are deleted), then every batch header after the snapshot. The one
    /// replay of producer state, used at load and after a truncation.
    static func replayProducerState(_ producerState: ProducerStateManager, segments: LogSegments) throws(StorageError) {
        let end = segments.logEndOffset
        producerState.deleteSnapshots(after: end)
        let snapshot = producerState.loadLatestSnapshot(upTo: end)
        var from = Swift.max(snapshot, segments.oldest.baseOffset)
        if snapshot < segments.oldest.baseOffset { producerState.reset(at: segments.oldest.baseOffset) }
        for segment in segments where segment.nextOffset > from {
            guard let found = try segment.translateOffset(from) else { continue }
            var position = found.position
            while let header = try segment.readHeader(at: position) {
                if header.baseOffset >= from { producerState.update(header) }
                position += Int64(header.sizeInBytes)
            }
            from = segment.nextOffset
        }
    }

    /// Builds the stream index of a `fjord.stream.versioning` log: the checkpoint when it is
    /// valid (not past the log end, not before its start), then the records after it. Returns
    /// the index and how many records were scanned.
    static func rebuildStreamIndex(segments: LogSegments, directory: FilePath, useCheckpoint: Bool) throws(StorageError) -> (StreamIndex, Int64) {
        let first = segments.oldest.baseOffset
        var streams = StreamIndex(startingAt: first)
        if useCheckpoint, let loaded = try StreamIndex.load(from: directory), loaded.nextOffset <= segments.logEndOffset,
            loaded.nextOffset >= first {
            streams = loaded
        }
        var from = streams.nextOffset
        var scanned: Int64 = 0
        for segment in segments where segment.nextOffset > from {
            guard let found = try segment.translateOffset(from) else { continue }
            var position = found.position
            while let header = try segment.readHeader(at: position) {
                if header.baseOffset >= from {
                    var bytes = ByteBuffer()
                    _ = try segment.file.read(at: position, count: header.sizeInBytes, into: &bytes)
                    let batch: RecordBatch
                    do {
                        guard let read = try RecordBatch.read(from: &bytes) else { break }
                        batch = read
                    } catch {
                        throw StorageError.corruptRecord("stream index rebuild at \(header.baseOffset): \(error)")
                    }
                    try streams.index(batch, baseOffset: header.baseOffset)
                    scanned += Int64(header.recordCount)
                }
                position += Int64(header.sizeInBytes)
            }
            from = segment.nextOffset
        }
        streams.advance(to: segments.logEndOffset)
        return (streams, scanned)
    }

    /// The names in a directory, sorted, without `.` and `..`.
    static func listDirectory(_ directory: FilePath) throws(StorageError) -> [String] {
        guard let dir = opendir(directory.string) else {
            throw StorageError.io(operation: "opendir", path: directory.string, errno: Errno(rawValue: errno))
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }
}
