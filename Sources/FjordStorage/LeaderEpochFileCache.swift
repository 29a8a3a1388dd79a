#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import SystemPackage

/// Which leader epoch began at which offset (Kafka's `LeaderEpochFileCache`), persisted in the
/// partition directory's `leader-epoch-checkpoint`.
///
/// Invariants: epochs and start offsets are strictly increasing. `assign` records a new epoch when
/// a batch from a newer leader is appended; truncation drops entries past the log end (a follower
/// truncating to the leader's log) or before the log start. `endOffset(for:)` answers
/// OffsetForLeaderEpoch: the start offset of the next higher epoch, or the log end offset.
///
/// File format: Kafka's checkpoint text: `0`, the entry count, then `epoch startOffset` per line.
final class LeaderEpochFileCache {
    struct Entry: Equatable {
        var epoch: Int32
        var startOffset: Int64
    }

    let path: FilePath
    private(set) var entries: [Entry] = [] {
        didSet { if entries != oldValue { dirty = true } }
    }
    /// True when `entries` differ from the file.
    private var dirty = false

    init(path: FilePath) throws(StorageError) {
        self.path = path
        if let text = try CheckpointFile.read(path) {
            do {
                for fields in try CheckpointFile.parseEntries(text, path: path, fieldsPerEntry: 2) {
                    guard let epoch = Int32(fields[0]), let start = Int64(fields[1]) else {
                        throw StorageError.corruptFile(path: path.string, reason: "bad entry \(fields)")
                    }
                    entries.append(Entry(epoch: epoch, startOffset: start))
                }
                dirty = false
            } catch {
                // A damaged checkpoint is rebuilt from the batches' leader epochs during recovery.
                entries = []
            }
        }
    }

    var latestEpoch: Int32? { entries.last?.epoch }

    /// Records that `epoch` starts at `startOffset`, if it is newer than the latest epoch.
    /// Returns true when the cache changed.
    @discardableResult
    func assign(epoch: Int32, startOffset: Int64) -> Bool {
        guard epoch >= 0 else { return false }
        if let last = entries.last {
            if epoch <= last.epoch { return false }
            if startOffset < last.startOffset { return false }
        }
        entries.append(Entry(epoch: epoch, startOffset: startOffset))
        return true
    }

    /// The end offset of `epoch` and the largest epoch ≤ it (Kafka's `endOffsetFor`): the start
    /// offset of the first later epoch, or `logEndOffset` when `epoch` is the latest. Unknown or
    /// too-old epochs answer (-1, -1), as Kafka's UNDEFINED_EPOCH/UNDEFINED_EPOCH_OFFSET.
    func endOffset(for epoch: Int32, logEndOffset: Int64) -> (epoch: Int32, endOffset: Int64) {
        guard let latest = entries.last else { return (-1, -1) }
        if epoch == latest.epoch { return (epoch, logEndOffset) }
        if epoch > latest.epoch { return (-1, -1) }
        guard let first = entries.first, epoch >= first.epoch else { return (-1, -1) }
        var floor = entries[0]
        for (index, entry) in entries.enumerated() {
            if entry.epoch > epoch {
                return (floor.epoch, entries[index].startOffset)
            }
            floor = entry
        }
        return (latest.epoch, logEndOffset)
    }

    /// Drops entries whose start offset is ≥ `endOffset` (log truncated from the end).
    func truncateFromEnd(_ endOffset: Int64) {
        entries.removeAll { $0.startOffset >= endOffset }
    }

    /// Moves the first entry's start up to `startOffset` and drops earlier ones (log start moved).
    func truncateFromStart(_ startOffset: Int64) {
        var kept: [Entry] = []
        for (index, entry) in entries.enumerated() {
            let next = index + 1 < entries.count ? entries[index + 1].startOffset : Int64.max
            if next <= startOffset { continue }
            kept.append(Entry(epoch: entry.epoch, startOffset: Swift.max(entry.startOffset, startOffset)))
        }
        entries = kept
    }

    func clear() { entries = [] }

    /// Writes the checkpoint if it changed since the last write, and fsyncs it.
    func flush() throws(StorageError) {
        guard dirty || access(path.string, F_OK) != 0 else { return }
        dirty = false
        try CheckpointFile.writeAtomically(CheckpointFile.format(entries.map { "\($0.epoch) \($0.startOffset)" }), to: path)
    }

    /// Writes the checkpoint if it changed, without an fsync (under the log's lock); returns the
    /// file to sync, or nil when nothing was written.
    func write() throws(StorageError) -> SegmentFile? {
        guard dirty || access(path.string, F_OK) != 0 else { return nil }
        dirty = false
        let text = CheckpointFile.format(entries.map { "\($0.epoch) \($0.startOffset)" })
        return try CheckpointFile.writeDeferred(bytes: ByteBuffer(string: text), to: path)
    }
}
