#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
public import NIOCore
public import SystemPackage

/// Kafka's text checkpoint files, written atomically: the new content goes to `<path>.tmp`, is
/// fsynced, renamed over `<path>`, and the directory is fsynced, so a crash leaves either the old
/// file or the new one, never a mix.
///
/// A partition log writes its own checkpoints (`leader-epoch-checkpoint`, producer snapshots, the
/// stream index) with `writeDeferred` under its lock and fsyncs the returned file later, outside
/// the lock, before it advances its recovery point (see `LogFlusher`). Until then a crash may
/// leave such a file empty or torn; each of them is validated on load and rebuilt from the log
/// when it does not parse.
///
/// Format (Kafka's `CheckpointFile`): a version line, a count line, then one entry per line with
/// space-separated fields:
/// ```
/// 0
/// 2
/// orders 0 1200
/// orders 1 1188
/// ```
public enum CheckpointFile {
    /// Atomically replaces `path` with `text`.
    public static func writeAtomically(_ text: String, to path: FilePath) throws(StorageError) {
        try writeAtomically(bytes: ByteBuffer(string: text), to: path)
    }

    /// Atomically replaces `path` with `bytes` (binary checkpoints, e.g. the stream index).
    public static func writeAtomically(bytes: ByteBuffer, to path: FilePath) throws(StorageError) {
        let temporary = FilePath(path.string + ".tmp")
        let file = try SegmentFile.open(temporary, create: true)

        try file.truncate(to: 0)
        try bytes.withUnsafeReadableBytes { (raw) throws(StorageError) in
            try file.write(at: 0, [raw])
        }
        try file.sync()
        guard rename(temporary.string, path.string) == 0 else {
            throw StorageError.io(operation: "rename", path: temporary.string, errno: Errno(rawValue: errno))
        }
        syncDirectory(path.removingLastComponent())
    }

    /// Replaces `path` with `bytes` through `<path>.tmp` and a rename, without any fsync: the
    /// caller syncs the returned file (same inode as `path` after the rename) and the directory
    /// when durability is due. Never blocks on the disk, so it may run under a log's lock.
    public static func writeDeferred(bytes: ByteBuffer, to path: FilePath) throws(StorageError) -> SegmentFile {
        let temporary = FilePath(path.string + ".tmp")
        let file = try SegmentFile.open(temporary, create: true)
        try file.truncate(to: 0)
        try bytes.withUnsafeReadableBytes { (raw) throws(StorageError) in
            try file.write(at: 0, [raw])
        }
        guard rename(temporary.string, path.string) == 0 else {
            throw StorageError.io(operation: "rename", path: temporary.string, errno: Errno(rawValue: errno))
        }
        return file
    }

    /// The file's text, or nil when it does not exist.
    public static func read(_ path: FilePath) throws(StorageError) -> String? {
        guard var buffer = try readBytes(path) else { return nil }
        return buffer.readString(length: buffer.readableBytes)
    }

    /// The file's bytes, or nil when it does not exist.
    public static func readBytes(_ path: FilePath) throws(StorageError) -> ByteBuffer? {
        guard access(path.string, F_OK) == 0 else { return nil }
        let file = try SegmentFile.open(path, create: false)

        let size = try file.size()
        var buffer = ByteBuffer()
        _ = try file.read(at: 0, count: Int(size), into: &buffer)
        return buffer
    }

    /// Parses the version/count/entries format; each entry is its whitespace-split fields.
    public static func parseEntries(_ text: String, path: FilePath, fieldsPerEntry: Int) throws(StorageError) -> [[Substring]] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingCharacters() }
        guard lines.count >= 2, lines[0] == "0", let count = Int(lines[1]), count >= 0 else {
            throw StorageError.corruptFile(path: path.string, reason: "bad version or count header")
        }
        var entries: [[Substring]] = []
        for line in lines.dropFirst(2) where !line.isEmpty {
            let fields = line.split(separator: " ")
            guard fields.count == fieldsPerEntry else {
                throw StorageError.corruptFile(path: path.string, reason: "expected \(fieldsPerEntry) fields in '\(line)'")
            }
            entries.append(fields.map { Substring($0) })
        }
        guard entries.count == count else {
            throw StorageError.corruptFile(path: path.string, reason: "expected \(count) entries, found \(entries.count)")
        }
        return entries
    }

    /// Formats entries in the version/count/entries format.
    public static func format(_ entries: [String]) -> String {
        var text = "0\n\(entries.count)\n"
        for entry in entries { text += entry + "\n" }
        return text
    }

    /// fsyncs a directory so a rename or create in it is durable.
    public static func syncDirectory(_ directory: FilePath) {
        LogLockProbe.willSync()
        let fd = open(directory.string, O_RDONLY | O_DIRECTORY)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }
}
