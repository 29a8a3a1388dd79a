import FjordProtocol
import NIOCore
import Testing

@Suite("Wire primitives")
struct WirePrimitivesTests {
    static let unsignedCases: [(UInt32, [UInt8])] = [
        (0, [0x00]),
        (1, [0x01]),
        (127, [0x7F]),
        (128, [0x80, 0x01]),
        (300, [0xAC, 0x02]),
        (16_383, [0xFF, 0x7F]),
        (UInt32.max, [0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),
    ]

    static let signedCases: [(Int32, [UInt8])] = [
        (0, [0x00]), (-1, [0x01]), (1, [0x02]), (-2, [0x03]), (63, [0x7E]), (-64, [0x7F]),
        (64, [0x80, 0x01]), (Int32.max, [0xFE, 0xFF, 0xFF, 0xFF, 0x0F]), (Int32.min, [0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),
    ]

    @Test("unsigned varints match the protocol guide's examples", arguments: unsignedCases)
    func unsignedVarint(value: UInt32, encoded: [UInt8]) throws {
        var buffer = ByteBuffer()
        buffer.writeKafkaUnsignedVarint(value)
        #expect(buffer.allBytes == encoded)
        #expect(try buffer.readKafkaUnsignedVarint() == value)
        #expect(buffer.readableBytes == 0)
    }

    @Test("zig-zag varints round-trip and use the zig-zag mapping", arguments: signedCases)
    func varint(value: Int32, encoded: [UInt8]) throws {
        var buffer = ByteBuffer()
        buffer.writeKafkaVarint(value)
        #expect(buffer.allBytes == encoded)
        #expect(KafkaVarint.size(value) == encoded.count)
        #expect(try buffer.readKafkaVarint() == value)
    }

    @Test("varlongs round-trip at the extremes")
    func varlong() throws {
        for value: Int64 in [0, -1, 1, Int64.max, Int64.min, 1 << 40, -(1 << 40)] {
            var buffer = ByteBuffer()
            buffer.writeKafkaVarlong(value)
            #expect(buffer.readableBytes == KafkaVarint.size(value))
            #expect(try buffer.readKafkaVarlong() == value)
        }
    }

    @Test("a varint longer than 5 bytes, or a varlong longer than 10, is refused")
    func overlongVarints() {
        var five = ByteBuffer(bytes: [0x80, 0x80, 0x80, 0x80, 0x80, 0x01])
        #expect(throws: ProtocolError.varintTooLong) { try five.readKafkaUnsignedVarint() }
        var ten = ByteBuffer(bytes: [UInt8](repeating: 0x80, count: 10) + [0x01])
        #expect(throws: ProtocolError.varintTooLong) { try ten.readKafkaVarlong() }
        var truncated = ByteBuffer(bytes: [0x80, 0x80])
        #expect(throws: ProtocolError.self) { try truncated.readKafkaUnsignedVarint() }
        #expect(truncated.readableBytes == 2, "a failed read consumes nothing")
    }

    @Test("strings: classic and compact, null and empty")
    func strings() throws {
        var buffer = ByteBuffer()
        buffer.writeKafkaString("kafka", compact: false)
        buffer.writeKafkaNullableString(nil, compact: false)
        buffer.writeKafkaString("", compact: true)
        buffer.writeKafkaNullableString(nil, compact: true)
        buffer.writeKafkaString("fjörd", compact: true)
        #expect(buffer.allBytes == [0, 5] + Array("kafka".utf8) + [0xFF, 0xFF] + [1] + [0] + [7] + Array("fjörd".utf8))
        #expect(try buffer.readKafkaString(compact: false) == "kafka")
        #expect(try buffer.readKafkaNullableString(compact: false) == nil)
        #expect(try buffer.readKafkaString(compact: true) == "")
        #expect(try buffer.readKafkaNullableString(compact: true) == nil)
        #expect(try buffer.readKafkaString(compact: true) == "fjörd")
    }

    @Test("lengths past the end and negative lengths throw instead of trapping")
    func badLengths() {
        var past = ByteBuffer(bytes: [0, 10, 65, 66])
        #expect(throws: ProtocolError.truncated(need: 10, have: 2)) { try past.readKafkaString(compact: false) }
        var negative = ByteBuffer(bytes: [0xFF, 0xFE])
        #expect(throws: ProtocolError.invalidLength(-2)) { try negative.readKafkaNullableString(compact: false) }
        var nullNotAllowed = ByteBuffer(bytes: [0xFF, 0xFF])
        #expect(throws: ProtocolError.self) { try nullNotAllowed.readKafkaString(compact: false) }
        var hugeArray = ByteBuffer(bytes: [0x7F, 0xFF, 0xFF, 0xFF, 1, 2])
        #expect(throws: ProtocolError.self) { try hugeArray.readKafkaArrayCount(compact: false) }
        var negativeBytes = ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0xF0])
        #expect(throws: ProtocolError.self) { try negativeBytes.readKafkaNullableBytes(compact: false) }
    }

    @Test("bytes fields are slices of the input, not copies")
    func bytesAreSlices() throws {
        var buffer = ByteBuffer()
        buffer.writeKafkaBytes(ByteBuffer(bytes: [1, 2, 3]), compact: true)
        let slice = try buffer.readKafkaBytes(compact: true)
        #expect(slice.allBytes == [1, 2, 3])
        let sharesStorage = slice.withUnsafeReadableBytes { s in
            buffer.withUnsafeReadableBytes { b in s.baseAddress! == b.baseAddress! - 3 }
        }
        #expect(sharesStorage)
    }

    @Test("UUIDs print and parse as Kafka's base64 form")
    func uuids() throws {
        let id = KafkaUUID(mostSignificantBits: 0x0123_4567_89AB_CDEF, leastSignificantBits: 0xFEDC_BA98_7654_3210)
        let text = id.description
        #expect(text.utf8.count == 22)
        #expect(KafkaUUID(text) == id)
        #expect(KafkaUUID.zero.description == "AAAAAAAAAAAAAAAAAAAAAA")
        #expect(KafkaUUID("not a uuid") == nil)
        var buffer = ByteBuffer()
        buffer.writeKafkaUUID(id)
        #expect(try buffer.readKafkaUUID() == id)
    }

    @Test("tagged fields are written in ascending tag order")
    func taggedFieldOrder() throws {
        var buffer = ByteBuffer()
        buffer.writeKafkaTaggedFields([
            TaggedField(tag: 5, data: ByteBuffer(bytes: [0xAA])),
            TaggedField(tag: 1, data: ByteBuffer(bytes: [0xBB, 0xCC])),
        ])
        #expect(buffer.allBytes == [2, 1, 2, 0xBB, 0xCC, 5, 1, 0xAA])
    }
}
