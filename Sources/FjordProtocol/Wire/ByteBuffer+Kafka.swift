public import NIOCore

// Kafka's primitive types (docs/protocol.html, "Protocol Primitive Types") on `ByteBuffer`.
//
// `readKafka*` consume bytes and throw `ProtocolError` when the input is short or malformed, so
// generated decoders can propagate one typed error instead of checking optionals at every field.
// `writeKafka*` append. Lengths are validated against the bytes that remain before anything is
// allocated, so a hostile length prefix cannot make the decoder reserve memory it will not fill.

extension ByteBuffer {
    // MARK: Fixed-width integers

    @inlinable
    public mutating func readKafkaBool() throws(ProtocolError) -> Bool {
        try self.readKafkaInt8() != 0
    }

    /// Reads one big-endian fixed-width integer, or throws `truncated` naming its size.
    @inlinable
    mutating func readKafkaFixedWidth<T: FixedWidthInteger>(_ type: T.Type) throws(ProtocolError) -> T {
        guard let value = self.readInteger(endianness: .big, as: T.self) else {
            throw ProtocolError.truncated(need: MemoryLayout<T>.size, have: self.readableBytes)
        }
        return value
    }

    @inlinable
    public mutating func readKafkaInt8() throws(ProtocolError) -> Int8 { try readKafkaFixedWidth(Int8.self) }

    @inlinable
    public mutating func readKafkaInt16() throws(ProtocolError) -> Int16 { try readKafkaFixedWidth(Int16.self) }

    @inlinable
    public mutating func readKafkaUInt16() throws(ProtocolError) -> UInt16 { try readKafkaFixedWidth(UInt16.self) }

    @inlinable
    public mutating func readKafkaInt32() throws(ProtocolError) -> Int32 { try readKafkaFixedWidth(Int32.self) }

    @inlinable
    public mutating func readKafkaUInt32() throws(ProtocolError) -> UInt32 { try readKafkaFixedWidth(UInt32.self) }

    @inlinable
    public mutating func readKafkaInt64() throws(ProtocolError) -> Int64 { try readKafkaFixedWidth(Int64.self) }

    @inlinable
    public mutating func readKafkaFloat64() throws(ProtocolError) -> Double {
        Double(bitPattern: try readKafkaFixedWidth(UInt64.self))
    }

    @inlinable
    public mutating func readKafkaUUID() throws(ProtocolError) -> KafkaUUID {
        guard self.readableBytes >= 16,
            let high = self.readInteger(endianness: .big, as: UInt64.self),
            let low = self.readInteger(endianness: .big, as: UInt64.self)
        else {
            throw ProtocolError.truncated(need: 16, have: self.readableBytes)
        }
        return KafkaUUID(mostSignificantBits: high, leastSignificantBits: low)
    }

    // MARK: Varints

    /// Kafka's UNSIGNED_VARINT: LEB128, at most 5 bytes.
    @inlinable
    public mutating func readKafkaUnsignedVarint() throws(ProtocolError) -> UInt32 {
        var result: UInt32 = 0
        var shift: UInt32 = 0
        var index = self.readerIndex
        while true {
            guard let byte = self.getInteger(at: index, as: UInt8.self) else {
                throw ProtocolError.truncated(need: index - self.readerIndex + 1, have: self.readableBytes)
            }
            index += 1
            result |= UInt32(byte & 0x7F) << shift
            if byte & 0x80 == 0 {
                self.moveReaderIndex(to: index)
                return result
            }
            shift += 7
            if shift > 28 {
                throw ProtocolError.varintTooLong
            }
        }
    }

    /// Kafka's unsigned 64-bit LEB128, at most 10 bytes.
    @inlinable
    public mutating func readKafkaUnsignedVarlong() throws(ProtocolError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        var index = self.readerIndex
        while true {
            guard let byte = self.getInteger(at: index, as: UInt8.self) else {
                throw ProtocolError.truncated(need: index - self.readerIndex + 1, have: self.readableBytes)
            }
            index += 1
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 {
                self.moveReaderIndex(to: index)
                return result
            }
            shift += 7
            if shift > 63 {
                throw ProtocolError.varintTooLong
            }
        }
    }

    /// Kafka's VARINT: zig-zag encoded signed 32-bit, at most 5 bytes.
    @inlinable
    public mutating func readKafkaVarint() throws(ProtocolError) -> Int32 {
        let raw = try self.readKafkaUnsignedVarint()
        return Int32(bitPattern: (raw >> 1) ^ (0 &- (raw & 1)))
    }

    /// Kafka's VARLONG: zig-zag encoded signed 64-bit, at most 10 bytes.
    @inlinable
    public mutating func readKafkaVarlong() throws(ProtocolError) -> Int64 {
        let raw = try self.readKafkaUnsignedVarlong()
        return Int64(bitPattern: (raw >> 1) ^ (0 &- (raw & 1)))
    }

    // MARK: Variable-length fields

