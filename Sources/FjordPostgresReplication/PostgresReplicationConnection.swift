import Crypto
#if canImport(Glibc)
import Glibc
#endif
import FjordSecurity
public import NIOCore
public import NIOPosix
import NIOSSL

/// A PostgreSQL connection in logical-replication mode (`replication=database`): the part of the
/// protocol postgres-nio does not speak (simple queries, replication commands, CopyBoth).
///
/// Lifecycle: `withConnection` negotiates TLS (an SSLRequest; `prefer` falls back to plaintext when the
/// server declines, `require` fails), sends the startup message and authenticates (cleartext,
/// MD5 or SCRAM-SHA-256 with the server's signature checked); then `simpleQuery` runs commands
/// such as `IDENTIFY_SYSTEM` or `CREATE_REPLICATION_SLOT`, and `startReplication` switches the
/// connection to CopyBoth for good. The connection belongs to the task running the body of
/// `withConnection` (SwiftNIO's scoped `executeThenClose`), which makes its requests one at a
/// time (it is not Sendable); it is terminated and closed when the body returns or throws.
///
/// Back-pressure: messages come through `NIOAsyncChannel`, whose inbound buffer stops reading
/// the socket while the consumer is behind, so a fast server never makes the client buffer
/// without bound (PostgreSQL then holds the WAL).
public final class PostgresReplicationConnection {
    public enum TLSMode: String, Sendable {
        case disable, prefer, require
    }

    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        public var user: String
        public var password: String?
        public var database: String
        public var tls: TLSMode
        public var applicationName: String
        /// Largest backend message accepted (a row of big TOASTed values can be large).
        public var maxMessageSize: Int = 512 * 1024 * 1024

