import SystemPackage

/// A sparse map from timestamps to offsets in one segment (Kafka's `TimeIndex`).
///
/// File format (`<20-digit base offset>.timeindex`): 12-byte entries, big-endian
/// `timestamp: int64` (the largest timestamp seen so far in the segment) and
/// `relativeOffset: int32` (the offset of the batch holding it, minus the base offset).
/// Timestamps and offsets are strictly increasing. An entry is added alongside each offset-index
/// entry when the segment's max timestamp grew. Lookups return the greatest entry with
/// timestamp ≤ target; the segment then scans batches from that offset. Preallocation, trimming
/// and crash handling are as for `OffsetIndex`.
final class TimeIndex {
    static let entrySize = 12
    let baseOffset: Int64
    private let file: MappedIndexFile

    init(path: FilePath, baseOffset: Int64, maxIndexSize: Int, preallocate: Bool) throws(StorageError) {
        self.baseOffset = baseOffset
        self.file = try MappedIndexFile(path: path, entrySize: Self.entrySize, maxIndexSize: maxIndexSize, preallocate: preallocate)
    }

    var path: FilePath { file.path }
    var entries: Int { file.entries }
    var isFull: Bool { file.isFull }
    var sizeInBytes: Int { file.sizeInBytes }

    func entry(_ index: Int) -> (timestamp: Int64, offset: Int64) {
        (file.readInt64(entry: index, field: 0), baseOffset + Int64(file.readInt32(entry: index, field: 8)))
    }

    var lastEntry: (timestamp: Int64, offset: Int64)? {
        entries == 0 ? nil : entry(entries - 1)
    }

    /// Adds an entry when `timestamp` and `offset` both exceed the last entry's.
    func maybeAppend(timestamp: Int64, offset: Int64) {
        guard !file.isFull else { return }
        if let last = lastEntry, timestamp <= last.timestamp || offset <= last.offset { return }
        file.writeInt64(timestamp, entry: entries, field: 0)
        file.writeInt32(Int32(truncatingIfNeeded: offset - baseOffset), entry: entries, field: 8)
        file.commitEntry()
    }

    /// The greatest entry with timestamp ≤ `target`, or (−1, base offset) when none is.
    func lookup(_ target: Int64) -> (timestamp: Int64, offset: Int64) {
        guard let index = file.largestLowerBound(target, key: { self.file.readInt64(entry: $0, field: 0) }) else {
            return (-1, baseOffset)
        }
        return entry(index)
    }

    /// Removes entries for offsets ≥ `offset`.
    func truncate(toOffset offset: Int64) {
        let keep = file.largestLowerBound(offset - baseOffset - 1, key: { Int64(self.file.readInt32(entry: $0, field: 8)) }).map { $0 + 1 } ?? 0
        file.truncate(toEntries: keep)
    }

    func reset() { file.truncate(toEntries: 0) }

    func isSane(nextOffset: Int64) -> Bool {
        var previous: (Int64, Int64) = (Int64.min, -1)
        for i in 0..<entries {
            let (timestamp, offset) = entry(i)
            if timestamp <= previous.0 || offset <= previous.1 || offset < baseOffset || offset >= nextOffset {
                return false
            }
            previous = (timestamp, offset)
        }
        return true
    }

    func resize(toBytes bytes: Int) throws(StorageError) { try file.resize(toBytes: bytes) }
    func trimToValidSize() throws(StorageError) { try file.trimToValidSize() }
    func flush() throws(StorageError) { try file.flush() }
    var handle: SegmentFile { file.handle }
    func close() { file.close() }
    func delete() { file.delete() }
    func renameTo(_ path: FilePath) throws(StorageError) { try file.renameTo(path) }
}
