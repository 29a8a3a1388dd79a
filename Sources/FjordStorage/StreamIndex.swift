#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import FjordProtocol
import NIOCore
import SystemPackage

/// The streams of a `fjord.stream.versioning` partition: for each record key (a stream), the
/// offsets of its events in order. A stream's version is the revision of its last event
/// (EventStoreDB's semantics): -1 for a stream with no event, then 0, 1, 2, …
///
/// Invariants: offsets of a stream increase; every record with a key at an offset below
/// `nextOffset` is indexed exactly once; the index never holds an offset at or above the log end
/// (truncation removes them). Kept inside `LocalLog`'s lock, next to the producer state, so the
/// expected-version check and the append are one atomic step per partition.
///
/// Persistence: `streams.checkpoint` in the partition directory, written atomically at segment
/// roll and clean close (binary: magic `FJSI`, format 1, `nextOffset`, stream count, then per
/// stream key length, key bytes, event count and offsets, all big-endian, and a CRC32C of
/// everything before it). On open the checkpoint is loaded when it is valid and not past the log
/// end, and the log after `nextOffset` is scanned; otherwise the whole log is scanned.
public struct StreamIndex: Sendable {
    /// Where a stream's expected version is sent: a record header with this key.
    public static let expectedVersionHeader = "fjord-expected-version"
    static let fileName = "streams.checkpoint"
    static let magic: UInt32 = 0x464A_5349  // "FJSI"

    private(set) var streams: [[UInt8]: [Int64]] = [:]
    /// The index covers the log below this offset.
    public private(set) var nextOffset: Int64

    public init(startingAt offset: Int64) {
        nextOffset = offset
    }

    /// The version of a stream: the revision of its last event, -1 when it has none.
    public func version(of key: [UInt8]) -> Int64 {
        Int64(streams[key]?.count ?? 0) - 1
    }

    public var streamCount: Int { streams.count }

    /// The offsets of a stream's events with their revisions, from revision `from`, at most
    /// `limit`, forwards or backwards (backwards starts at `from`, or the last event if `from` is
    /// past it).
    public func events(of key: [UInt8], from: Int64, limit: Int, forwards: Bool) -> [(revision: Int64, offset: Int64)] {
        guard let offsets = streams[key], !offsets.isEmpty, limit > 0 else { return [] }
        var out: [(Int64, Int64)] = []
        if forwards {
            var revision = Swift.max(0, from)
            while revision < Int64(offsets.count) && out.count < limit {
                out.append((revision, offsets[Int(revision)]))
                revision += 1
            }
        } else {
            var revision = Swift.min(from < 0 ? Int64(offsets.count - 1) : from, Int64(offsets.count - 1))
            while revision >= 0 && out.count < limit {
                out.append((revision, offsets[Int(revision)]))
                revision -= 1
            }
        }
        return out
    }

    /// The revision of the stream's event at `offset` (its position among the stream's offsets),
    /// nil when the stream has no event there.
    public func revision(of key: [UInt8], at offset: Int64) -> Int64? {
        guard let offsets = streams[key] else { return nil }
        var low = 0
        var high = offsets.count
        while low < high {
            let middle = (low + high) / 2
            if offsets[middle] < offset { low = middle + 1 } else { high = middle }
        }
        return low < offsets.count && offsets[low] == offset ? Int64(low) : nil
    }

    mutating func append(key: [UInt8], offset: Int64) {
        streams[key, default: []].append(offset)
        nextOffset = Swift.max(nextOffset, offset + 1)
    }

    mutating func advance(to offset: Int64) {
        nextOffset = Swift.max(nextOffset, offset)
    }

    /// Forgets every event at or above `offset` (log truncation).
    mutating func truncate(from offset: Int64) {
        guard offset < nextOffset else { return }
        for (key, offsets) in streams {
            guard let last = offsets.last, last >= offset else { continue }
            let kept = offsets.prefix { $0 < offset }
            if kept.isEmpty { streams[key] = nil } else { streams[key] = Array(kept) }
        }
        nextOffset = offset
    }

    // MARK: Expected versions

    /// What an expected version says (the `fjord-expected-version` header).
    public enum ExpectedVersion: Sendable, Equatable, CustomStringConvertible {
        case any, noStream, exists
        case exact(Int64)

        /// Parses `any`, `no-stream`, `exists` or a revision number ≥ 0.
        public init?(header text: String) {
            switch text {
            case "any": self = .any
            case "no-stream": self = .noStream
            case "exists": self = .exists
            default:
                guard let number = Int64(text), number >= 0 else { return nil }
                self = .exact(number)
            }
        }

        public func accepts(_ actual: Int64) -> Bool {
            switch self {
            case .any: return true
            case .noStream: return actual == -1
            case .exists: return actual >= 0
            case .exact(let n): return actual == n
            }
        }

        public var description: String {
            switch self {
            case .any: return "any"
            case .noStream: return "no-stream"
            case .exists: return "exists"
            case .exact(let n): return String(n)
            }
        }
    }

