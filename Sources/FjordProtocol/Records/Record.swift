public import NIOCore

/// One record of a RecordBatch v2.
///
/// Wire layout: `length: varint`, `attributes: int8`, `timestampDelta: varlong`,
/// `offsetDelta: varint`, `keyLength: varint` (-1 = null), key, `valueLength: varint`, value,
/// `headerCount: varint`, then per header `keyLength: varint`, key (UTF-8), `valueLength: varint`
/// (-1 = null), value. `key`, `value` and header values are slices of the batch's bytes.
public struct Record: Sendable, Equatable {
    public var attributes: Int8 = 0
    public var timestampDelta: Int64 = 0
    public var offsetDelta: Int32 = 0
    public var key: ByteBuffer?
    public var value: ByteBuffer?
    public var headers: [RecordHeader] = []
    /// Absolute offset (batch base offset + delta), filled in when read from a batch.
    public var offset: Int64 = 0
    /// Absolute timestamp (batch base timestamp + delta, or the batch's LogAppendTime).
    public var timestamp: Int64 = 0

    public init(key: ByteBuffer?, value: ByteBuffer?, headers: [RecordHeader] = [],
                timestampDelta: Int64 = 0, offsetDelta: Int32 = 0) {
        self.key = key
        self.value = value
        self.headers = headers
        self.timestampDelta = timestampDelta
        self.offsetDelta = offsetDelta
    }

    /// Decodes one record, checking its length prefix against the fields it holds.
    public static func read(from buffer: inout ByteBuffer) throws(ProtocolError) -> Record {
        let length = Int(try buffer.readKafkaVarint())
        guard length >= 0 else { throw ProtocolError.corruptRecord("negative record length \(length)") }
        var body = try buffer.readKafkaSlice(length: length)
        var record = Record(key: nil, value: nil)
        record.attributes = try body.readKafkaInt8()
        record.timestampDelta = try body.readKafkaVarlong()
        record.offsetDelta = try body.readKafkaVarint()
        record.key = try readVarintBytes(&body)
        record.value = try readVarintBytes(&body)
        let headerCount = Int(try body.readKafkaVarint())
        guard headerCount >= 0, headerCount <= body.readableBytes else {
            throw ProtocolError.corruptRecord("bad header count \(headerCount)")
        }
        if headerCount > 0 {
            record.headers.reserveCapacity(headerCount)
            for _ in 0..<headerCount {
                let keyLength = Int(try body.readKafkaVarint())
                guard keyLength >= 0 else { throw ProtocolError.corruptRecord("negative header key length") }
                guard let key = body.readString(length: keyLength) else {
                    throw ProtocolError.truncated(need: keyLength, have: body.readableBytes)
                }
                record.headers.append(RecordHeader(key: key, value: try readVarintBytes(&body)))
            }
        }
        guard body.readableBytes == 0 else {
            throw ProtocolError.corruptRecord("\(body.readableBytes) bytes left inside a record")
        }
        return record
    }

    @inline(__always)
    static func readVarintBytes(_ body: inout ByteBuffer) throws(ProtocolError) -> ByteBuffer? {
        let length = Int(try body.readKafkaVarint())
        if length == -1 { return nil }
        guard length >= 0 else { throw ProtocolError.corruptRecord("negative length \(length)") }
        return try body.readKafkaSlice(length: length)
    }

    /// The encoded size of the record's body (everything after the length prefix).
    public func bodySize() -> Int {
        var size = 1 + KafkaVarint.size(timestampDelta) + KafkaVarint.size(offsetDelta)
        size += Self.varintBytesSize(key)
        size += Self.varintBytesSize(value)
        size += KafkaVarint.size(Int32(headers.count))
        for header in headers {
            let keyLength = header.key.utf8.count
            size += KafkaVarint.size(Int32(keyLength)) + keyLength
            size += Self.varintBytesSize(header.value)
        }
        return size
    }

    @inline(__always)
    static func varintBytesSize(_ bytes: ByteBuffer?) -> Int {
        guard let bytes else { return 1 }
        return KafkaVarint.size(Int32(bytes.readableBytes)) + bytes.readableBytes
    }

    /// Appends the record (length prefix included) to `buffer`: one capacity check, then the
    /// varints and bytes written straight into the buffer's memory (the producer's hot path).
    public func write(to buffer: inout ByteBuffer) {
        let body = bodySize()
        let total = KafkaVarint.size(Int32(body)) + body
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: total) { out in
            var at = 0
            Self.put(zigzag: Int64(body), into: out, at: &at)
            out[at] = UInt8(bitPattern: attributes)
            at += 1
            Self.put(zigzag: timestampDelta, into: out, at: &at)
            Self.put(zigzag: Int64(offsetDelta), into: out, at: &at)
            Self.put(bytes: key, into: out, at: &at)
            Self.put(bytes: value, into: out, at: &at)
            Self.put(zigzag: Int64(headers.count), into: out, at: &at)
            for header in headers {
                var name = header.key
                name.withUTF8 { utf8 in
                    Self.put(zigzag: Int64(utf8.count), into: out, at: &at)
                    if let base = utf8.baseAddress, utf8.count > 0 {
                        (out.baseAddress! + at).copyMemory(from: base, byteCount: utf8.count)
                    }
                    at += utf8.count
                }
                Self.put(bytes: header.value, into: out, at: &at)
            }
            return at
        }
    }

    /// A zigzag varint (Kafka's varint/varlong: the same encoding, up to 10 bytes).
    @inline(__always)
    static func put(zigzag value: Int64, into out: UnsafeMutableRawBufferPointer, at: inout Int) {
        var v = UInt64(bitPattern: (value << 1) ^ (value >> 63))
        while v >= 0x80 {
            out[at] = UInt8(truncatingIfNeeded: v) | 0x80
            at += 1
            v >>= 7
        }
        out[at] = UInt8(v)
        at += 1
    }

    /// A varint length (-1 for null) and the bytes.
    @inline(__always)
    static func put(bytes: ByteBuffer?, into out: UnsafeMutableRawBufferPointer, at: inout Int) {
        guard let bytes else {
            put(zigzag: -1, into: out, at: &at)
            return
        }
        put(zigzag: Int64(bytes.readableBytes), into: out, at: &at)
        bytes.withUnsafeReadableBytes { source in
            if let base = source.baseAddress, source.count > 0 {
                (out.baseAddress! + at).copyMemory(from: base, byteCount: source.count)
            }
        }
        at += bytes.readableBytes
    }
}

/// A record header: a UTF-8 key and a nullable value.
public struct RecordHeader: Sendable, Equatable {
    public var key: String
    public var value: ByteBuffer?

    public init(key: String, value: ByteBuffer?) {
        self.key = key
        self.value = value
    }
}
