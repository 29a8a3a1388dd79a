#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
public import FjordProtocol
import NIOCore
import SystemPackage

/// What the log remembers of one idempotent producer in one partition.
public struct ProducerStateEntry: Sendable, Equatable {
    /// One appended batch: its sequence range and offsets.
    public struct Batch: Sendable, Equatable {
        public var firstSequence: Int32
        public var lastSequence: Int32
        public var firstOffset: Int64
        public var lastOffset: Int64
        public var timestamp: Int64
    }

    public var producerID: ProducerID
    public var epoch: Int16
    /// The last (up to) five batches, oldest first, as Kafka keeps them for duplicate detection.
    public var batches: [Batch]
    public var coordinatorEpoch: Int32 = -1
    /// The first offset of the producer's open transaction, or -1.
    public var currentTransactionFirstOffset: Int64 = -1

    public var lastSequence: Int32 { batches.last?.lastSequence ?? RecordBatch.noSequence }
    public var lastTimestamp: Int64 { batches.last?.timestamp ?? RecordBatch.noTimestamp }
    public var lastOffset: Int64 { batches.last?.lastOffset ?? -1 }
}

/// The outcome of checking a batch against producer state.
enum ProducerAppendCheck: Equatable {
    /// Append it.
    case append
    /// The same batch was already appended (a retry): answer with its original offsets.
    case duplicate(firstOffset: Int64, lastOffset: Int64)
}

/// Per-partition state of idempotent producers (Kafka's `ProducerStateManager`): each producer's
/// epoch and its last five batches' sequences and offsets.
///
/// Appends are checked before they are written: an older epoch is refused
/// (`invalidProducerEpoch`); a batch equal to one of the last five is a duplicate, answered with
/// the original offsets; otherwise its first sequence must follow the last one (wrapping after
/// Int32.max), or start at 0 in a new epoch (`outOfOrderSequence`). A producer the log has never
/// seen (or has forgotten) may start at any sequence, as in Kafka.
///
/// The state is snapshotted to `<20-digit offset>.snapshot` when a segment rolls and on clean
/// shutdown, and rebuilt on load from the newest snapshot at or below the log end plus the batches
/// after it. Snapshot format (Kafka's version 1, big-endian): `version: int16 = 1`,
/// `crc: uint32` (CRC32C of the rest), `count: int32`, then per producer `producerId: int64`,
/// `epoch: int16`, `lastSequence: int32`, `lastOffset: int64`, `offsetDelta: int32`,
/// `timestamp: int64`, `coordinatorEpoch: int32`, `currentTxnFirstOffset: int64`.
final class ProducerStateManager {
    static let maxBatchesPerProducer = 5
    let directory: FilePath
    private(set) var producers: [Int64: ProducerStateEntry] = [:]
    /// The log offset up to which the state reflects the log.
    private(set) var mapEndOffset: Int64 = 0

    init(directory: FilePath) {
        self.directory = directory
    }

    // MARK: Checks and updates

    func check(_ header: RecordBatchHeader) throws(StorageError) -> ProducerAppendCheck {
        guard header.hasProducerID else { return .append }
        guard header.baseSequence >= 0 || header.attributes.isControl else {
            throw StorageError.invalidRecord("producer \(header.producerID): base sequence \(header.baseSequence) is negative")
        }
        guard let entry = producers[header.producerID] else { return .append }
        if header.producerEpoch < entry.epoch {
            throw StorageError.invalidProducerEpoch(producerID: header.producerID, epoch: header.producerEpoch, current: entry.epoch)
        }
        if header.producerEpoch == entry.epoch {
            for batch in entry.batches where batch.firstSequence == header.baseSequence && batch.lastSequence == header.lastSequence {
                return .duplicate(firstOffset: batch.firstOffset, lastOffset: batch.lastOffset)
            }
        }
        guard header.baseSequence != RecordBatch.noSequence else { return .append }
        if header.producerEpoch > entry.epoch {
            if header.baseSequence != 0 && entry.epoch != RecordBatch.noProducerEpoch {
                throw StorageError.outOfOrderSequence(producerID: header.producerID, epoch: header.producerEpoch,
                                                      sequence: header.baseSequence, expected: 0)
            }
            return .append
        }
        let last = entry.lastSequence
        let expected: Int32 = last == Int32.max ? 0 : last &+ 1
        if last != RecordBatch.noSequence && header.baseSequence != expected {
            throw StorageError.outOfOrderSequence(producerID: header.producerID, epoch: header.producerEpoch,
                                                  sequence: header.baseSequence, expected: expected)
        }
        return .append
    }

