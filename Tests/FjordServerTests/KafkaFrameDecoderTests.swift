@testable import FjordServer
import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing

@Suite("Frame decoding")
struct KafkaFrameDecoderTests {
    func frame(_ payload: [UInt8]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(Int32(payload.count), endianness: .big)
        buffer.writeBytes(payload)
        return buffer
    }

    /// NIO's verifier feeds the bytes whole, byte by byte and in random chunks, and checks the
    /// decoder emits exactly the frames, and nothing left over.
    @Test("frames split anywhere decode to the same payloads")
    func dripFed() throws {
        let payloads: [[UInt8]] = [[1, 2, 3], [], Array(repeating: 7, count: 1000), [9]]
        let input = payloads.map { (frame($0), [ByteBuffer(bytes: $0)]) }
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: input) {
            KafkaFrameDecoder(maxFrameSize: 4096)
        }
    }

    @Test("a size prefix over socket.request.max.bytes is refused before the body arrives")
    func oversized() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(KafkaFrameDecoder(maxFrameSize: 1024)))
        var prefix = ByteBuffer()
        prefix.writeInteger(Int32(1025), endianness: .big)
        #expect(throws: KafkaFrameDecoder.FrameError.self) { try channel.writeInbound(prefix) }
        _ = try? channel.finish()
    }

    @Test("a negative size prefix is refused")
    func negative() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(KafkaFrameDecoder(maxFrameSize: 1024)))
        var prefix = ByteBuffer()
        prefix.writeInteger(Int32(-1), endianness: .big)
        #expect(throws: KafkaFrameDecoder.FrameError.self) { try channel.writeInbound(prefix) }
        _ = try? channel.finish()
    }
}

extension ByteBuffer {
    init(bytes: [UInt8]) {
        self = ByteBuffer()
        self.writeBytes(bytes)
    }
}