        public init(host: String, port: Int = 5432, user: String, password: String? = nil, database: String,
                    tls: TLSMode = .prefer, applicationName: String = "fjord-cdc") {
            self.host = host
            self.port = port
            self.user = user
            self.password = password
            self.database = database
            self.tls = tls
            self.applicationName = applicationName
        }
    }

    /// A simple query's answer: column names and each row's values as text (nil for NULL).
    public struct QueryResult: Sendable {
        public var columns: [String]
        public var rows: [[String?]]

        /// The value of `column` in row `row`, if present and not NULL.
        public func value(_ column: String, row: Int = 0) -> String? {
            guard let index = columns.firstIndex(of: column), row < rows.count else { return nil }
            return rows[row][index]
        }
    }

    private var inbound: NIOAsyncChannelInboundStream<PostgresBackendMessage>.AsyncIterator
    private let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    public private(set) var serverParameters: [String: String] = [:]
    private var replicating = false
    /// Wakes a `nextReplicationMessage` waiting on this connection, from any task.
    public let waker: Waker

    /// Makes a waiting `nextReplicationMessage` return `.wakeup` (at once if it is waiting,
    /// else at its next call): how a streaming loop, which owns the connection, is told about a
    /// timer or a stop request without giving up its wait for the server.
    public struct Waker: Sendable {
        let channel: any Channel

        public func wake() {
            channel.pipeline.fireUserInboundEventTriggered(WakeupEvent())
        }
    }

    private init(inbound: NIOAsyncChannelInboundStream<PostgresBackendMessage>.AsyncIterator,
                 outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, waker: Waker) {
        self.inbound = inbound
        self.outbound = outbound
        self.waker = waker
    }

    /// Connects, negotiates TLS, authenticates, runs `body` with the connection, then ends the
    /// session and closes the socket.
    public static func withConnection<Result: Sendable>(
        _ configuration: Configuration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        _ body: (PostgresReplicationConnection) async throws -> Result
    ) async throws -> Result {
        let negotiation = group.any().makePromise(of: Void.self)
        let tlsContext: NIOSSLContext? = configuration.tls == .disable ? nil : try {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.certificateVerification = .none  // sslmode=prefer/require encrypt without verifying, as libpq's
            return try NIOSSLContext(configuration: tls)
        }()
        let channel: NIOAsyncChannel<PostgresBackendMessage, ByteBuffer>
        do {
            channel = try await ClientBootstrap(group: group)
                .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                .connectTimeout(.seconds(10))
                .connect(host: configuration.host, port: configuration.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        if let tlsContext {
                            try sync.addHandler(SSLNegotiationHandler(context: tlsContext, serverHostname: configuration.host,
                                                                      required: configuration.tls == .require, done: negotiation))
                        } else {
                            negotiation.succeed()
                        }
                        try sync.addHandler(ByteToMessageHandler(PostgresMessageDecoder(maxMessageSize: configuration.maxMessageSize)))
                        try sync.addHandler(WakeupHandler())
                        return try NIOAsyncChannel<PostgresBackendMessage, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            negotiation.fail(error)
            throw PostgresReplicationError.connection("\(configuration.host):\(configuration.port): \(error)")
        }
        do {
            try await negotiation.futureResult.get()
        } catch {
            try? await channel.channel.close()
            throw error
        }
        return try await channel.executeThenClose { inbound, outbound in
            let connection = PostgresReplicationConnection(inbound: inbound.makeAsyncIterator(), outbound: outbound,
                                                           waker: Waker(channel: channel.channel))
            try await connection.startup(configuration)
            let result = try await body(connection)
            await connection.terminate()
            return result
        }
    }

    /// Runs one simple query (a replication command or SQL) and returns its rows.
    public func simpleQuery(_ sql: String) async throws -> QueryResult {
        guard !replicating else { throw PostgresReplicationError.protocolViolation("the connection is streaming replication") }
        try await outbound.write(PostgresFrontendMessage.query(sql))
        var result = QueryResult(columns: [], rows: [])
        var failure: PostgresReplicationError? = nil
        while true {
            switch try await next() {
            case .rowDescription(let names): result.columns = names
            case .dataRow(let values): result.rows.append(values.map { $0.map { String(buffer: $0) } })
            case .error(let error): failure = error
            case .readyForQuery:
                if let failure { throw failure }
                return result
            case .copyBothResponse, .copyInResponse, .copyOutResponse:
                throw PostgresReplicationError.protocolViolation("\(sql) started a COPY; use startReplication")
            default: continue
            }
        }
    }

    /// `START_REPLICATION SLOT <slot> LOGICAL <lsn> (<options>)`: from now on the connection
    /// streams; read it with `nextReplicationMessage` and confirm with `sendStandbyStatus`.
    public func startReplication(slot: String, from start: LSN, options: [(String, String)]) async throws {
        let rendered = options.map { "\(quoteIdentifier($0.0)) '\($0.1.replacingSingleQuotes())'" }.joined(separator: ", ")
        let sql = "START_REPLICATION SLOT \(quoteIdentifier(slot)) LOGICAL \(start)" + (rendered.isEmpty ? "" : " (\(rendered))")
        try await outbound.write(PostgresFrontendMessage.query(sql))
        while true {
            switch try await next() {
            case .copyBothResponse:
                replicating = true
                return
            case .error(let error):
                // The server follows an error with ReadyForQuery.
                while case let message = try await next(), !message.isReadyForQuery {}
                throw error
            default: continue
            }
        }
    }

    /// What the server streams during replication.
    public enum ReplicationMessage: Sendable {
        /// XLogData: WAL from `start` (the server's current end is `end`), one pgoutput message.
        case xlogData(start: LSN, end: LSN, serverTimeMicros: Int64, payload: ByteBuffer)
        /// A primary keepalive: the server's WAL end; `replyRequested` asks for a status update now.
        case keepalive(end: LSN, serverTimeMicros: Int64, replyRequested: Bool)
        /// The server ended the stream (CopyDone), for example on shutdown.
        case end
        /// `waker.wake()` was called.
        case wakeup
    }

    /// The next replication message (suspends while there is none).
    public func nextReplicationMessage() async throws -> ReplicationMessage {
        while true {
            switch try await next() {
            case .copyData(var payload):
                guard let kind = payload.readInteger(as: UInt8.self) else { throw PostgresReplicationError.protocolViolation("empty CopyData") }
                switch kind {
                case UInt8(ascii: "w"):
                    guard let start = payload.readInteger(as: UInt64.self), let end = payload.readInteger(as: UInt64.self),
                        let time = payload.readInteger(as: Int64.self) else { throw PostgresReplicationError.protocolViolation("short XLogData") }
                    return .xlogData(start: LSN(start), end: LSN(end), serverTimeMicros: time, payload: payload)
                case UInt8(ascii: "k"):
                    guard let end = payload.readInteger(as: UInt64.self), let time = payload.readInteger(as: Int64.self),
                        let reply = payload.readInteger(as: UInt8.self) else { throw PostgresReplicationError.protocolViolation("short keepalive") }
                    return .keepalive(end: LSN(end), serverTimeMicros: time, replyRequested: reply != 0)
                default:
                    continue  // a message kind this client does not use
                }
            case .copyDone: return .end
            case .wakeup: return .wakeup
            case .error(let error): throw error
            default: continue
            }
        }
    }

    /// A standby status update: everything up to `written`/`flushed`/`applied` is done; the
    /// server may recycle WAL before `flushed` (the slot's `confirmed_flush_lsn`).
    public func sendStandbyStatus(written: LSN, flushed: LSN, applied: LSN, replyRequested: Bool = false) async throws {
        var payload = ByteBuffer()
        payload.writeInteger(UInt8(ascii: "r"))
        payload.writeInteger(written.value)
        payload.writeInteger(flushed.value)
        payload.writeInteger(applied.value)
        payload.writeInteger(Self.postgresMicrosecondsNow())
        payload.writeInteger(UInt8(replyRequested ? 1 : 0))
        try await outbound.write(PostgresFrontendMessage.copyData(payload))
    }

    /// Microseconds since 2000-01-01 UTC, PostgreSQL's epoch.
    static func postgresMicrosecondsNow() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return (Int64(now.tv_sec) - 946_684_800) * 1_000_000 + Int64(now.tv_nsec) / 1000
    }

    /// Ends the session (Terminate); the socket closes when `withConnection` returns.
    private func terminate() async {
        try? await outbound.write(PostgresFrontendMessage.terminate)
    }

    // MARK: Startup and authentication

    private func startup(_ configuration: Configuration) async throws {
        try await outbound.write(PostgresFrontendMessage.startup(parameters: [
            ("user", configuration.user), ("database", configuration.database), ("replication", "database"),
            ("application_name", configuration.applicationName), ("client_encoding", "UTF8"),
            // pgoutput writes values in the session's text forms: fix them so they parse one way.
            ("DateStyle", "ISO, YMD"), ("TimeZone", "UTC"), ("IntervalStyle", "postgres"), ("extra_float_digits", "3"),
        ]))
        var scram: ScramClient? = nil
        while true {
            switch try await next() {
            case .authentication(let code, var data):
                switch code {
                case 0:
                    continue
                case 3:
                    try await outbound.write(PostgresFrontendMessage.password(try password(configuration)))
                case 5:
                    guard let salt = data.readBytes(length: 4) else { throw PostgresReplicationError.protocolViolation("MD5 without salt") }
                    let inner = hex(Insecure.MD5.hash(data: Array((try password(configuration) + configuration.user).utf8)))
                    let outer = hex(Insecure.MD5.hash(data: Array(inner.utf8) + salt))
                    try await outbound.write(PostgresFrontendMessage.password("md5" + outer))
                case 10:
                    var mechanisms: [String] = []
                    while let name = data.readNullTerminatedString(), !name.isEmpty { mechanisms.append(name) }
                    guard mechanisms.contains("SCRAM-SHA-256") else {
                        throw PostgresReplicationError.authentication("the server offers \(mechanisms), not SCRAM-SHA-256")
                    }
                    // PostgreSQL takes the user from the startup message; SCRAM's name is ignored.
                    let client = ScramClient(mechanism: .sha256, user: "", password: try password(configuration))
                    try await outbound.write(PostgresFrontendMessage.saslInitial(mechanism: "SCRAM-SHA-256", client.clientFirst))
                    scram = client
                case 11:
                    guard var client = scram else { throw PostgresReplicationError.protocolViolation("SASLContinue before SASL") }
                    let final = try client.clientFinal(serverFirst: Array(data.readableBytesView))
                    scram = client
                    try await outbound.write(PostgresFrontendMessage.saslResponse(final))
                case 12:
                    guard let client = scram else { throw PostgresReplicationError.protocolViolation("SASLFinal before SASL") }
                    do {
                        try client.verify(serverFinal: Array(data.readableBytesView))
                    } catch {
                        throw PostgresReplicationError.authentication("the server's SCRAM signature does not verify: \(error.message)")
                    }
                default:
                    throw PostgresReplicationError.authentication("unsupported authentication method \(code) (Fjord speaks password, md5 and scram-sha-256)")
                }
            case .parameterStatus(let name, let value):
                serverParameters[name] = value
            case .readyForQuery:
                return
            case .error(let error):
                throw error
            default:
                continue
            }
        }
    }

    private func password(_ configuration: Configuration) throws -> String {
        guard let password = configuration.password else {
            throw PostgresReplicationError.authentication("the server asks for a password and none was given")
        }
        return password
    }

    private func next() async throws -> PostgresBackendMessage {
        guard let message = try await inbound.next() else {
            throw PostgresReplicationError.connection("the server closed the connection")
        }
        return message
    }
}