    /// Records an appended batch (with its assigned offsets in `header`).
    func update(_ header: RecordBatchHeader) {
        mapEndOffset = Swift.max(mapEndOffset, header.nextOffset)
        guard header.hasProducerID, !header.attributes.isControl else {
            if header.attributes.isControl, header.hasProducerID, var entry = producers[header.producerID] {
                entry.currentTransactionFirstOffset = -1
                producers[header.producerID] = entry
            }
            return
        }
        var entry = producers[header.producerID]
            ?? ProducerStateEntry(producerID: ProducerID(header.producerID), epoch: header.producerEpoch, batches: [])
        if header.producerEpoch != entry.epoch {
            entry.epoch = header.producerEpoch
            entry.batches = []
        }
        if header.baseSequence != RecordBatch.noSequence {
            entry.batches.append(ProducerStateEntry.Batch(
                firstSequence: header.baseSequence, lastSequence: header.lastSequence,
                firstOffset: header.baseOffset, lastOffset: header.lastOffset, timestamp: header.maxTimestamp))
            if entry.batches.count > Self.maxBatchesPerProducer {
                entry.batches.removeFirst(entry.batches.count - Self.maxBatchesPerProducer)
            }
        }
        if header.attributes.isTransactional && entry.currentTransactionFirstOffset < 0 {
            entry.currentTransactionFirstOffset = header.baseOffset
        }
        producers[header.producerID] = entry
    }

    func reset(at offset: Int64) {
        producers = [:]
        mapEndOffset = offset
    }

    /// Forgets producers whose last write is older than `expirationMs` (`producer.id.expiration.ms`).
    func removeExpired(nowMs: Int64, expirationMs: Int64) {
        producers = producers.filter { _, entry in
            entry.currentTransactionFirstOffset >= 0 || nowMs.clampedMinus(entry.lastTimestamp) < expirationMs
        }
    }

    // MARK: Snapshots

    static func snapshotPath(_ directory: FilePath, _ offset: Int64) -> FilePath {
        directory.appending(LogSegment.fileName(offset, ".snapshot"))
    }

    /// Offsets of the snapshot files in the directory, ascending.
    func snapshotOffsets() -> [Int64] {
        let names = (try? LogLoader.listDirectory(directory)) ?? []
        return names.compactMap { name in
            name.hasSuffix(".snapshot") ? Int64(name.dropLast(".snapshot".count)) : nil
        }.sorted()
    }

    /// Writes the state as of `mapEndOffset` (the caller has brought it up to the log end),
    /// without an fsync: returns the file for the caller to sync outside the log's lock. A
    /// snapshot a crash left torn fails its CRC on load and an older one (or the log) is used.
    func takeSnapshot() throws(StorageError) -> SegmentFile {
        var body = ByteBuffer()
        body.writeInteger(Int32(producers.count), endianness: .big)
        for (_, entry) in producers.sorted(by: { $0.key < $1.key }) {
            let last = entry.batches.last
            body.writeInteger(entry.producerID.rawValue, endianness: .big)
            body.writeInteger(entry.epoch, endianness: .big)
            body.writeInteger(entry.lastSequence, endianness: .big)
            body.writeInteger(last?.lastOffset ?? -1, endianness: .big)
            body.writeInteger(Int32(truncatingIfNeeded: (last.map { $0.lastOffset - $0.firstOffset }) ?? 0), endianness: .big)
            body.writeInteger(entry.lastTimestamp, endianness: .big)
            body.writeInteger(entry.coordinatorEpoch, endianness: .big)
            body.writeInteger(entry.currentTransactionFirstOffset, endianness: .big)
        }
        var file = ByteBuffer()
        file.writeInteger(Int16(1), endianness: .big)
        file.writeInteger(CRC32C.checksum(body), endianness: .big)
        file.writeBuffer(&body)
        return try CheckpointFile.writeDeferred(bytes: file, to: Self.snapshotPath(directory, mapEndOffset))
    }

