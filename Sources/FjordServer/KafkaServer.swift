public import FjordBroker
public import Logging
public import NIOCore
import NIOPosix

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
