public import FjordBroker
import FjordStorage
import SystemPackage
public import Logging
public import NIOCore
import NIOPosix

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

/// One connection: requests are answered strictly in order, one at a time (Kafka's per-connection
/// ordering). While a request is handled, later frames queue; when the queued bytes exceed the
/// limit, reading stops until the queue drains (back-pressure), so a fast producer cannot make
/// the broker buffer without bound. A malformed frame closes this connection only.
final class KafkaConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = IOData

    private let apis: KafkaAPIs
    private let logger: Logger
    private let maxQueuedBytes: Int
    private var queue: [ByteBuffer] = []
    private var queuedBytes = 0
    private var busy = false
    private var readingPaused = false
    /// The request being handled; cancelled when the connection closes, so a long poll or a
    /// waiting JoinGroup of a gone client does not linger.
    private var inFlight: Task<Void, Never>? = nil

    init(apis: KafkaAPIs, logger: Logger, maxQueuedBytes: Int) {
        self.apis = apis
        self.logger = logger
        self.maxQueuedBytes = maxQueuedBytes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        queue.append(frame)
        queuedBytes += frame.readableBytes
        if queuedBytes > maxQueuedBytes && !readingPaused {
            readingPaused = true
            context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
        }
        processNext(context: context)
    }

    private func processNext(context: ChannelHandlerContext) {
        guard !busy, !queue.isEmpty else { return }
        busy = true
        let frame = queue.removeFirst()
        queuedBytes -= frame.readableBytes
        let apis = self.apis
        let channel = context.channel
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let host = channel.remoteAddress?.ipAddress ?? ""
        let eventLoop = context.eventLoop
        inFlight = Task {
            let reply = await apis.handle(frame, clientHost: host.isEmpty ? "" : "/\(host)")
            // A closed connection (or a stopped server) has nobody to answer.
            guard !Task.isCancelled, channel.isActive else { return }
            eventLoop.execute {
                let (handler, context) = loopBound.value
                handler.inFlight = nil
                guard channel.isActive else { return }
                handler.write(reply, channel: channel, context: context)
            }
        }
    }

    private func write(_ reply: BrokerReply, channel: any Channel, context: ChannelHandlerContext) {
        switch reply {
        case .noResponse:
            break
        case .closeConnection(let reason):
            logger.warning("closing connection", metadata: ["remote": "\(channel.remoteAddress?.description ?? "?")", "reason": "\(reason)"])
            context.close(promise: nil)
            return
        case .response(let parts):
            var prefix = channel.allocator.buffer(capacity: 4)
            prefix.writeInteger(Int32(truncatingIfNeeded: parts.totalLength), endianness: .big)
            context.write(wrapOutboundOut(.byteBuffer(prefix)), promise: nil)
            for part in parts {
                switch part {
                case .bytes(let bytes):
                    context.write(wrapOutboundOut(.byteBuffer(bytes)), promise: nil)
                case .file(let slice):
                    // sendfile from a duplicate descriptor, closed once written: record bytes never
                    // enter Swift memory.
                    let duplicate = dup(slice.file.descriptor.rawValue)
                    guard duplicate >= 0 else {
                        logger.error("cannot dup a segment descriptor; closing connection")
                        context.close(promise: nil)
                        return
                    }
                    let handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: duplicate)
                    let region = FileRegion(fileHandle: handle, readerIndex: Int(slice.position),
                                            endIndex: Int(slice.position) + slice.length)
                    let written = context.eventLoop.makePromise(of: Void.self)
                    written.futureResult.whenComplete { _ in try? handle.close() }
                    context.write(wrapOutboundOut(.fileRegion(region)), promise: written)
                }
            }
            context.flush()
        }
        busy = false
        if readingPaused && queuedBytes <= maxQueuedBytes / 2 {
            readingPaused = false
            context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
            context.read()
        }
        processNext(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        inFlight?.cancel()
        inFlight = nil
        queue.removeAll()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.warning("connection error; closing", metadata: [
            "remote": "\(context.channel.remoteAddress?.description ?? "?")", "error": "\(error)",
        ])
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            logger.debug("closing idle connection", metadata: ["remote": "\(context.channel.remoteAddress?.description ?? "?")"])
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

/// The TCP front end (Kafka's `SocketServer`): one event loop per core, one
/// `KafkaConnectionHandler` per connection.
public final class KafkaServer: Sendable {
    private let channels: [any Channel]
    public let boundPorts: [Int]

    private init(channels: [any Channel]) {
        self.channels = channels
        self.boundPorts = channels.compactMap { $0.localAddress?.port }
    }

    /// Binds every listener of `config` and starts serving `broker`.
    public static func start(broker: Broker, group: any EventLoopGroup, logger: Logger) async throws -> KafkaServer {
        let config = broker.config
        let apis = broker.apis
        let maxFrame = config.socketRequestMaxBytes
        let maxQueued = config.queuedMaxRequestBytes > 0 ? Int(config.queuedMaxRequestBytes) : 4 * maxFrame
        let idle = config.connectionsMaxIdleMs
        var channels: [any Channel] = []
        for listener in config.listeners {
            let bootstrap = ServerBootstrap(group: group)
                .serverChannelOption(ChannelOptions.backlog, value: 256)
                .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                .childChannelOption(ChannelOptions.writeBufferWaterMark, value: .init(low: 256 * 1024, high: 1024 * 1024))
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        if idle > 0 {
                            try sync.addHandler(IdleStateHandler(allTimeout: .milliseconds(idle)))
                        }
                        try sync.addHandler(ByteToMessageHandler(KafkaFrameDecoder(maxFrameSize: maxFrame)))
                        try sync.addHandler(KafkaConnectionHandler(apis: apis, logger: logger, maxQueuedBytes: maxQueued))
                    }
                }
            let channel = try await bootstrap.bind(host: listener.host, port: listener.port).get()
            logger.info("listening", metadata: ["listener": "\(listener.name)://\(listener.host):\(channel.localAddress?.port ?? listener.port)"])
            channels.append(channel)
        }
        let server = KafkaServer(channels: channels)
        apis.listenersBound(server.boundPorts)
        return server
    }

    /// Stops accepting connections.
    public func stop() async {
        for channel in channels {
            try? await channel.close()
        }
    }
}
