public import FjordCompression
public import NIOCore

/// One Kafka RecordBatch (magic v2), viewed in place over its bytes.
///
/// Layout (docs/implementation.html, big-endian):
/// ```
///  0 baseOffset: int64            ─┐ outside the CRC: the broker patches these in place
///  8 batchLength: int32            │ (bytes after this field)
/// 12 partitionLeaderEpoch: int32  ─┘
/// 16 magic: int8 (= 2)
/// 17 crc: uint32                   CRC32C of bytes 21..<end
/// 21 attributes: int16             bits 0-2 codec, 3 timestamp type, 4 transactional, 5 control, 6 delete horizon
/// 23 lastOffsetDelta: int32
/// 27 baseTimestamp: int64
/// 35 maxTimestamp: int64
/// 43 producerId: int64
/// 51 producerEpoch: int16
/// 53 baseSequence: int32
/// 57 recordCount: int32
/// 61 records (compressed as a whole when the codec is not none)
/// ```
/// A `RecordBatch` never copies or decodes its records until asked: header fields are read at
/// fixed positions, `validate()` checks the header and the CRC over the slice, and
/// `setBaseOffset(_:)` / `setPartitionLeaderEpoch(_:)` patch the fields that lie outside the CRC.
/// The storage layer appends `bytes` exactly as received.
public struct RecordBatch: Sendable, Equatable {
    /// The batch's bytes: exactly `batchLength + 12` readable bytes.
    public private(set) var bytes: ByteBuffer

    public static let headerSize = 61
    /// Bytes before `batchLength`'s count begins (baseOffset + batchLength).
    public static let logOverhead = 12
    public static let magicOffset = 16
    public static let crcOffset = 17
    public static let attributesOffset = 21
    public static let currentMagic: Int8 = 2
    /// Kafka's `RecordBatch.NO_PRODUCER_ID`, `NO_PRODUCER_EPOCH`, `NO_SEQUENCE`, `NO_PARTITION_LEADER_EPOCH`.
    public static let noProducerID: Int64 = -1
    public static let noProducerEpoch: Int16 = -1
    public static let noSequence: Int32 = -1
    public static let noPartitionLeaderEpoch: Int32 = -1
    public static let noTimestamp: Int64 = -1

    /// Wraps `bytes`, which must hold exactly one batch; checks only that the size fields agree.
    public init(bytes: ByteBuffer) throws(ProtocolError) {
        guard bytes.readableBytes >= Self.headerSize else {
            throw ProtocolError.truncated(need: Self.headerSize, have: bytes.readableBytes)
        }
        let length = bytes.getInteger(at: bytes.readerIndex + 8, endianness: .big, as: Int32.self) ?? -1
        guard Int(length) + Self.logOverhead == bytes.readableBytes else {
            throw ProtocolError.corruptRecord("batch length \(length) does not match \(bytes.readableBytes - Self.logOverhead) bytes")
        }
        self.bytes = bytes
    }

    /// Reads the next complete batch from `buffer` as a slice (no copy).
    ///
    /// Returns nil, consuming nothing, when `buffer` holds only part of a batch (a fetch response
    /// may end with a partial batch). Throws when the size fields are impossible or the magic
    /// byte is not 2 (legacy v0/v1 message sets are refused; see ARCHITECTURE.md).
    public static func read(from buffer: inout ByteBuffer) throws(ProtocolError) -> RecordBatch? {
        guard buffer.readableBytes >= Self.logOverhead + 5,
            let length = buffer.getInteger(at: buffer.readerIndex + 8, endianness: .big, as: Int32.self),
            let magic = buffer.getInteger(at: buffer.readerIndex + Self.magicOffset, as: Int8.self)
        else { return nil }
        guard magic == Self.currentMagic else {
            throw ProtocolError.corruptRecord("unsupported magic \(magic)")
        }
        guard Int(length) >= Self.headerSize - Self.logOverhead else {
            throw ProtocolError.corruptRecord("batch length \(length) shorter than the v2 header")
        }
        guard let slice = buffer.readSlice(length: Int(length) + Self.logOverhead) else { return nil }
        return try RecordBatch(bytes: slice)
    }

    // MARK: Header fields

