public import FjordCompression
public import NIOCore

/// Builds one RecordBatch v2: records are encoded straight into one growing buffer (no
/// per-record allocation), then the header, compression and CRC are written once in `build()`.
///
/// Offsets and timestamps are given per record; the builder derives the deltas from the first
/// record's offset and timestamp, as Kafka's `MemoryRecordsBuilder` does.
public struct RecordBatchBuilder: Sendable {
    public var baseOffset: Int64
    public var partitionLeaderEpoch: Int32 = RecordBatch.noPartitionLeaderEpoch
    public var attributes: RecordBatchAttributes
    public var producerID: Int64 = RecordBatch.noProducerID
    public var producerEpoch: Int16 = RecordBatch.noProducerEpoch
    public var baseSequence: Int32 = RecordBatch.noSequence
    /// Overrides the last offset delta (≥ the last record's). The log cleaner keeps a batch's
    /// original last offset when it drops records, as Kafka does, so producer state stays valid.
    public var lastOffsetDeltaOverride: Int32? = nil

    private var records: ByteBuffer
    private(set) public var recordCount: Int32 = 0
    private var baseTimestamp: Int64 = RecordBatch.noTimestamp
    private var maxTimestamp: Int64 = RecordBatch.noTimestamp
    private var lastOffsetDelta: Int32 = 0

    public init(baseOffset: Int64 = 0, attributes: RecordBatchAttributes = RecordBatchAttributes(),
                allocator: ByteBufferAllocator = ByteBufferAllocator(), initialCapacity: Int = 1024) {
        self.baseOffset = baseOffset
        self.attributes = attributes
        self.records = allocator.buffer(capacity: initialCapacity)
    }

    /// The uncompressed size of the records appended so far (without the 61-byte header).
    public var uncompressedRecordBytes: Int { records.readableBytes }

    /// Appends a record with `offsetDelta` = number of records so far.
    public mutating func append(timestamp: Int64, key: ByteBuffer?, value: ByteBuffer?, headers: [RecordHeader] = []) {
        append(offsetDelta: recordCount, timestamp: timestamp, key: key, value: value, headers: headers)
    }

    /// Appends a record at an explicit offset delta (deltas must increase; compacted batches have gaps).
    public mutating func append(offsetDelta: Int32, timestamp: Int64, key: ByteBuffer?, value: ByteBuffer?,
                                headers: [RecordHeader] = []) {
        if recordCount == 0 {
            baseTimestamp = timestamp
        }
        if timestamp > maxTimestamp { maxTimestamp = timestamp }
        let record = Record(key: key, value: value, headers: headers,
                            timestampDelta: timestamp &- baseTimestamp, offsetDelta: offsetDelta)
        record.write(to: &records)
        lastOffsetDelta = offsetDelta
        recordCount += 1
    }

    /// Encodes the batch: header, (compressed) records and CRC32C.
    public func build(allocator: ByteBufferAllocator = ByteBufferAllocator()) throws(CompressionError) -> RecordBatch {
        let payload = try attributes.compression.compress(records, allocator: allocator)
        var out = allocator.buffer(capacity: RecordBatch.headerSize + payload.readableBytes)
        out.writeInteger(baseOffset, endianness: .big)
        out.writeInteger(Int32(RecordBatch.headerSize - RecordBatch.logOverhead + payload.readableBytes), endianness: .big)
        out.writeInteger(partitionLeaderEpoch, endianness: .big)
        out.writeInteger(RecordBatch.currentMagic)
        out.writeInteger(UInt32(0), endianness: .big)  // CRC, patched below
        out.writeInteger(attributes.rawValue, endianness: .big)
        out.writeInteger(Swift.max(lastOffsetDelta, lastOffsetDeltaOverride ?? lastOffsetDelta), endianness: .big)
        out.writeInteger(baseTimestamp, endianness: .big)
        out.writeInteger(maxTimestamp, endianness: .big)
        out.writeInteger(producerID, endianness: .big)
        out.writeInteger(producerEpoch, endianness: .big)
        out.writeInteger(baseSequence, endianness: .big)
        out.writeInteger(recordCount, endianness: .big)
        out.writeImmutableBuffer(payload)
        let crc = out.withUnsafeReadableBytes { raw in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[RecordBatch.attributesOffset...]))
        }
        out.setInteger(crc, at: RecordBatch.crcOffset, endianness: .big)
        // The size fields were written from the same payload, so this cannot fail.
        do {
            return try RecordBatch(bytes: out)
        } catch {
            preconditionFailure("RecordBatchBuilder wrote an inconsistent batch: \(error)")
        }
    }
}