    /// Consumes `length` bytes and returns them as a slice sharing this buffer's storage.
    @inlinable
    public mutating func readKafkaSlice(length: Int) throws(ProtocolError) -> ByteBuffer {
        guard length >= 0 else { throw ProtocolError.invalidLength(Int64(length)) }
        guard let slice = self.readSlice(length: length) else {
            throw ProtocolError.truncated(need: length, have: self.readableBytes)
        }
        return slice
    }

    /// Reads a STRING (int16 length) or COMPACT_STRING (unsigned varint length + 1); -1/0 means null.
    @inlinable
    mutating func readKafkaLength(compact: Bool, wide: Bool) throws(ProtocolError) -> Int? {
        let length: Int
        if compact {
            let raw = try self.readKafkaUnsignedVarint()
            if raw == 0 { return nil }
            length = Int(raw) - 1
        } else if wide {
            length = Int(try self.readKafkaInt32())
        } else {
            length = Int(try self.readKafkaInt16())
        }
        if length == -1 { return nil }
        guard length >= 0 else { throw ProtocolError.invalidLength(Int64(length)) }
        guard length <= self.readableBytes else {
            throw ProtocolError.truncated(need: length, have: self.readableBytes)
        }
        return length
    }

    @inlinable
    public mutating func readKafkaNullableString(compact: Bool) throws(ProtocolError) -> String? {
        guard let length = try self.readKafkaLength(compact: compact, wide: false) else { return nil }
        guard let value = self.readString(length: length) else {
            throw ProtocolError.truncated(need: length, have: self.readableBytes)
        }
        return value
    }

    @inlinable
    public mutating func readKafkaString(compact: Bool) throws(ProtocolError) -> String {
        guard let value = try self.readKafkaNullableString(compact: compact) else {
            throw ProtocolError.nullNotAllowed(field: "string", version: -1)
        }
        return value
    }

    /// Reads BYTES (int32 length) or COMPACT_BYTES; the result is a slice, not a copy.
    @inlinable
    public mutating func readKafkaNullableBytes(compact: Bool) throws(ProtocolError) -> ByteBuffer? {
        guard let length = try self.readKafkaLength(compact: compact, wide: true) else { return nil }
        return try self.readKafkaSlice(length: length)
    }

    @inlinable
    public mutating func readKafkaBytes(compact: Bool) throws(ProtocolError) -> ByteBuffer {
        guard let value = try self.readKafkaNullableBytes(compact: compact) else {
            throw ProtocolError.nullNotAllowed(field: "bytes", version: -1)
        }
        return value
    }

    /// Reads an ARRAY or COMPACT_ARRAY element count; nil for a null array.
    ///
    /// Like Kafka's generated readers, a count larger than the bytes that remain is refused,
    /// since every element takes at least one byte in any version that has elements.
    @inlinable
    public mutating func readKafkaNullableArrayCount(compact: Bool, nullable: Bool) throws(ProtocolError) -> Int? {
        let count: Int
        if compact {
            let raw = try self.readKafkaUnsignedVarint()
            count = Int(raw) - 1
        } else {
            count = Int(try self.readKafkaInt32())
        }
        if count == -1 {
            if nullable { return nil }
            throw ProtocolError.nullNotAllowed(field: "array", version: -1)
        }
        guard count >= 0 else { throw ProtocolError.invalidLength(Int64(count)) }
        guard count <= self.readableBytes else {
            throw ProtocolError.truncated(need: count, have: self.readableBytes)
        }
        return count
    }

    @inlinable
    public mutating func readKafkaArrayCount(compact: Bool) throws(ProtocolError) -> Int {
        // Non-nullable: a null count throws, so the optional is always non-nil here.
        guard let count = try self.readKafkaNullableArrayCount(compact: compact, nullable: false) else {
            throw ProtocolError.nullNotAllowed(field: "array", version: -1)
        }
        return count
    }

    // MARK: Writers

    @inlinable
    public mutating func writeKafkaBool(_ value: Bool) {
        self.writeInteger(value ? 1 : 0, as: UInt8.self)
    }

    @inlinable
    public mutating func writeKafkaInt8(_ value: Int8) {
        self.writeInteger(value)
    }

    @inlinable
    public mutating func writeKafkaInt16(_ value: Int16) {
        self.writeInteger(value, endianness: .big)
    }

    @inlinable
    public mutating func writeKafkaUInt16(_ value: UInt16) {
        self.writeInteger(value, endianness: .big)
    }

    @inlinable
    public mutating func writeKafkaInt32(_ value: Int32) {
        self.writeInteger(value, endianness: .big)
    }

    @inlinable
    public mutating func writeKafkaUInt32(_ value: UInt32) {
        self.writeInteger(value, endianness: .big)
    }

    @inlinable
    public mutating func writeKafkaInt64(_ value: Int64) {
        self.writeInteger(value, endianness: .big)
    }

    @inlinable
    public mutating func writeKafkaFloat64(_ value: Double) {
        self.writeInteger(value.bitPattern, endianness: .big)
    }

    @inlinable
    public mutating func writeKafkaUUID(_ value: KafkaUUID) {
        self.writeInteger(value.mostSignificantBits, endianness: .big)
        self.writeInteger(value.leastSignificantBits, endianness: .big)
    }