    @inlinable func int64(_ offset: Int) -> Int64 {
        bytes.getInteger(at: bytes.readerIndex + offset, endianness: .big, as: Int64.self) ?? 0
    }
    @inlinable func int32(_ offset: Int) -> Int32 {
        bytes.getInteger(at: bytes.readerIndex + offset, endianness: .big, as: Int32.self) ?? 0
    }
    @inlinable func int16(_ offset: Int) -> Int16 {
        bytes.getInteger(at: bytes.readerIndex + offset, endianness: .big, as: Int16.self) ?? 0
    }

    public var baseOffset: Int64 { int64(0) }
    public var batchLength: Int32 { int32(8) }
    public var partitionLeaderEpoch: Int32 { int32(12) }
    public var magic: Int8 { bytes.getInteger(at: bytes.readerIndex + Self.magicOffset, as: Int8.self) ?? 0 }
    public var crc: UInt32 { UInt32(bitPattern: int32(Self.crcOffset)) }
    public var attributes: RecordBatchAttributes { RecordBatchAttributes(rawValue: int16(Self.attributesOffset)) }
    public var lastOffsetDelta: Int32 { int32(23) }
    public var baseTimestamp: Int64 { int64(27) }
    public var maxTimestamp: Int64 { int64(35) }
    public var producerID: Int64 { int64(43) }
    public var producerEpoch: Int16 { int16(51) }
    public var baseSequence: Int32 { int32(53) }
    public var recordCount: Int32 { int32(57) }
    /// The offset of the last record: `baseOffset + lastOffsetDelta`.
    public var lastOffset: Int64 { baseOffset &+ Int64(lastOffsetDelta) }  // wrapping: never traps on forged input
    /// The offset after this batch.
    public var nextOffset: Int64 { lastOffset &+ 1 }
    /// The sequence of the last record, wrapping at `Int32.max` as Kafka's does.
    public var lastSequence: Int32 {
        let base = baseSequence
        if base == Self.noSequence { return Self.noSequence }
        let delta = lastOffsetDelta
        return base > Int32.max - delta ? delta - (Int32.max - base) - 1 : base + delta
    }
    /// The size in bytes, including the 12-byte log overhead.
    public var sizeInBytes: Int { bytes.readableBytes }

