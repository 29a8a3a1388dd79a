public import FjordBroker
public import Logging
public import NIOCore
import NIOPosix
import NIOSSL

/// The TCP front end (Kafka's `SocketServer`): one event loop per core, one
/// `KafkaConnectionHandler` per connection, and TLS in front of it on SSL and SASL_SSL
/// listeners.
public final class KafkaServer: Sendable {
    private let channels: [any Channel]
    private let tls: [ListenerTLS]
    private let logger: Logger
    public let boundPorts: [Int]

    private init(channels: [any Channel], tls: [ListenerTLS], logger: Logger) {
        self.channels = channels
        self.tls = tls
        self.logger = logger
        self.boundPorts = channels.compactMap { $0.localAddress?.port }
    }

    /// Binds every listener of `config` and starts serving `broker`. A TLS listener whose
    /// certificate does not load refuses to start (a `ConfigError` naming the file).
    public static func start(broker: Broker, group: any EventLoopGroup, logger: Logger) async throws -> KafkaServer {
        let config = broker.config
        let apis = broker.apis
        let maxFrame = config.socketRequestMaxBytes
        let maxQueued = config.queuedMaxRequestBytes > 0 ? Int(config.queuedMaxRequestBytes) : 4 * maxFrame
        let idle = config.connectionsMaxIdleMs
        var channels: [any Channel] = []
        var contexts: [ListenerTLS] = []
        do {
            for listener in config.listeners {
                var tls: ListenerTLS? = nil
                if listener.securityProtocol.usesTLS {
                    let settings = config.ssl[listener.name] ?? SSLSettings()
                    tls = try ListenerTLS(listenerName: listener.name, settings: settings)
                    contexts.append(tls!)
                }
                let bootstrap = ServerBootstrap(group: group)
                    .serverChannelOption(ChannelOptions.backlog, value: 256)
                    .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                    .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                    .childChannelOption(ChannelOptions.writeBufferWaterMark, value: .init(low: 256 * 1024, high: 1024 * 1024))
                    .childChannelInitializer { [tls] channel in
                        channel.eventLoop.makeCompletedFuture {
                            let sync = channel.pipeline.syncOperations
                            if let tls {
                                try sync.addHandler(NIOSSLServerHandler(context: tls.context))
                            }
                            if idle > 0 {
                                try sync.addHandler(IdleStateHandler(allTimeout: .milliseconds(idle)))
                            }
                            let connection = ClientConnection(listener: listener, clientHost: channel.remoteAddress?.ipAddress ?? "")
                            try sync.addHandler(ByteToMessageHandler(KafkaFrameDecoder(maxFrameSize: maxFrame)))
                            try sync.addHandler(KafkaConnectionHandler(apis: apis, connection: connection, logger: logger,
                                                                       maxQueuedBytes: maxQueued, sendsFileRegions: tls == nil))
                        }
                    }
                let channel = try await bootstrap.bind(host: listener.host, port: listener.port).get()
                logger.info("listening", metadata: [
                    "listener": "\(listener.name)://\(listener.host):\(channel.localAddress?.port ?? listener.port)",
                    "security.protocol": "\(listener.securityProtocol.rawValue)",
                ])
                channels.append(channel)
            }
        } catch {
            for channel in channels { try? await channel.close() }
            throw error
        }
        let server = KafkaServer(channels: channels, tls: contexts, logger: logger)
        apis.listenersBound(server.boundPorts)
        return server
    }

    /// Reloads every TLS listener's certificate and key from its files (Kafka reloads a
    /// keystore whose file changed; Fjord does on SIGHUP). Connections already open keep their
    /// session; a listener whose files do not load keeps its current certificate.
    public func reloadCertificates() {
        for tls in tls {
            do {
                try tls.reload()
                logger.info("reloaded TLS certificate", metadata: ["listener": "\(tls.listenerName)"])
            } catch {
                logger.error("TLS certificate not reloaded; the listener keeps its current one",
                             metadata: ["listener": "\(tls.listenerName)", "error": "\(error)"])
            }
        }
    }

    /// Stops accepting connections.
    public func stop() async {
        for channel in channels {
            try? await channel.close()
        }
    }
}
