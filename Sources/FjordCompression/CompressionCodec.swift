internal import CFjordCompression
public import NIOCore

/// Kafka's record-batch compression codecs, numbered as in the batch attributes' low 3 bits.
///
/// Encodings are the ones Kafka's Java client writes, so every Kafka client can read what
/// Fjord writes:
/// - gzip: an RFC 1952 gzip stream (`GZIPOutputStream`).
/// - snappy: xerial's framing (`SnappyOutputStream`: magic header, then length-prefixed
///   32 KiB blocks). Decoding also accepts plain, unframed snappy, which librdkafka may send.
/// - lz4: the LZ4 frame format with 64 KiB independent blocks (`Lz4BlockOutputStream`).
/// - zstd: a zstd frame.
///
/// Decompression takes a `limit` on the output size and throws rather than exceed it, so a
/// small hostile payload cannot expand into unbounded memory.
public enum CompressionCodec: Int8, Sendable, CaseIterable, CustomStringConvertible {
    case none = 0
    case gzip = 1
    case snappy = 2
    case lz4 = 3
    case zstd = 4

    public var description: String {
        switch self {
        case .none: return "none"
        case .gzip: return "gzip"
        case .snappy: return "snappy"
        case .lz4: return "lz4"
        case .zstd: return "zstd"
        }
    }

    /// Parses Kafka's `compression.type` names (`none`, `gzip`, `snappy`, `lz4`, `zstd`).
    public init?(name: String) {
        switch name.lowercased() {
        case "none", "uncompressed": self = .none
        case "gzip": self = .gzip
        case "snappy": self = .snappy
        case "lz4": self = .lz4
        case "zstd": self = .zstd
        default: return nil
        }
    }

    /// Compresses the readable bytes of `input`.
    public func compress(_ input: ByteBuffer, allocator: ByteBufferAllocator = ByteBufferAllocator()) throws(CompressionError) -> ByteBuffer {
        switch self {
        case .none: return input
        case .gzip: return try Gzip.compress(input, allocator: allocator)
        case .snappy: return try Snappy.compressXerial(input, allocator: allocator)
        case .lz4: return try LZ4Frame.compress(input, allocator: allocator)
        case .zstd: return try Zstd.compress(input, allocator: allocator)
        }
    }

    /// Decompresses the readable bytes of `input`, producing at most `limit` bytes.
    public func decompress(_ input: ByteBuffer, limit: Int, allocator: ByteBufferAllocator = ByteBufferAllocator()) throws(CompressionError) -> ByteBuffer {
        switch self {
        case .none:
            guard input.readableBytes <= limit else { throw CompressionError.outputTooLarge(limit: limit) }
            return input
        case .gzip: return try Gzip.decompress(input, limit: limit, allocator: allocator)
        case .snappy: return try Snappy.decompress(input, limit: limit, allocator: allocator)
        case .lz4: return try LZ4Frame.decompress(input, limit: limit, allocator: allocator)
        case .zstd: return try Zstd.decompress(input, limit: limit, allocator: allocator)
        }
    }
}

/// Why compressing or decompressing failed.
public enum CompressionError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The codec's library rejected the input (corrupt or truncated stream).
    case corrupt(codec: String, detail: String)
    /// Decompressed output would exceed the caller's limit.
    case outputTooLarge(limit: Int)
    /// The codec's library failed for a reason unrelated to the input (e.g. out of memory).
    case failed(codec: String, detail: String)

    public var description: String {
        switch self {
        case .corrupt(let codec, let detail): return "\(codec): corrupt input (\(detail))"
        case .outputTooLarge(let limit): return "decompressed size exceeds \(limit) bytes"
        case .failed(let codec, let detail): return "\(codec): \(detail)"
        }
    }
}

// MARK: - gzip (zlib)