extension PostgresBackendMessage {
    var isReadyForQuery: Bool {
        if case .readyForQuery = self { return true }
        return false
    }
}

/// Quotes an identifier for a replication command: `"name"` with `"` doubled.
func quoteIdentifier(_ name: String) -> String {
    "\"" + name.split(separator: "\"", omittingEmptySubsequences: false).joined(separator: "\"\"") + "\""
}

extension String {
    /// The text with `'` doubled, for a single-quoted literal.
    func replacingSingleQuotes() -> String {
        split(separator: "'", omittingEmptySubsequences: false).joined(separator: "''")
    }
}

private func hex(_ digest: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for byte in digest {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 0x0f)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// The event `Waker.wake()` fires down the pipeline.
struct WakeupEvent: Sendable {}

/// Turns a `WakeupEvent` into a `.wakeup` message for the reader, in order with the server's.
final class WakeupHandler: ChannelInboundHandler {
    typealias InboundIn = PostgresBackendMessage
    typealias InboundOut = PostgresBackendMessage

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is WakeupEvent {
            // NIOAsyncChannel hands reads to its reader at the end of a read burst.
            context.fireChannelRead(wrapInboundOut(.wakeup))
            context.fireChannelReadComplete()
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}

/// Sends PostgreSQL's SSLRequest when the channel becomes active and reads the one-byte answer:
/// `S` puts TLS in front of the pipeline, `N` goes on in plaintext unless TLS is required.
/// Removes itself once decided; `done` completes then.
final class SSLNegotiationHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let context: NIOSSLContext
    private let serverHostname: String
    private let required: Bool
    private let done: EventLoopPromise<Void>

    init(context: NIOSSLContext, serverHostname: String, required: Bool, done: EventLoopPromise<Void>) {
        self.context = context
        self.serverHostname = serverHostname
        self.required = required
        self.done = done
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(PostgresFrontendMessage.sslRequest), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        guard let answer = buffer.readInteger(as: UInt8.self) else { return }
        do {
            switch answer {
            case UInt8(ascii: "S"):
                let isAddress = (try? SocketAddress(ipAddress: serverHostname, port: 0)) != nil
                let tls = try NIOSSLClientHandler(context: self.context, serverHostname: isAddress ? nil : serverHostname)
                try context.pipeline.syncOperations.addHandler(tls, position: .first)
            case UInt8(ascii: "N") where !required:
                break
            case UInt8(ascii: "N"):
                throw PostgresReplicationError.connection("the server does not accept TLS and tls=require")
            default:
                throw PostgresReplicationError.protocolViolation("unexpected answer to SSLRequest")
            }
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
            done.succeed()
        } catch {
            done.fail(error)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        done.fail(PostgresReplicationError.connection("closed during the TLS negotiation"))
        context.fireChannelInactive()
    }
}
