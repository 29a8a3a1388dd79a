import FjordBroker
import FjordProtocol
@testable import FjordServer
import Foundation
import Logging
import NIOCore
import NIOEmbedded
import Testing

/// The connection handler on NIO's async testing channel, in front of a real broker core (a
/// temporary data directory, no sockets).
@Suite("Connection handler (NIOAsyncTestingChannel)")
struct KafkaConnectionHandlerTests {
    static let maxFrame = 64 * 1024

    static func withBroker(_ body: (Broker) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fjord-conn-\(UUID().uuidString)")
        var logger = Logger(label: "fjord-conn-test")
        logger.logLevel = .error
        let config = try BrokerConfig.parse(overrides: ["log.dirs": directory.path, "listeners": "PLAINTEXT://127.0.0.1:9092",
                                                        "offsets.topic.num.partitions": "1"])
        let broker = try await Broker.start(config: config, logger: logger)
        do {
            try await body(broker)
        } catch {
            try await broker.shutdown()
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
        try await broker.shutdown()
        try? FileManager.default.removeItem(at: directory)
    }

    static func channel(_ broker: Broker, maxQueuedBytes: Int = 1 << 20) async throws -> NIOAsyncTestingChannel {
        var logger = Logger(label: "fjord-conn-test")
        logger.logLevel = .critical
        let apis = broker.apis
        let quiet = logger
        // Handlers are built and added on the channel's event loop: they are not Sendable.
        let channel = try await NIOAsyncTestingChannel { channel in
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(KafkaFrameDecoder(maxFrameSize: maxFrame)))
            try channel.pipeline.syncOperations.addHandler(
                KafkaConnectionHandler(apis: apis, connection: ClientConnection(listener: Listener(name: "PLAINTEXT", host: "127.0.0.1", port: 9),
                                                                                clientHost: "127.0.0.1"),
                                       logger: quiet, maxQueuedBytes: maxQueuedBytes, sendsFileRegions: true))
        }
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9))
        return channel
    }

    /// Size-prefixed frames of ApiVersions and Metadata requests with the given correlation ids.
    static func frames(_ correlationIDs: [Int32]) throws -> ByteBuffer {
        var out = ByteBuffer()
        for (index, id) in correlationIDs.enumerated() {
            var payload = ByteBuffer()
            if index % 2 == 0 {
                try RequestFrame.encode(ApiVersionsRequest(), version: 3, correlationID: id, clientID: "t", into: &payload)
            } else {
                var metadata = MetadataRequest()
                metadata.topics = []
                try RequestFrame.encode(metadata, version: 12, correlationID: id, clientID: "t", into: &payload)
            }
            out.writeInteger(Int32(payload.readableBytes))
            out.writeBuffer(&payload)
        }
        return out
    }

    /// Reads whole response frames off the channel until `count` arrived; returns their
    /// correlation ids in order.
    static func responses(_ channel: NIOAsyncTestingChannel, count: Int) async throws -> [Int32] {
        var bytes = ByteBuffer()
        var ids: [Int32] = []
        while ids.count < count {
            let part = try await channel.waitForOutboundWrite(as: IOData.self)
            guard case .byteBuffer(var buffer) = part else { continue }
            bytes.writeBuffer(&buffer)
            while let size = bytes.getInteger(at: bytes.readerIndex, as: Int32.self), bytes.readableBytes >= 4 + Int(size) {
                bytes.moveReaderIndex(forwardBy: 4)
                var frame = bytes.readSlice(length: Int(size))!
                ids.append(frame.readInteger(as: Int32.self)!)
            }
        }
        return ids
    }

    static func autoRead(_ channel: NIOAsyncTestingChannel) -> Bool? {
        channel.options.last { $0.option is ChannelOptions.Types.AutoReadOption }?.value as? Bool
    }

    @Test("pipelined requests, written in one read, are answered in order")
    func pipelinedOrder() async throws {
        try await Self.withBroker { broker in
            let channel = try await Self.channel(broker)
            try await channel.writeInbound(try Self.frames([11, 12, 13, 14, 15]))
            #expect(try await Self.responses(channel, count: 5) == [11, 12, 13, 14, 15])
            _ = try? await channel.finish()
        }
    }

    @Test("a slow reader: reading and request handling stop while the channel is not writable")
    func slowReaderBackPressure() async throws {
        try await Self.withBroker { broker in
            let channel = try await Self.channel(broker)
            channel.isWritable = false
            channel.pipeline.fireChannelWritabilityChanged()
            try await channel.writeInbound(try Self.frames([1, 2]))
            #expect(Self.autoRead(channel) == false, "reads stop while the client does not read its responses")
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await channel.readOutbound(as: IOData.self) == nil, "no request is started meanwhile")
            channel.isWritable = true
            channel.pipeline.fireChannelWritabilityChanged()
            #expect(try await Self.responses(channel, count: 2) == [1, 2])
            #expect(Self.autoRead(channel) == true, "reads resume")
            _ = try? await channel.finish()
        }
    }

    @Test("queued request bytes over the limit stop reading until the queue drains")
    func queueLimit() async throws {
        try await Self.withBroker { broker in
            let channel = try await Self.channel(broker, maxQueuedBytes: 64)
            try await channel.writeInbound(try Self.frames(Array(1...8)))
            #expect(Self.autoRead(channel) == false)
            #expect(try await Self.responses(channel, count: 8) == Array(1...8))
            #expect(Self.autoRead(channel) == true)
            _ = try? await channel.finish()
        }
    }

    @Test("an oversized size prefix closes that connection only")
    func oversizedPrefix() async throws {
        try await Self.withBroker { broker in
            let bad = try await Self.channel(broker)
            let good = try await Self.channel(broker)
            var prefix = ByteBuffer()
            prefix.writeInteger(Int32(Self.maxFrame + 1))
            _ = try? await bad.writeInbound(prefix)
            try await bad.closeFuture.get()
            #expect(!bad.isActive)
            try await good.writeInbound(try Self.frames([7]))
            #expect(try await Self.responses(good, count: 1) == [7])
            #expect(good.isActive)
            _ = try? await good.finish()
        }
    }
}