    /// Loads the newest valid snapshot at or below `logEndOffset` and deletes snapshots above it;
    /// returns the offset the state is valid up to (0 with empty state when none loads).
    func loadLatestSnapshot(upTo logEndOffset: Int64) -> Int64 {
        producers = [:]
        mapEndOffset = 0
        for offset in snapshotOffsets().reversed() {
            let path = Self.snapshotPath(directory, offset)
            if offset > logEndOffset {
                unlink(path.string)
                continue
            }
            if let loaded = try? Self.readSnapshot(path) {
                producers = loaded
                mapEndOffset = offset
                return offset
            }
            unlink(path.string)  // corrupt: rebuild from the log instead
        }
        return 0
    }

    static func readSnapshot(_ path: FilePath) throws(StorageError) -> [Int64: ProducerStateEntry] {
        guard let file = try? SegmentFile.open(path, create: false) else {
            throw StorageError.corruptFile(path: path.string, reason: "cannot open")
        }
        var buffer = ByteBuffer()
        _ = try file.read(at: 0, count: Int(try file.size()), into: &buffer)
        guard let version = buffer.readInteger(endianness: .big, as: Int16.self), version == 1,
            let crc = buffer.readInteger(endianness: .big, as: UInt32.self), CRC32C.checksum(buffer) == crc,
            let count = buffer.readInteger(endianness: .big, as: Int32.self), count >= 0,
            Int(count) * 46 == buffer.readableBytes
        else {
            throw StorageError.corruptFile(path: path.string, reason: "bad producer snapshot")
        }
        var producers: [Int64: ProducerStateEntry] = [:]
        for _ in 0..<count {
            guard let producerID = buffer.readInteger(endianness: .big, as: Int64.self),
                let epoch = buffer.readInteger(endianness: .big, as: Int16.self),
                let lastSequence = buffer.readInteger(endianness: .big, as: Int32.self),
                let lastOffset = buffer.readInteger(endianness: .big, as: Int64.self),
                let offsetDelta = buffer.readInteger(endianness: .big, as: Int32.self),
                let timestamp = buffer.readInteger(endianness: .big, as: Int64.self),
                let coordinatorEpoch = buffer.readInteger(endianness: .big, as: Int32.self),
                let transactionFirstOffset = buffer.readInteger(endianness: .big, as: Int64.self)
            else { throw StorageError.corruptFile(path: path.string, reason: "truncated producer entry") }
            var batches: [ProducerStateEntry.Batch] = []
            if lastSequence != RecordBatch.noSequence {
                guard lastSequence >= 0, offsetDelta >= 0 else {
                    throw StorageError.corruptFile(path: path.string, reason: "producer \(producerID): sequence \(lastSequence), delta \(offsetDelta)")
                }
                let firstSequence = lastSequence >= offsetDelta ? lastSequence - offsetDelta : Int32.max - (offsetDelta - lastSequence) + 1
                batches.append(ProducerStateEntry.Batch(
                    firstSequence: firstSequence, lastSequence: lastSequence,
                    firstOffset: lastOffset - Int64(offsetDelta), lastOffset: lastOffset, timestamp: timestamp))
            }
            producers[producerID] = ProducerStateEntry(
                producerID: ProducerID(producerID), epoch: epoch, batches: batches, coordinatorEpoch: coordinatorEpoch,
                currentTransactionFirstOffset: transactionFirstOffset)
        }
        return producers
    }

    /// Deletes snapshots below `offset` (segments before it were deleted), keeping the newest.
    func deleteSnapshots(before offset: Int64) {
        let offsets = snapshotOffsets()
        for value in offsets.dropLast() where value < offset {
            unlink(Self.snapshotPath(directory, value).string)
        }
    }

    /// Deletes snapshots above `offset` (after truncation).
    func deleteSnapshots(after offset: Int64) {
        for value in snapshotOffsets() where value > offset {
            unlink(Self.snapshotPath(directory, value).string)
        }
    }
}
