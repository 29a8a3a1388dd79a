import SystemPackage

/// A sparse map from offsets to byte positions in one segment's `.log` file (Kafka's `OffsetIndex`).
///
/// File format (`<20-digit base offset>.index`): 8-byte entries, big-endian
/// `relativeOffset: int32` (offset − segment base offset) and `position: int32` (byte position of
/// the batch in the `.log` file). Entries are strictly increasing in both fields. An entry is added
/// after at least `index.interval.bytes` of appends, so the index is sparse: a lookup finds the
/// greatest indexed offset ≤ the target, then the segment scans batch headers from there.
///
/// The file is preallocated to `segment.index.bytes` and memory-mapped while the segment is active,
/// trimmed to its valid entries when it rolls. After an unclean shutdown the index is never
/// trusted: recovery rebuilds it from the log.
final class OffsetIndex {
    static let entrySize = 8
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

    /// The last indexed offset, or the base offset when empty.
    var lastOffset: Int64 {
        entries == 0 ? baseOffset : baseOffset + Int64(file.readInt32(entry: entries - 1, field: 0))
    }

    func entry(_ index: Int) -> (offset: Int64, position: Int64) {
        (baseOffset + Int64(file.readInt32(entry: index, field: 0)), Int64(UInt32(bitPattern: file.readInt32(entry: index, field: 4))))
    }

    /// Adds an entry; offsets and positions must increase. Ignored when the index is full
    /// (the segment rolls on a full index before the next append).
    func append(offset: Int64, position: Int64) {
        guard !file.isFull else { return }
        if entries > 0 {
            let last = entry(entries - 1)
            guard offset > last.offset, position > last.position else { return }
        }
        file.writeInt32(Int32(truncatingIfNeeded: offset - baseOffset), entry: entries, field: 0)
        file.writeInt32(Int32(truncatingIfNeeded: position), entry: entries, field: 4)
        file.commitEntry()
    }

    /// The greatest indexed (offset, position) with offset ≤ `target`, or (base offset, 0).
    func lookup(_ target: Int64) -> (offset: Int64, position: Int64) {
        guard let index = file.largestLowerBound(target - baseOffset, key: { Int64(self.file.readInt32(entry: $0, field: 0)) }) else {
            return (baseOffset, 0)
        }
        return entry(index)
    }

    /// Removes entries for offsets ≥ `offset`.
    func truncate(toOffset offset: Int64) {
        let keep = file.largestLowerBound(offset - baseOffset - 1, key: { Int64(self.file.readInt32(entry: $0, field: 0)) }).map { $0 + 1 } ?? 0
        file.truncate(toEntries: keep)
    }

    func reset() { file.truncate(toEntries: 0) }

    /// True when entries increase strictly and fit the segment (`logSize` bytes).
    func isSane(logSize: Int64) -> Bool {
        var previous: (Int64, Int64) = (-1, -1)
        for i in 0..<entries {
            let (offset, position) = entry(i)
            if offset < baseOffset || offset <= previous.0 || position <= previous.1 && i > 0 || position >= logSize {
                return false
            }
            previous = (offset, position)
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