enum Gzip {
    static func compress(_ input: ByteBuffer, allocator: ByteBufferAllocator) throws(CompressionError) -> ByteBuffer {
        var stream = z_stream()
        // windowBits 15 + 16 selects the gzip wrapper, as GZIPOutputStream writes.
        let initResult = deflateInit2_(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY,
                                       zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard initResult == Z_OK else { throw CompressionError.failed(codec: "gzip", detail: "deflateInit2 \(initResult)") }
        defer { deflateEnd(&stream) }
        let bound = Int(deflateBound(&stream, UInt(input.readableBytes)))
        var output = allocator.buffer(capacity: bound)
        let result: Int32 = input.withUnsafeReadableBytes { source in
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { target in
                stream.next_in = UnsafeMutablePointer(mutating: source.bindMemory(to: Bytef.self).baseAddress)
                stream.avail_in = uInt(source.count)
                stream.next_out = target.bindMemory(to: Bytef.self).baseAddress
                stream.avail_out = uInt(target.count)
                let status = deflate(&stream, Z_FINISH)
                return status == Z_STREAM_END ? target.count - Int(stream.avail_out) : 0
            }
            return stream.avail_in == 0 ? Z_STREAM_END : Z_BUF_ERROR
        }
        guard result == Z_STREAM_END else { throw CompressionError.failed(codec: "gzip", detail: "deflate did not finish") }
        return output
    }

    static func decompress(_ input: ByteBuffer, limit: Int, allocator: ByteBufferAllocator) throws(CompressionError) -> ByteBuffer {
        var stream = z_stream()
        // windowBits 15 + 32: accept gzip or zlib headers.
        let initResult = inflateInit2_(&stream, 15 + 32, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard initResult == Z_OK else { throw CompressionError.failed(codec: "gzip", detail: "inflateInit2 \(initResult)") }
        defer { inflateEnd(&stream) }
        var output = allocator.buffer(capacity: Swift.min(limit + 1, Swift.max(256, input.readableBytes * 4)))
        var status: Int32 = Z_OK
        input.withUnsafeReadableBytes { source in
            stream.next_in = UnsafeMutablePointer(mutating: source.bindMemory(to: Bytef.self).baseAddress)
            stream.avail_in = uInt(source.count)
            // Inflate into at most limit + 1 bytes: producing the extra byte proves the limit is exceeded.
            while status == Z_OK && output.readableBytes <= limit {
                let chunk = Swift.min(Swift.max(output.writableBytes, 16 * 1024), limit + 1 - output.readableBytes)
                output.writeWithUnsafeMutableBytes(minimumWritableBytes: chunk) { target in
                    stream.next_out = target.bindMemory(to: Bytef.self).baseAddress
                    stream.avail_out = uInt(chunk)
                    status = inflate(&stream, Z_NO_FLUSH)
                    return chunk - Int(stream.avail_out)
                }
            }
        }
        if output.readableBytes > limit { throw CompressionError.outputTooLarge(limit: limit) }
        guard status == Z_STREAM_END else {
            throw CompressionError.corrupt(codec: "gzip", detail: status == Z_BUF_ERROR ? "truncated stream" : "inflate status \(status)")
        }
        return output
    }
}

// MARK: - snappy

enum Snappy {
    /// xerial's stream header: magic `\x82SNAPPY\0`, version 1, minimum compatible version 1.
    static let xerialMagic: [UInt8] = [0x82, 0x53, 0x4E, 0x41, 0x50, 0x50, 0x59, 0x00]
    static let xerialBlockSize = 32 * 1024

    static func compressXerial(_ input: ByteBuffer, allocator: ByteBufferAllocator) throws(CompressionError) -> ByteBuffer {
        let blocks = (input.readableBytes + xerialBlockSize - 1) / xerialBlockSize
        let maxBlock = snappy_max_compressed_length(xerialBlockSize)
        var output = allocator.buffer(capacity: 16 + blocks * (4 + maxBlock))
        output.writeBytes(xerialMagic)
        output.writeInteger(Int32(1), endianness: .big)
        output.writeInteger(Int32(1), endianness: .big)
        var remaining = input
        while remaining.readableBytes > 0 {
            let length = Swift.min(xerialBlockSize, remaining.readableBytes)
            guard let block = remaining.readSlice(length: length) else { break }
            let lengthIndex = output.writerIndex
            output.writeInteger(Int32(0), endianness: .big)
            var status = SNAPPY_OK
            _ = block.withUnsafeReadableBytes { source in
                output.writeWithUnsafeMutableBytes(minimumWritableBytes: maxBlock) { target in
                    var outLength = target.count
                    status = snappy_compress(source.bindMemory(to: CChar.self).baseAddress, source.count,
                                             target.bindMemory(to: CChar.self).baseAddress, &outLength)
                    return status == SNAPPY_OK ? outLength : 0
                }
            }
            guard status == SNAPPY_OK else { throw CompressionError.failed(codec: "snappy", detail: "compress \(status.rawValue)") }
            output.setInteger(Int32(output.writerIndex - lengthIndex - 4), at: lengthIndex, endianness: .big)
        }
        return output
    }

    static func decompress(_ input: ByteBuffer, limit: Int, allocator: ByteBufferAllocator) throws(CompressionError) -> ByteBuffer {
        if input.readableBytes >= 16, input.getBytes(at: input.readerIndex, length: 8) == xerialMagic {
            var framed = input
            framed.moveReaderIndex(forwardBy: 16)
            var output = allocator.buffer(capacity: Swift.min(limit, framed.readableBytes * 2))
            while framed.readableBytes > 0 {
                guard let length = framed.readInteger(endianness: .big, as: Int32.self), length >= 0,
                    let block = framed.readSlice(length: Int(length))
                else {
                    throw CompressionError.corrupt(codec: "snappy", detail: "truncated xerial block")
                }
                try decompressRaw(block, into: &output, limit: limit)
            }
            return output
        }
        var output = allocator.buffer(capacity: 0)
        try decompressRaw(input, into: &output, limit: limit)
        return output
    }

    static func decompressRaw(_ block: ByteBuffer, into output: inout ByteBuffer, limit: Int) throws(CompressionError) {
        var failure: CompressionError? = nil
        block.withUnsafeReadableBytes { source in
            let base = source.bindMemory(to: CChar.self).baseAddress
            var length = 0
            guard snappy_uncompressed_length(base, source.count, &length) == SNAPPY_OK else {
                failure = .corrupt(codec: "snappy", detail: "bad length header")
                return
            }
            guard length <= limit - output.readableBytes else {
                failure = .outputTooLarge(limit: limit)
                return
            }
            if length == 0 { return }
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { target in
                var outLength = length
                let status = snappy_uncompress(base, source.count, target.bindMemory(to: CChar.self).baseAddress, &outLength)
                if status != SNAPPY_OK {
                    failure = .corrupt(codec: "snappy", detail: "uncompress \(status.rawValue)")
                    return 0
                }
                return outLength
            }
        }
        if let failure { throw failure }
    }
}

// MARK: - lz4 (frame format)

enum LZ4Frame {
    static func compress(_ input: ByteBuffer, allocator: ByteBufferAllocator) throws(CompressionError) -> ByteBuffer {
        var preferences = LZ4F_preferences_t()
        preferences.frameInfo.blockSizeID = LZ4F_max64KB
        preferences.frameInfo.blockMode = LZ4F_blockIndependent
        let bound = LZ4F_compressFrameBound(input.readableBytes, &preferences)
        var output = allocator.buffer(capacity: bound)
        var errorCode: Int = 0
        _ = input.withUnsafeReadableBytes { source in
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { target in
                let written = LZ4F_compressFrame(target.baseAddress, target.count, source.baseAddress, source.count, &preferences)
                if LZ4F_isError(written) != 0 {
                    errorCode = written
                    return 0
                }
                return written
            }
        }
        if errorCode != 0 {
            throw CompressionError.failed(codec: "lz4", detail: String(cString: LZ4F_getErrorName(errorCode)))
        }
        return output
    }

    static func decompress(_ input: ByteBuffer, limit: Int, allocator: ByteBufferAllocator) throws(CompressionError) -> ByteBuffer {
        var context: OpaquePointer? = nil
        let created = LZ4F_createDecompressionContext(&context, UInt32(LZ4F_VERSION))
        guard LZ4F_isError(created) == 0, let context else {
            throw CompressionError.failed(codec: "lz4", detail: "cannot create context")
        }
        defer { LZ4F_freeDecompressionContext(context) }
        var output = allocator.buffer(capacity: Swift.min(limit + 1, Swift.max(256, input.readableBytes * 3)))
        var hint = 1
        var stalled = false
        input.withUnsafeReadableBytes { source in
            var offset = 0
            // Decompress into at most limit + 1 bytes: the extra byte proves the limit is exceeded.
            while hint != 0 && LZ4F_isError(hint) == 0 && !stalled && output.readableBytes <= limit {
                let chunk = Swift.min(Swift.max(output.writableBytes, 64 * 1024), limit + 1 - output.readableBytes)
                output.writeWithUnsafeMutableBytes(minimumWritableBytes: chunk) { target in
                    var outLength = chunk
                    var inLength = source.count - offset
                    hint = LZ4F_decompress(context, target.baseAddress, &outLength, source.baseAddress.map { $0 + offset }, &inLength, nil)
                    if LZ4F_isError(hint) != 0 { return 0 }
                    offset += inLength
                    stalled = inLength == 0 && outLength == 0
                    return outLength
                }
            }
        }
        if LZ4F_isError(hint) != 0 {
            throw CompressionError.corrupt(codec: "lz4", detail: String(cString: LZ4F_getErrorName(hint)))
        }
        if output.readableBytes > limit { throw CompressionError.outputTooLarge(limit: limit) }
        guard hint == 0 else { throw CompressionError.corrupt(codec: "lz4", detail: "truncated frame") }
        return output
    }
}

// MARK: - zstd

enum Zstd {
    static func compress(_ input: ByteBuffer, allocator: ByteBufferAllocator) throws(CompressionError) -> ByteBuffer {
        let bound = ZSTD_compressBound(input.readableBytes)
        var output = allocator.buffer(capacity: bound)
        var errorCode: Int = 0
        _ = input.withUnsafeReadableBytes { source in
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { target in
                let written = ZSTD_compress(target.baseAddress, target.count, source.baseAddress, source.count, 3)
                if ZSTD_isError(written) != 0 {
                    errorCode = written
                    return 0
                }
                return written
            }
        }
        if errorCode != 0 {
            throw CompressionError.failed(codec: "zstd", detail: String(cString: ZSTD_getErrorName(errorCode)))
        }
        return output
    }

    static func decompress(_ input: ByteBuffer, limit: Int, allocator: ByteBufferAllocator) throws(CompressionError) -> ByteBuffer {
        guard let stream = ZSTD_createDStream() else { throw CompressionError.failed(codec: "zstd", detail: "cannot create stream") }
        defer { ZSTD_freeDStream(stream) }
        var output = allocator.buffer(capacity: Swift.min(limit + 1, Swift.max(256, input.readableBytes * 4)))
        var hint = 1
        var stalled = false
        input.withUnsafeReadableBytes { source in
            var inBuffer = ZSTD_inBuffer(src: source.baseAddress, size: source.count, pos: 0)
            // Decompress into at most limit + 1 bytes: the extra byte proves the limit is exceeded.
            // A source may hold several frames; keep going until the input is used up.
            while (hint != 0 || inBuffer.pos < inBuffer.size) && ZSTD_isError(hint) == 0 && !stalled
                && output.readableBytes <= limit
            {
                let chunk = Swift.min(Swift.max(output.writableBytes, 64 * 1024), limit + 1 - output.readableBytes)
                output.writeWithUnsafeMutableBytes(minimumWritableBytes: chunk) { target in
                    var outBuffer = ZSTD_outBuffer(dst: target.baseAddress, size: chunk, pos: 0)
                    let before = inBuffer.pos
                    hint = ZSTD_decompressStream(stream, &outBuffer, &inBuffer)
                    if ZSTD_isError(hint) != 0 { return 0 }
                    stalled = outBuffer.pos == 0 && inBuffer.pos == before
                    return outBuffer.pos
                }
            }
        }
        if ZSTD_isError(hint) != 0 {
            throw CompressionError.corrupt(codec: "zstd", detail: String(cString: ZSTD_getErrorName(hint)))
        }
        if output.readableBytes > limit { throw CompressionError.outputTooLarge(limit: limit) }
        guard hint == 0 else { throw CompressionError.corrupt(codec: "zstd", detail: "truncated frame") }
        return output
    }
}