    /// The CRC32C the batch's bytes actually have (attributes to end).
    public func computeChecksum() -> UInt32 {
        bytes.withUnsafeReadableBytes { raw in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[Self.attributesOffset...]))
        }
    }

    /// Checks the header and the CRC without decoding any record.
    ///
    /// Throws `ProtocolError.corruptRecord` naming the first problem: wrong magic, a CRC mismatch,
    /// a negative record count, a last offset delta that does not fit the count, an unknown codec.
    public func validate() throws(ProtocolError) {
        try bytes.withUnsafeReadableBytes { (raw) throws(ProtocolError) in
            try RecordBatchHeader(parsing: raw).validate(batch: raw)
        }
    }

    // MARK: In-place updates

    /// Sets `baseOffset` (outside the CRC): how a batch gets its offsets without re-encoding.
    ///
    /// `ByteBuffer` is copy-on-write: this writes 8 bytes in place only while the batch's storage
    /// is uniquely referenced. A batch sliced from a request frame that is still alive shares the
    /// frame's storage, so the log does not call this on the produce path; it writes a patched
    /// copy of the first 16 bytes followed by the untouched rest (see `LogSegment`).
    public mutating func setBaseOffset(_ offset: Int64) {
        bytes.setInteger(offset, at: bytes.readerIndex, endianness: .big)
    }

    /// Sets `partitionLeaderEpoch` (outside the CRC).
    public mutating func setPartitionLeaderEpoch(_ epoch: Int32) {
        bytes.setInteger(epoch, at: bytes.readerIndex + 12, endianness: .big)
    }

    /// Stamps the batch with the broker's append time (`message.timestamp.type=LogAppendTime`):
    /// sets the timestamp-type bit and `maxTimestamp`, then rewrites the CRC, as Kafka's
    /// `setMaxTimestamp` does.
    public mutating func setLogAppendTime(_ timestamp: Int64) {
        var attributes = self.attributes
        attributes.timestampType = .logAppendTime
        bytes.setInteger(attributes.rawValue, at: bytes.readerIndex + Self.attributesOffset, endianness: .big)
        bytes.setInteger(timestamp, at: bytes.readerIndex + 35, endianness: .big)
        let crc = computeChecksum()
        bytes.setInteger(crc, at: bytes.readerIndex + Self.crcOffset, endianness: .big)
    }

    // MARK: Records

    /// The records, decompressed if needed (output capped at `decompressionLimit` bytes).
    ///
    /// Keys, values and header values are slices of the (decompressed) buffer.
    public func records(decompressionLimit: Int = 64 * 1024 * 1024) throws(ProtocolError) -> [Record] {
        var iterator = try makeRecordIterator(decompressionLimit: decompressionLimit)
        var out: [Record] = []
        out.reserveCapacity(Swift.min(Int(Swift.max(0, recordCount)), bytes.readableBytes))
        while let record = try iterator.next() {
            out.append(record)
        }
        return out
    }

    /// A lazy iterator over the records: decodes one record per `next()`.
    public func makeRecordIterator(decompressionLimit: Int = 64 * 1024 * 1024) throws(ProtocolError) -> RecordIterator {
        var payload = bytes
        payload.moveReaderIndex(forwardBy: Self.headerSize)
        let codecValue = attributes.compressionRawValue
        guard let codec = CompressionCodec(rawValue: codecValue) else {
            throw ProtocolError.corruptRecord("unknown compression codec \(codecValue)")
        }
        if codec != .none {
            do {
                payload = try codec.decompress(payload, limit: decompressionLimit)
            } catch {
                throw ProtocolError.compression(error.description)
            }
        }
        return RecordIterator(
            payload: payload, remaining: Int(recordCount), baseOffset: baseOffset,
            baseTimestamp: baseTimestamp, maxTimestamp: maxTimestamp,
            logAppendTime: attributes.timestampType == .logAppendTime)
    }

    /// Decodes records one at a time from a batch's (decompressed) record area.
    public struct RecordIterator: Sendable {
        var payload: ByteBuffer
        var remaining: Int
        let baseOffset: Int64
        let baseTimestamp: Int64
        let maxTimestamp: Int64
        let logAppendTime: Bool

        /// The next record, nil after the last; throws on malformed bytes or trailing garbage.
        public mutating func next() throws(ProtocolError) -> Record? {
            guard remaining > 0 else {
                guard payload.readableBytes == 0 else {
                    throw ProtocolError.corruptRecord("\(payload.readableBytes) bytes after the last record")
                }
                return nil
            }
            remaining -= 1
            var record = try Record.read(from: &payload)
            record.offset = baseOffset &+ Int64(record.offsetDelta)  // wrapping: deltas come from the client
            record.timestamp = logAppendTime ? maxTimestamp : baseTimestamp &+ record.timestampDelta
            return record
        }
    }
}

/// The 16-bit attributes of a RecordBatch.
public struct RecordBatchAttributes: Sendable, Hashable {
    public var rawValue: Int16

    public init(rawValue: Int16) { self.rawValue = rawValue }

    public init(compression: CompressionCodec = .none, timestampType: TimestampType = .createTime,
                isTransactional: Bool = false, isControl: Bool = false) {
        self.rawValue = 0
        self.compression = compression
        self.timestampType = timestampType
        self.isTransactional = isTransactional
        self.isControl = isControl
    }

    /// The raw codec bits (0-2), which may name a codec this build does not know.
    public var compressionRawValue: Int8 { Int8(rawValue & 0x07) }

    public var compression: CompressionCodec {
        get { CompressionCodec(rawValue: compressionRawValue) ?? .none }
        set { rawValue = (rawValue & ~0x07) | Int16(newValue.rawValue) }
    }

    public var timestampType: TimestampType {
        get { rawValue & 0x08 != 0 ? .logAppendTime : .createTime }
        set { rawValue = newValue == .logAppendTime ? rawValue | 0x08 : rawValue & ~0x08 }
    }

    public var isTransactional: Bool {
        get { rawValue & 0x10 != 0 }
        set { rawValue = newValue ? rawValue | 0x10 : rawValue & ~0x10 }
    }

    public var isControl: Bool {
        get { rawValue & 0x20 != 0 }
        set { rawValue = newValue ? rawValue | 0x20 : rawValue & ~0x20 }
    }

    /// Set by the log cleaner when `baseTimestamp` holds the delete horizon (KIP-534).
    public var hasDeleteHorizon: Bool {
        get { rawValue & 0x40 != 0 }
        set { rawValue = newValue ? rawValue | 0x40 : rawValue & ~0x40 }
    }
}

/// Kafka's `TimestampType` of a batch.
public enum TimestampType: Int8, Sendable {
    case createTime = 0
    case logAppendTime = 1
}
