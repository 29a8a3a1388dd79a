#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
public import NIOCore
public import SystemPackage

/// An open file descriptor that closes itself when the last reference goes away.
///
/// Segments hand out `FileSlice`s that keep their `SegmentFile` alive, so a fetch that is
/// still sending a region keeps a valid descriptor even if retention deletes the segment in
/// the meantime (the file is unlinked; the descriptor still reads it).
public final class SegmentFile: Sendable {
    public let descriptor: SystemPackage.FileDescriptor
    public let path: FilePath

    init(descriptor: SystemPackage.FileDescriptor, path: FilePath) {
        self.descriptor = descriptor
        self.path = path
    }

    deinit {
        try? descriptor.close()
    }

    /// Opens (creating when asked) a file for reading and writing.
    static func open(_ path: FilePath, create: Bool) throws(StorageError) -> SegmentFile {
        do {
            let fd = try SystemPackage.FileDescriptor.open(
                path, .readWrite, options: create ? [.create, .closeOnExec] : [.closeOnExec],
                permissions: [.ownerReadWrite, .groupRead, .otherRead])
            return SegmentFile(descriptor: fd, path: path)
        } catch let errno as Errno {
            throw StorageError.io(operation: "open", path: path.string, errno: errno)
        } catch {
            throw StorageError.io(operation: "open", path: path.string, errno: .ioError)
        }
    }

    /// The file's current size in bytes.
    func size() throws(StorageError) -> Int64 {
        var info = stat()
        guard fstat(descriptor.rawValue, &info) == 0 else {
            throw StorageError.io(operation: "fstat", path: path.string, errno: Errno(rawValue: errno))
        }
        return Int64(info.st_size)
    }

    /// Reads exactly `count` bytes at `offset` (fewer only at end of file).
    func read(at offset: Int64, count: Int, into buffer: inout ByteBuffer) throws(StorageError) -> Int {
        guard count > 0 else { return 0 }
        var total = 0
        var failure: Errno? = nil
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { target in
            while total < count {
                let n = pread(descriptor.rawValue, target.baseAddress! + total, count - total, off_t(offset) + off_t(total))
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = Errno(rawValue: errno)
                    break
                }
                if n == 0 { break }
                total += n
            }
            return total
        }
        if let failure { throw StorageError.io(operation: "pread", path: path.string, errno: failure) }
        return total
    }

    /// Writes all of `parts` at `offset` with `pwritev`, retrying short writes.
    func write(at offset: Int64, _ parts: [UnsafeRawBufferPointer]) throws(StorageError) {
        var vectors = parts.filter { $0.count > 0 }.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
        var position = offset
        var index = 0
        while index < vectors.count {
            let written = vectors[index...].withUnsafeBufferPointer { pointer in
                pwritev(descriptor.rawValue, pointer.baseAddress, Int32(Swift.min(pointer.count, 1024)), off_t(position))
            }
            if written < 0 {
                if errno == EINTR { continue }
                throw StorageError.io(operation: "pwritev", path: path.string, errno: Errno(rawValue: errno))
            }
            position += Int64(written)
            var remaining = written
            while index < vectors.count && remaining >= vectors[index].iov_len {
                remaining -= vectors[index].iov_len
                index += 1
            }
            if remaining > 0 {
                vectors[index].iov_base = vectors[index].iov_base! + remaining
                vectors[index].iov_len -= remaining
            }
        }
    }

    func truncate(to size: Int64) throws(StorageError) {
        guard ftruncate(descriptor.rawValue, off_t(size)) == 0 else {
            throw StorageError.io(operation: "ftruncate", path: path.string, errno: Errno(rawValue: errno))
        }
    }

    /// Forces written data to disk (`fdatasync`).
    /// fdatasync: the file's data, including pages dirtied through a `MAP_SHARED` mapping of it
    /// (on Linux one page cache backs both, so this also makes an index's mmap writes durable).
    public func sync() throws(StorageError) {
        LogLockProbe.willSync()
        guard fdatasync(descriptor.rawValue) == 0 else {
            throw StorageError.io(operation: "fdatasync", path: path.string, errno: Errno(rawValue: errno))
        }
    }
}

/// A region of a segment file: what a log read returns instead of bytes (Kafka's `FileRecords`
/// slice), so the server can send it with `sendfile` and record bytes never pass through Swift.
///
/// The slice holds its file open; it stays readable even after the segment is deleted.
public struct FileSlice: Sendable {
    public let file: SegmentFile
    public let position: Int64
    public let length: Int

    /// Copies the bytes into memory (for TLS, tests and replication paths that need bytes).
    public func readBytes(allocator: ByteBufferAllocator = ByteBufferAllocator()) throws(StorageError) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: length)
        _ = try file.read(at: position, count: length, into: &buffer)
        return buffer
    }

    /// The slice's bytes from `offset` on, `count` of them at most, copied into memory.
    public func readBytes(from offset: Int, count: Int, allocator: ByteBufferAllocator) throws(StorageError) -> ByteBuffer {
        let count = Swift.max(0, Swift.min(count, length - offset))
        var buffer = allocator.buffer(capacity: count)
        _ = try file.read(at: position + Int64(offset), count: count, into: &buffer)
        return buffer
    }

    /// The slice as a NIO `FileRegion` for `sendfile`, over a descriptor of its own: NIO's
    /// `NIOFileHandle` allows one access at a time (since SwiftNIO 2.77), so concurrent sends of
    /// one segment on different event loops each need their own handle, and the region's handle
    /// must not be closed by a segment that retention deletes mid-send. The caller writes
    /// `lease.region` and calls `lease.release()` once the write has completed or failed.
    public func leaseRegion() throws(StorageError) -> FileRegionLease {
        let duplicate = dup(file.descriptor.rawValue)
        guard duplicate >= 0 else {
            throw StorageError.io(operation: "dup", path: file.path.string, errno: Errno(rawValue: errno))
        }
        // `FileRegion` takes only a `NIOFileHandle`; this is the one place one is made.
        let handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: duplicate)
        return FileRegionLease(region: FileRegion(fileHandle: handle, readerIndex: Int(position), endIndex: Int(position) + length),
                               handle: handle)
    }
}

/// A `FileRegion` with the descriptor it owns (see `FileSlice.leaseRegion()`). Releasing closes
/// the descriptor; a lease must be released exactly once, after its region has been written.
public struct FileRegionLease: Sendable {
    public let region: FileRegion
    private let handle: NIOFileHandle

    init(region: FileRegion, handle: NIOFileHandle) {
        self.region = region
        self.handle = handle
    }

    public func release() {
        try? handle.close()
    }
}
