#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SystemPackage

/// A memory-mapped, preallocated file of fixed-size big-endian entries: the shared machinery of
/// `OffsetIndex` and `TimeIndex` (Kafka's `AbstractIndex`).
///
/// While a segment is active the file is preallocated to `maxIndexSize` (rounded down to whole
/// entries) and mapped; `entries` counts the valid ones, and the tail is zeros. `trimToValidSize()`
/// shrinks the file to exactly the valid entries when the segment rolls or the log closes, so a
/// cleanly closed index's length tells its entry count. Not thread-safe: the owning log serialises
/// access.
final class MappedIndexFile {
    let path: FilePath
    let entrySize: Int
    private(set) var maxEntries: Int
    private(set) var entries: Int
    private let file: SegmentFile
    private var mapping: UnsafeMutableRawPointer?
    private var mappedLength: Int

    /// Opens or creates the file. A new file, or `preallocate`, sizes it to `maxIndexSize`;
    /// an existing file's entry count is its length over `entrySize` (rounded down).
    init(path: FilePath, entrySize: Int, maxIndexSize: Int, preallocate: Bool) throws(StorageError) {
        self.path = path
        self.entrySize = entrySize
        self.file = try SegmentFile.open(path, create: true)
        let length = Int(try file.size())
        self.entries = length / entrySize
        self.maxEntries = 0
        self.mapping = nil
        self.mappedLength = 0
        let target = preallocate || length == 0 ? Swift.max(roundDown(maxIndexSize), roundDown(length)) : roundDown(length)
        try resize(toBytes: target)
    }

    private func roundDown(_ bytes: Int) -> Int { bytes / entrySize * entrySize }

    /// The open file, for an fsync outside the owning log's lock: `SegmentFile.sync()` also
    /// writes back this mapping's dirty pages, and the descriptor stays valid while referenced
    /// even if the index is closed or resized meanwhile (`msync` on the mapping would not).
    var handle: SegmentFile { file }

    var isFull: Bool { entries >= maxEntries }
    var sizeInBytes: Int { entries * entrySize }

    /// Resizes the file (and the mapping) to `bytes`, keeping valid entries.
    func resize(toBytes bytes: Int) throws(StorageError) {
        let length = Swift.max(roundDown(bytes), roundDown(sizeInBytes))
        unmap()
        try file.truncate(to: Int64(length))
        if length > 0 {
            let pointer = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, file.descriptor.rawValue, 0)
            guard let pointer, pointer != MAP_FAILED else {
                throw StorageError.io(operation: "mmap", path: path.string, errno: Errno(rawValue: errno))
            }
            mapping = pointer
        }
        mappedLength = length
        maxEntries = length / entrySize
        entries = Swift.min(entries, maxEntries)
    }

    /// Shrinks the file to exactly the valid entries (on roll and close).
    func trimToValidSize() throws(StorageError) {
        try resize(toBytes: sizeInBytes)
    }

    /// Forgets every entry from `index` on (they are zeroed so a crash cannot resurrect them).
    func truncate(toEntries index: Int) {
        let keep = Swift.max(0, Swift.min(index, entries))
        if let mapping, keep < entries {
            memset(mapping + keep * entrySize, 0, (entries - keep) * entrySize)
        }
        entries = keep
    }

    func readInt32(entry: Int, field: Int) -> Int32 {
        guard let mapping else { return 0 }
        return Int32(bigEndian: (mapping + entry * entrySize + field).loadUnaligned(as: Int32.self))
    }

    func readInt64(entry: Int, field: Int) -> Int64 {
        guard let mapping else { return 0 }
        return Int64(bigEndian: (mapping + entry * entrySize + field).loadUnaligned(as: Int64.self))
    }

    func writeInt32(_ value: Int32, entry: Int, field: Int) {
        guard let mapping else { return }
        (mapping + entry * entrySize + field).storeBytes(of: value.bigEndian, as: Int32.self)
    }

    func writeInt64(_ value: Int64, entry: Int, field: Int) {
        guard let mapping else { return }
        (mapping + entry * entrySize + field).storeBytes(of: value.bigEndian, as: Int64.self)
    }

    /// Marks one more entry valid; the caller has written it at index `entries`.
    func commitEntry() {
        precondition(entries < maxEntries, "index append past its preallocated size")
        entries += 1
    }

    /// Flushes the mapping to disk.
    func flush() throws(StorageError) {
        LogLockProbe.willSync()
        guard let mapping, mappedLength > 0 else { return }
        guard msync(mapping, mappedLength, MS_SYNC) == 0 else {
            throw StorageError.io(operation: "msync", path: path.string, errno: Errno(rawValue: errno))
        }
    }

    private func unmap() {
        if let mapping, mappedLength > 0 {
            munmap(mapping, mappedLength)
        }
        mapping = nil
        mappedLength = 0
    }

    func close() {
        unmap()
    }

    /// Closes and removes the file.
    func delete() {
        close()
        unlink(path.string)
    }

    func renameTo(_ newPath: FilePath) throws(StorageError) {
        guard rename(path.string, newPath.string) == 0 else {
            throw StorageError.io(operation: "rename", path: path.string, errno: Errno(rawValue: errno))
        }
    }

    deinit {
        unmap()
    }

    /// Binary search for the last entry whose key (read by `key`) is ≤ `target`; nil when none is.
    func largestLowerBound(_ target: Int64, key: (Int) -> Int64) -> Int? {
        var low = 0
        var high = entries - 1
        guard high >= 0, key(0) <= target else { return nil }
        while low < high {
            let mid = (low + high + 1) / 2
            if key(mid) <= target { low = mid } else { high = mid - 1 }
        }
        return low
    }
}
