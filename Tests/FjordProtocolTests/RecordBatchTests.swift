import FjordCompression
import FjordProtocol
import NIOCore
import Testing

@Suite("Record batches")
struct RecordBatchTests {
    static func sampleRecords(count: Int) -> [(Int64, ByteBuffer?, ByteBuffer?, [RecordHeader])] {
        (0..<count).map { i in
            let key: ByteBuffer? = i % 5 == 0 ? nil : ByteBuffer(string: "key-\(i)")
            let value: ByteBuffer? = i % 7 == 3 ? nil : ByteBuffer(string: String(repeating: "v\(i)", count: i % 13 + 1))
            var headers: [RecordHeader] = []
            for h in 0..<(i % 4) {
                headers.append(RecordHeader(key: "h\(h)", value: h == 1 ? nil : ByteBuffer(string: "hv\(i)")))
            }
            return (1_700_000_000_000 + Int64(i * 3), key, value, headers)
        }
    }

    @Test("CRC32C known answers, hardware and portable agree")
    func crcKnownAnswers() {
        let digits = Array("123456789".utf8)
        digits.withUnsafeBytes { #expect(CRC32C.checksum($0) == 0xE306_9283) }
        digits.withUnsafeBytes { #expect(CRC32C.portableChecksum($0) == 0xE306_9283) }
        [UInt8](repeating: 0, count: 32).withUnsafeBytes { #expect(CRC32C.checksum($0) == 0x8A91_36AA) }
        [UInt8](repeating: 0xFF, count: 32).withUnsafeBytes { #expect(CRC32C.checksum($0) == 0x62A8_AB43) }
        var generator = SystemRandomNumberGenerator()
        for length in [0, 1, 7, 8, 9, 255, 256, 257, 4095, 8192 * 3 + 17, 1 << 20] {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            bytes.withUnsafeBytes { raw in
                let oneShot = CRC32C.checksum(raw)
                #expect(oneShot == CRC32C.portableChecksum(raw))
                let split = length / 3
                let first = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[..<split]))
                #expect(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[split...]), continuing: first) == oneShot)
            }
        }
    }

    @Test("build, read back and validate a batch with each codec", arguments: CompressionCodec.allCases)
    func roundTrip(codec: CompressionCodec) throws {
        var builder = RecordBatchBuilder(baseOffset: 0, attributes: RecordBatchAttributes(compression: codec))
        builder.producerID = 4711
        builder.producerEpoch = 3
        builder.baseSequence = 42
        let samples = Self.sampleRecords(count: 200)
        for (timestamp, key, value, headers) in samples {
            builder.append(timestamp: timestamp, key: key, value: value, headers: headers)
        }
        let built = try builder.build()
        var wire = built.bytes
        wire.writeString("trailing partial")  // a following partial batch must not be consumed
        let batch = try #require(try RecordBatch.read(from: &wire))
        try batch.validate()
        #expect(batch.recordCount == 200)
        #expect(batch.lastOffsetDelta == 199)
        #expect(batch.producerID == 4711)
        #expect(batch.producerEpoch == 3)
        #expect(batch.baseSequence == 42)
        #expect(batch.lastSequence == 241)
        #expect(batch.attributes.compression == codec)
        #expect(batch.baseTimestamp == samples[0].0)
        #expect(batch.maxTimestamp == samples[199].0)
        let records = try batch.records()
        #expect(records.count == 200)
        for (index, record) in records.enumerated() {
            #expect(record.offset == Int64(index))
            #expect(record.timestamp == samples[index].0)
            #expect(record.key == samples[index].1)
            #expect(record.value == samples[index].2)
            #expect(record.headers == samples[index].3)
        }
        #expect(try RecordBatch.read(from: &wire) == nil, "a partial batch is left for later")
    }

    @Test("assigning offsets and leader epochs in place keeps the CRC valid")
    func patchOutsideCRC() throws {
        var builder = RecordBatchBuilder()
        builder.append(timestamp: 10, key: nil, value: ByteBuffer(string: "x"))
        var batch = try builder.build()
        batch.setBaseOffset(1_000_000)
        batch.setPartitionLeaderEpoch(7)
        try batch.validate()
        #expect(batch.baseOffset == 1_000_000)
        #expect(batch.partitionLeaderEpoch == 7)
        #expect(try batch.records()[0].offset == 1_000_000)
        batch.setLogAppendTime(99_999)
        try batch.validate()
        #expect(batch.attributes.timestampType == .logAppendTime)
        #expect(try batch.records()[0].timestamp == 99_999)
    }

    @Test("a flipped bit anywhere inside the CRC range is detected")
    func corruptionDetected() throws {
        var builder = RecordBatchBuilder(attributes: RecordBatchAttributes(compression: .none))
        for (timestamp, key, value, headers) in Self.sampleRecords(count: 20) {
            builder.append(timestamp: timestamp, key: key, value: value, headers: headers)
        }
        let good = try builder.build().bytes
        for position in stride(from: RecordBatch.attributesOffset, to: good.readableBytes, by: 7) {
            var bad = good
            let byte = bad.getInteger(at: position, as: UInt8.self)!
            bad.setInteger(byte ^ 0x10, at: position)
            let batch = try RecordBatch(bytes: bad)
            #expect(throws: ProtocolError.self) { try batch.validate() }
        }
    }

    @Test("legacy magic and impossible lengths are refused with an error")
    func refusals() throws {
        var builder = RecordBatchBuilder()
        builder.append(timestamp: 1, key: nil, value: nil)
        var bytes = try builder.build().bytes
        bytes.setInteger(Int8(1), at: RecordBatch.magicOffset)
        #expect(throws: ProtocolError.self) { _ = try RecordBatch.read(from: &bytes) }
        var short = ByteBuffer(bytes: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 2])
        #expect(throws: ProtocolError.self) { _ = try RecordBatch.read(from: &short) }
    }

    @Test("a compressed batch that would expand past the limit is refused", arguments: [CompressionCodec.gzip, .snappy, .lz4, .zstd])
    func decompressionLimit(codec: CompressionCodec) throws {
        var builder = RecordBatchBuilder(attributes: RecordBatchAttributes(compression: codec))
        let zeros = ByteBuffer(repeating: 0, count: 1 << 20)
        for i in 0..<8 {
            builder.append(timestamp: Int64(i), key: nil, value: zeros)
        }
        let batch = try builder.build()
        #expect(batch.sizeInBytes < 1 << 20)
        #expect(throws: ProtocolError.self) { _ = try batch.records(decompressionLimit: 1 << 20) }
        #expect(try batch.records(decompressionLimit: 16 << 20).count == 8)
    }
}

@Suite("Compression codecs")
struct CompressionCodecTests {
    @Test("compress then decompress gives the input back", arguments: CompressionCodec.allCases)
    func roundTrip(codec: CompressionCodec) throws {
        var generator = SystemRandomNumberGenerator()
        for size in [0, 1, 100, 32 * 1024, 32 * 1024 + 1, 300_000] {
            var input = ByteBuffer()
            for i in 0..<size {
                input.writeInteger(i % 3 == 0 ? UInt8.random(in: 0...255, using: &generator) : UInt8(i % 251))
            }
            let compressed = try codec.compress(input)
            let output = try codec.decompress(compressed, limit: size)
            #expect(output == input)
        }
    }

