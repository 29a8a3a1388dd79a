import NIOCore

/// Splits the byte stream into Kafka frames: a 4-byte big-endian size, then that many bytes.
///
/// A size that is negative or above `socket.request.max.bytes` is refused from the prefix alone,
/// before anything is buffered: the decoder throws and the connection closes.
struct KafkaFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    let maxFrameSize: Int

    enum FrameError: Error, CustomStringConvertible {
        case tooLarge(Int, max: Int)
        case negative(Int)

        var description: String {
            switch self {
            case .tooLarge(let size, let max): return "request size \(size) exceeds socket.request.max.bytes \(max)"
            case .negative(let size): return "negative request size \(size)"
            }
        }
    }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let size = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: Int32.self) else { return .needMoreData }
        guard size >= 0 else { throw FrameError.negative(Int(size)) }
        guard Int(size) <= maxFrameSize else { throw FrameError.tooLarge(Int(size), max: maxFrameSize) }
        guard buffer.readableBytes >= 4 + Int(size) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        let frame = buffer.readSlice(length: Int(size))!
        context.fireChannelRead(wrapInboundOut(frame))
        return .continue
    }
}