    /// The keyed records of a batch, with offset deltas, checked against the streams' versions
    /// (records earlier in the same produce count). Every record whose expectation fails is
    /// added to `conflicts` and does not count as appended for the records after it, so the
    /// caller learns all refused records of a produce at once (clients that group appends of
    /// several streams into one batch resend the others). Throws `invalidRecord` for a record
    /// without a key or with an unreadable header; nothing is changed either way.
    /// `pending` carries the versions after earlier records of the same produce.
    func check(_ batch: RecordBatch, recordIndexBase: Int, pending: inout [[UInt8]: Int64],
               conflicts: inout [StreamVersionConflict]) throws(StorageError) -> [(key: [UInt8], offsetDelta: Int32)] {
        var out: [(key: [UInt8], offsetDelta: Int32)] = []
        do {
            var iterator = try batch.makeRecordIterator()
            var index = recordIndexBase
            var expectedDelta: Int32 = 0
            while let record = try iterator.next() {
                defer { index += 1 }
                // The index stores base offset + offset delta: deltas must be 0, 1, 2, … within the
                // batch's last offset delta, as every client writes them.
                guard record.offsetDelta == expectedDelta, record.offsetDelta <= batch.lastOffsetDelta else {
                    throw StorageError.invalidRecord("record \(index): offset delta \(record.offsetDelta), expected \(expectedDelta)")
                }
                expectedDelta += 1
                guard let keyBytes = record.key else {
                    throw StorageError.invalidRecord("record \(index): a stream topic needs a key (the stream name)")
                }
                let key = Array(keyBytes.readableBytesView)
                let actual = pending[key] ?? version(of: key)
                if let header = record.headers.last(where: { $0.key == Self.expectedVersionHeader }), let value = header.value {
                    let text = String(decoding: value.readableBytesView, as: UTF8.self)
                    guard let expected = ExpectedVersion(header: text) else {
                        throw StorageError.invalidRecord(
                            "record \(index): \(Self.expectedVersionHeader) '\(text)' is not any, no-stream, exists or a version ≥ 0")
                    }
                    guard expected.accepts(actual) else {
                        conflicts.append(StreamVersionConflict(recordIndex: index, stream: String(decoding: key, as: UTF8.self),
                                                               expected: expected.description, actual: actual))
                        continue
                    }
                }
                pending[key] = actual + 1
                out.append((key, Int32(truncatingIfNeeded: record.offsetDelta)))
            }
        } catch let error as StorageError {
            throw error
        } catch {
            throw StorageError.corruptRecord("\(error)")
        }
        return out
    }

    /// Indexes every keyed record of a batch written at `baseOffset` (no checks: replication,
    /// recovery).
    mutating func index(_ batch: RecordBatch, baseOffset: Int64) throws(StorageError) {
        defer { advance(to: baseOffset + Int64(batch.lastOffsetDelta) + 1) }
        guard !batch.attributes.isControl else { return }
        do {
            var iterator = try batch.makeRecordIterator()
            while let record = try iterator.next() {
                guard let key = record.key else { continue }
                append(key: Array(key.readableBytesView), offset: baseOffset + Int64(record.offsetDelta))
            }
        } catch {
            throw StorageError.corruptRecord("\(error)")
        }
    }

    // MARK: Checkpoint

    func encoded() -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(Self.magic)
        buffer.writeInteger(UInt32(1))
        buffer.writeInteger(nextOffset)
        buffer.writeInteger(UInt32(streams.count))
        for (key, offsets) in streams.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            buffer.writeInteger(UInt32(key.count))
            buffer.writeBytes(key)
            buffer.writeInteger(UInt32(offsets.count))
            for offset in offsets { buffer.writeInteger(offset) }
        }
        let crc = CRC32C.checksum(buffer)
        buffer.writeInteger(crc)
        return buffer
    }

    /// Decodes a checkpoint; nil when it is damaged (wrong magic, truncated, bad CRC).
    static func decode(_ bytes: ByteBuffer) -> StreamIndex? {
        guard bytes.readableBytes >= 24 else { return nil }
        let body = bytes.getSlice(at: bytes.readerIndex, length: bytes.readableBytes - 4)!
        guard let stored = bytes.getInteger(at: bytes.writerIndex - 4, as: UInt32.self),
              stored == CRC32C.checksum(body) else { return nil }
        var reader = body
        guard reader.readInteger(as: UInt32.self) == magic, reader.readInteger(as: UInt32.self) == 1,
              let next = reader.readInteger(as: Int64.self), let count = reader.readInteger(as: UInt32.self) else { return nil }
        var index = StreamIndex(startingAt: next)
        for _ in 0..<count {
            guard let keyLength = reader.readInteger(as: UInt32.self), let key = reader.readBytes(length: Int(keyLength)),
                  let events = reader.readInteger(as: UInt32.self), reader.readableBytes >= Int(events) * 8 else { return nil }
            var offsets: [Int64] = []
            offsets.reserveCapacity(Int(events))
            for _ in 0..<events { offsets.append(reader.readInteger(as: Int64.self)!) }
            index.streams[key] = offsets
        }
        return reader.readableBytes == 0 ? index : nil
    }

    /// Writes the checkpoint without an fsync (under the log's lock); returns the file to sync.
    /// A checkpoint a crash left torn does not decode and the index is rebuilt from the log.
    func write(to directory: FilePath) throws(StorageError) -> SegmentFile {
        try CheckpointFile.writeDeferred(bytes: encoded(), to: directory.appending(Self.fileName))
    }

    static func load(from directory: FilePath) throws(StorageError) -> StreamIndex? {
        guard let bytes = try CheckpointFile.readBytes(directory.appending(fileName)) else { return nil }
        return decode(bytes)
    }

    static func removeCheckpoint(in directory: FilePath) {
        _ = directory.appending(fileName).withPlatformString { unlink($0) }
    }
}