    @Test("truncated and garbage input throw", arguments: [CompressionCodec.gzip, .snappy, .lz4, .zstd])
    func corruptInput(codec: CompressionCodec) throws {
        let input = ByteBuffer(string: String(repeating: "fjord kafka ", count: 5000))
        let compressed = try codec.compress(input)
        let truncated = compressed.getSlice(at: compressed.readerIndex, length: compressed.readableBytes / 2)!
        #expect(throws: CompressionError.self) { _ = try codec.decompress(truncated, limit: 1 << 20) }
        let garbage = ByteBuffer(bytes: [UInt8](repeating: 0xA5, count: 64))
        #expect(throws: CompressionError.self) { _ = try codec.decompress(garbage, limit: 1 << 20) }
    }

    @Test("plain (unframed) snappy, as librdkafka may send, decodes too")
    func plainSnappy() throws {
        // Snappy raw block for "hello hello hello" produced by the reference implementation.
        let input = ByteBuffer(string: "hello hello hello")
        let framed = try CompressionCodec.snappy.compress(input)
        // Strip xerial's 16-byte header and the 4-byte block length to get the raw block.
        let raw = framed.getSlice(at: framed.readerIndex + 20, length: framed.readableBytes - 20)!
        #expect(try CompressionCodec.snappy.decompress(raw, limit: 1024) == input)
    }
}
