public import Logging
public import NIOCore
import NIOHTTP1
import NIOPosix

/// The operator's HTTP endpoint (`metrics.listener=http://HOST:PORT`): `GET /metrics` answers
/// the Prometheus text exposition `render` produces, `GET /health` 200 while the process runs,
/// `GET /ready` 200 once `ready` says so (storage loaded, serving) and 503 before. Anything else
/// is 404 (unknown path) or 405 (not GET). One request per connection at a time, bodies ignored.
public final class MetricsServer: Sendable {
    private let channel: any Channel

    /// The port it listens on (the one the OS chose when the configured port was 0).
    public var port: Int { channel.localAddress?.port ?? 0 }

    private init(channel: any Channel) {
        self.channel = channel
    }

    public static func start(host: String, port: Int, group: any EventLoopGroup, logger: Logger,
                             render: @escaping @Sendable () -> [UInt8], ready: @escaping @Sendable () -> Bool) async throws -> MetricsServer {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(render: render, ready: ready))
                }
            }
        let channel = try await bootstrap.bind(host: host, port: port).get()
        let server = MetricsServer(channel: channel)
        logger.info("metrics listening", metadata: ["listener": "http://\(host):\(server.port)"])
        return server
    }

    public func stop() async {
        try? await channel.close()
    }
}

/// Answers one HTTP/1.1 request at a time from the decoded head; keeps the connection open when
/// the client asks to.
final class MetricsHTTPHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let render: @Sendable () -> [UInt8]
    let ready: @Sendable () -> Bool

    init(render: @escaping @Sendable () -> [UInt8], ready: @escaping @Sendable () -> Bool) {
        self.render = render
        self.ready = ready
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = unwrapInboundIn(data) else { return }
        let (status, contentType, body): (HTTPResponseStatus, String, [UInt8])
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        if head.method != .GET {
            (status, contentType, body) = (.methodNotAllowed, "text/plain", Array("only GET\n".utf8))
        } else {
            switch path {
            case "/metrics": (status, contentType, body) = (.ok, "text/plain; version=0.0.4; charset=utf-8", render())
            case "/health": (status, contentType, body) = (.ok, "text/plain", Array("ok\n".utf8))
            case "/ready":
                (status, contentType, body) = ready() ? (.ok, "text/plain", Array("ready\n".utf8))
                    : (.serviceUnavailable, "text/plain", Array("starting\n".utf8))
            default: (status, contentType, body) = (.notFound, "text/plain", Array("not found\n".utf8))
            }
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.count))
        let keepAlive = head.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
