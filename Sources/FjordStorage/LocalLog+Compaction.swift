#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
public import FjordProtocol
import Synchronization
import SystemPackage

/// What the log cleaner (`LogCleaner`) needs of a log: the closed segments it may clean, the
/// cleaner checkpoint, and the crash-safe swap of cleaned segments for the originals.
extension LocalLog {
    /// A closed segment as the cleaner sees it: immutable facts and a file to read.
    struct SegmentSnapshot: Sendable {
        var baseOffset: Int64
        var nextOffset: Int64
        var size: Int64
        var largestTimestamp: Int64
        var file: SegmentFile
    }

    /// The closed segments (never the active one) below the high watermark, the config, and the
    /// cleaner checkpoint (the first offset not yet in a key map; at least the log start).
    func closedSegmentsForCleaning() -> (segments: [SegmentSnapshot], config: LogConfig, firstDirtyOffset: Int64, truncations: Int) {
        locked { s in
            let closed = s.segments.closed.filter { $0.nextOffset <= s.highWatermark }
            return (closed.map {
                SegmentSnapshot(baseOffset: $0.baseOffset, nextOffset: $0.nextOffset, size: $0.size,
                                largestTimestamp: $0.largestTimestamp(), file: $0.file)
            }, s.config, Swift.max(s.firstDirtyOffset, s.segments.oldest.baseOffset), s.truncations)
        }
    }

    /// Compacted logs: the first offset the cleaner has not yet read into a key map (records
    /// below it are clean). Kept in the log directory's `cleaner-offset-checkpoint`.
    public var cleanerCheckpoint: Offset {
        Offset(locked { Swift.max($0.firstDirtyOffset, $0.segments.oldest.baseOffset) })
    }

    /// When a tombstone the last cleaning pass kept may be removed (nil: none known).
    public var nextTombstoneExpiryMs: Int64? {
        get { locked { $0.nextTombstoneExpiryMs } }
        set { locked { $0.nextTombstoneExpiryMs = newValue } }
    }

    /// Sets the cleaner checkpoint (from the checkpoint file at open, or after a cleaning pass);
    /// never beyond the log end.
    public func setCleanerCheckpoint(_ offset: Offset) {
        locked { $0.firstDirtyOffset = Swift.min(offset.rawValue, $0.logEndOffset) }
    }

    /// Swaps in cleaned segments written in `cleanedDirectory` (same file names) for the
    /// segments whose files are `originals`, crash-safely: cleaned files are renamed `<name>.swap`
    /// into the partition directory and the directory fsynced (from then on `LogLoader`
    /// completes the swap after a crash); under the log's lock the old segments are closed, the
    /// `.swap` files renamed to their final names and reopened; the directory is fsynced again
    /// after the lock. Segments that retention deleted before the swap began are skipped. Then
    /// the cleaner checkpoint moves to `cleanedThrough`. Returns how many segments were replaced;
    /// nil, with nothing changed, when the log was truncated since the pass began
    /// (`truncations` differs): its segments may be other ones. Truncation, retention and
    /// DeleteRecords wait for a swap in progress (`cleanerSwap`), so none runs in between.
    func swapInCleanedSegments(_ originals: [SegmentSnapshot], cleanedDirectory: FilePath, cleanedThrough: Int64, truncations: Int,
                               nowMs: Int64) throws(StorageError) -> Int? {
        try cleanerSwap.withLock { _ throws(StorageError) -> Int? in
            let live: [SegmentSnapshot]? = locked { s in
                guard !s.closed, s.truncations == truncations else { return nil }
                return originals.filter { original in
                    guard let index = s.segments.index(of: original.file) else { return false }
                    return index < s.segments.count - 1
                }
            }
            guard let live else { return nil }
            let suffixes = [".log", ".index", ".timeindex"]
            for original in live {
                for suffix in suffixes {
                    let name = LogSegment.fileName(original.baseOffset, suffix)
                    let from = cleanedDirectory.appending(name).string
                    let to = directory.appending(name + ".swap").string
                    guard rename(from, to) == 0 else {
                        throw StorageError.io(operation: "rename", path: from, errno: Errno(rawValue: errno))
                    }
                }
            }
            CheckpointFile.syncDirectory(directory)
            let replaced = try locked { (s) throws(StorageError) -> Int in
                // Closed meanwhile: the `.swap` files stay for the next open to complete.
                guard !s.closed else { return 0 }
                var replaced = 0
                for original in live {
                    guard let index = s.segments.index(of: original.file) else { continue }
                    s.segments[index].close()
                    for suffix in suffixes {
                        let final = directory.appending(LogSegment.fileName(original.baseOffset, suffix)).string
                        guard rename(final + ".swap", final) == 0 else {
                            throw StorageError.io(operation: "rename", path: final + ".swap", errno: Errno(rawValue: errno))
                        }
                    }
                    let segment = try LogSegment(directory: directory, baseOffset: original.baseOffset, config: s.config,
                                                 nowMs: nowMs, preallocateIndexes: false)
                    let maxBatch = Swift.max(s.config.maxMessageBytes, s.config.segmentBytes) + RecordBatch.logOverhead
                    if try !segment.loadAfterCleanShutdown(maxBatchSize: maxBatch) {
                        _ = try segment.recover(maxBatchSize: maxBatch, contiguousOffsets: false) { _ in }
                    }
                    s.segments.replace(at: index, with: segment)
                    replaced += 1
                }
                s.firstDirtyOffset = Swift.min(cleanedThrough, s.logEndOffset)
                return replaced
            }
            CheckpointFile.syncDirectory(directory)
            return replaced
        }
    }

}