    @inlinable
    public mutating func writeKafkaUnsignedVarint(_ value: UInt32) {
        var v = value
        while v >= 0x80 {
            self.writeInteger(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        self.writeInteger(UInt8(v))
    }

    @inlinable
    public mutating func writeKafkaUnsignedVarlong(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            self.writeInteger(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        self.writeInteger(UInt8(v))
    }

    @inlinable
    public mutating func writeKafkaVarint(_ value: Int32) {
        self.writeKafkaUnsignedVarint(UInt32(bitPattern: (value << 1) ^ (value >> 31)))
    }

    @inlinable
    public mutating func writeKafkaVarlong(_ value: Int64) {
        self.writeKafkaUnsignedVarlong(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
    }

    @inlinable
    public mutating func writeKafkaString(_ value: String, compact: Bool) {
        let length = value.utf8.count
        if compact {
            self.writeKafkaUnsignedVarint(UInt32(truncatingIfNeeded: length + 1))
        } else {
            self.writeInteger(Int16(truncatingIfNeeded: length), endianness: .big)
        }
        self.writeString(value)
    }

    @inlinable
    public mutating func writeKafkaNullableString(_ value: String?, compact: Bool) {
        guard let value else {
            if compact { self.writeKafkaUnsignedVarint(0) } else { self.writeInteger(Int16(-1), endianness: .big) }
            return
        }
        self.writeKafkaString(value, compact: compact)
    }

    @inlinable
    public mutating func writeKafkaBytes(_ value: ByteBuffer, compact: Bool) {
        let length = value.readableBytes
        if compact {
            self.writeKafkaUnsignedVarint(UInt32(truncatingIfNeeded: length + 1))
        } else {
            self.writeInteger(Int32(truncatingIfNeeded: length), endianness: .big)
        }
        var copy = value
        self.writeBuffer(&copy)
    }

    /// Writes only the length prefix of a BYTES/COMPACT_BYTES value whose bytes follow elsewhere.
    @inlinable
    public mutating func writeKafkaBytesLength(_ length: Int, compact: Bool) {
        if compact {
            self.writeKafkaUnsignedVarint(UInt32(truncatingIfNeeded: length + 1))
        } else {
            self.writeInteger(Int32(truncatingIfNeeded: length), endianness: .big)
        }
    }

    @inlinable
    public mutating func writeKafkaNullableBytes(_ value: ByteBuffer?, compact: Bool) {
        guard let value else {
            if compact { self.writeKafkaUnsignedVarint(0) } else { self.writeInteger(Int32(-1), endianness: .big) }
            return
        }
        self.writeKafkaBytes(value, compact: compact)
    }

    @inlinable
    public mutating func writeKafkaArrayCount(_ count: Int, compact: Bool) {
        if compact {
            self.writeKafkaUnsignedVarint(UInt32(truncatingIfNeeded: count + 1))
        } else {
            self.writeInteger(Int32(truncatingIfNeeded: count), endianness: .big)
        }
    }

    @inlinable
    public mutating func writeKafkaNullArrayCount(compact: Bool) {
        if compact { self.writeKafkaUnsignedVarint(0) } else { self.writeInteger(Int32(-1), endianness: .big) }
    }

    /// Writes a tagged-field section: the count, then each field as tag, size and bytes in
    /// ascending tag order (the order Kafka requires; stable for equal tags).
    @inlinable
    public mutating func writeKafkaTaggedFields(_ fields: [TaggedField]) {
        self.writeKafkaUnsignedVarint(UInt32(truncatingIfNeeded: fields.count))
        if fields.isEmpty { return }
        var ordered = fields
        var sorted = true
        for i in 1..<ordered.count where ordered[i - 1].tag > ordered[i].tag {
            sorted = false
            break
        }
        if !sorted {
            ordered = ordered.enumerated().sorted { lhs, rhs in
                lhs.element.tag != rhs.element.tag ? lhs.element.tag < rhs.element.tag : lhs.offset < rhs.offset
            }.map { $0.element }
        }
        for field in ordered {
            self.writeKafkaUnsignedVarint(field.tag)
            self.writeKafkaUnsignedVarint(UInt32(truncatingIfNeeded: field.data.readableBytes))
            var data = field.data
            self.writeBuffer(&data)
        }
    }
}

/// Encoded sizes of Kafka's varints, for pre-sizing buffers.
public enum KafkaVarint {
    @inlinable
    public static func size(unsigned value: UInt64) -> Int {
        var v = value
        var bytes = 1
        while v >= 0x80 {
            v >>= 7
            bytes += 1
        }
        return bytes
    }

    @inlinable
    public static func size(_ value: Int32) -> Int {
        size(unsigned: UInt64(UInt32(bitPattern: (value << 1) ^ (value >> 31))))
    }

    @inlinable
    public static func size(_ value: Int64) -> Int {
        size(unsigned: UInt64(bitPattern: (value << 1) ^ (value >> 63)))
    }
}
