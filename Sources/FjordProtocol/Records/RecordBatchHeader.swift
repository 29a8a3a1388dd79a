import NIOCore

/// The 61-byte header of a RecordBatch v2, parsed from raw memory (a mapped segment, a read
/// buffer) without copying the batch. `RecordBatch` reads the same fields from a `ByteBuffer`.
///
/// Used where batches are scanned in bulk (log recovery, index rebuilds, producer-state
/// rebuilds): `parse` checks the sizes and magic, `validate` adds the CRC over the batch's bytes.
public struct RecordBatchHeader: Sendable, Equatable {
    public var baseOffset: Int64
    public var batchLength: Int32
    public var partitionLeaderEpoch: Int32
    public var magic: Int8
    public var crc: UInt32
    public var attributes: RecordBatchAttributes
    public var lastOffsetDelta: Int32
    public var baseTimestamp: Int64
    public var maxTimestamp: Int64
    public var producerID: Int64
    public var producerEpoch: Int16
    public var baseSequence: Int32
    public var recordCount: Int32

    /// Bytes the whole batch occupies, including the 12-byte log overhead.
    public var sizeInBytes: Int { Int(batchLength) + RecordBatch.logOverhead }
    /// Wrapping, so a header that was not parsed (`loadingFieldsFrom`) cannot trap.
    public var lastOffset: Int64 { baseOffset &+ Int64(lastOffsetDelta) }
    public var nextOffset: Int64 { lastOffset &+ 1 }
    public var lastSequence: Int32 {
        if baseSequence == RecordBatch.noSequence { return RecordBatch.noSequence }
        let delta = lastOffsetDelta
        return baseSequence > Int32.max - delta ? delta - (Int32.max - baseSequence) - 1 : baseSequence + delta
    }
    public var hasProducerID: Bool { producerID >= 0 }

    @inline(__always)
    static func load<T: FixedWidthInteger>(_ raw: UnsafeRawBufferPointer, _ offset: Int, as type: T.Type) -> T {
        T(bigEndian: raw.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    /// Parses the header at the start of `raw`. Throws when fewer than 61 bytes are there,
    /// the magic is not 2, or the length field is shorter than a header. Does not require the
    /// whole batch to be present (see `sizeInBytes`).
    public init(parsing raw: UnsafeRawBufferPointer) throws(ProtocolError) {
        guard raw.count >= RecordBatch.headerSize else {
            throw ProtocolError.truncated(need: RecordBatch.headerSize, have: raw.count)
        }
        self.init(loadingFieldsFrom: raw)
        guard magic == RecordBatch.currentMagic else { throw ProtocolError.corruptRecord("unsupported magic \(magic)") }
        guard Int(batchLength) >= RecordBatch.headerSize - RecordBatch.logOverhead else {
            throw ProtocolError.corruptRecord("batch length \(batchLength) shorter than the v2 header")
        }
        // lastOffset and nextOffset must be computable: base offsets near Int64.max (a forged
        // produce, a damaged segment) or negative deltas are refused here, not trapped on later.
        guard lastOffsetDelta >= 0, baseOffset <= Int64.max - Int64(lastOffsetDelta) - 1 else {
            throw ProtocolError.corruptRecord("base offset \(baseOffset) with last offset delta \(lastOffsetDelta) is out of range")
        }
    }

    /// Loads the fields without checking them; `raw` must hold at least `headerSize` bytes.
    init(loadingFieldsFrom raw: UnsafeRawBufferPointer) {
        precondition(raw.count >= RecordBatch.headerSize)
        magic = Self.load(raw, RecordBatch.magicOffset, as: Int8.self)
        baseOffset = Self.load(raw, 0, as: Int64.self)
        batchLength = Self.load(raw, 8, as: Int32.self)
        partitionLeaderEpoch = Self.load(raw, 12, as: Int32.self)
        crc = Self.load(raw, RecordBatch.crcOffset, as: UInt32.self)
        attributes = RecordBatchAttributes(rawValue: Self.load(raw, RecordBatch.attributesOffset, as: Int16.self))
        lastOffsetDelta = Self.load(raw, 23, as: Int32.self)
        baseTimestamp = Self.load(raw, 27, as: Int64.self)
        maxTimestamp = Self.load(raw, 35, as: Int64.self)
        producerID = Self.load(raw, 43, as: Int64.self)
        producerEpoch = Self.load(raw, 51, as: Int16.self)
        baseSequence = Self.load(raw, 53, as: Int32.self)
        recordCount = Self.load(raw, 57, as: Int32.self)
    }

    /// Checks the CRC and the header's consistency against the whole batch in `raw`
    /// (`raw.count` must be at least `sizeInBytes`).
    public func validate(batch raw: UnsafeRawBufferPointer) throws(ProtocolError) {
        guard raw.count >= sizeInBytes else { throw ProtocolError.truncated(need: sizeInBytes, have: raw.count) }
        let actual = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[RecordBatch.attributesOffset..<sizeInBytes]))
        guard actual == crc else { throw ProtocolError.corruptRecord("CRC mismatch: stored \(crc), computed \(actual)") }
        guard recordCount >= 0 else { throw ProtocolError.corruptRecord("negative record count \(recordCount)") }
        guard lastOffsetDelta >= 0, recordCount == 0 || lastOffsetDelta >= recordCount - 1 || attributes.isControl else {
            throw ProtocolError.corruptRecord("last offset delta \(lastOffsetDelta) does not fit \(recordCount) records")
        }
        guard attributes.compressionRawValue <= 4 else {
            throw ProtocolError.corruptRecord("unknown compression codec \(attributes.compressionRawValue)")
        }
    }
}

extension RecordBatch {
    /// The parsed header fields (no copy; `init(bytes:)` guaranteed a full header's bytes).
    public var header: RecordBatchHeader {
        bytes.withUnsafeReadableBytes { RecordBatchHeader(loadingFieldsFrom: $0) }
    }
}
