#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
public import FjordProtocol
import CoreMetrics
import Metrics
public import NIOCore
public import NIOPosix
import FjordSecurity
import NIOSSL
import Synchronization

/// Splits response frames (4-byte size, then header + body) on the client side.
struct ResponseFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    let maxFrameSize: Int

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let size = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: Int32.self) else { return .needMoreData }
        guard size >= 0, Int(size) <= maxFrameSize else {
            throw ClientError.protocolViolation("response size \(size) outside 0...\(maxFrameSize)")
        }
        guard buffer.readableBytes >= 4 + Int(size) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        guard let frame = buffer.readSlice(length: Int(size)) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(frame))
        return .continue
    }
}

/// Matches responses to requests by correlation id; completes pending promises on errors.
/// Loop-confined: every method runs on the channel's event loop.
final class ResponseDispatcher: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private var pending: [Int32: (promise: EventLoopPromise<ByteBuffer>, timeout: Scheduled<Void>?)] = [:]
    private var closedError: (any Error)?

    /// Registers a request; `timeout` later fails it and closes the connection (Kafka's
    /// NetworkClient does the same: after a timeout the connection's state is unknown).
    func register(_ correlationID: Int32, _ promise: EventLoopPromise<ByteBuffer>, timeout: TimeAmount?,
                  context channel: any Channel, describe: @escaping @Sendable () -> String) {
        if let closedError {
            promise.fail(closedError)
            return
        }
        var scheduled: Scheduled<Void>? = nil
        if let timeout {
            let bound = NIOLoopBound(self, eventLoop: channel.eventLoop)  // the task runs on this loop
            scheduled = channel.eventLoop.scheduleTask(in: timeout) {
                guard let entry = bound.value.pending.removeValue(forKey: correlationID) else { return }
                entry.promise.fail(ClientError.timeout(describe()))
                channel.close(promise: nil)
            }
        }
        pending[correlationID] = (promise, scheduled)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard let correlationID = frame.getInteger(at: frame.readerIndex, endianness: .big, as: Int32.self),
            let entry = pending.removeValue(forKey: correlationID)
        else {
            context.fireErrorCaught(ClientError.protocolViolation("response for an unknown correlation id"))
            return
        }
        entry.timeout?.cancel()
        entry.promise.succeed(frame)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(ClientError.connection("connection closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A socket's failure (ECONNRESET while a broker restarts, a TLS alert) loses the
        // connection, which callers retry on another: it must read as `.connection`, not as a
        // raw NIO error that no retry policy knows.
        failAll(error as? ClientError ?? ClientError.connection("\(error)"))
        context.close(promise: nil)
    }

    private func failAll(_ error: any Error) {
        if closedError == nil { closedError = error }
        let waiting = pending
        pending = [:]
        for entry in waiting.values {
            entry.timeout?.cancel()
            entry.promise.fail(error)
        }
    }
}

/// One TCP connection to one broker, with pipelined requests (Kafka answers in order on a
/// connection; responses are matched by correlation id) and the API versions negotiated at
/// connect time: for each API the highest version both sides support.
///
/// A request that gets no response within its timeout fails with `ClientError.timeout` and
/// closes the connection; every other pending request then fails with `ClientError.connection`.
/// A closed connection stays closed (`isActive` is false): owners reconnect with a new one.
public final class BrokerConnection: Sendable {
    public let host: String
    public let port: Int
    public let clientID: String
    /// The default time a request may wait for its response (`request.timeout.ms`).
    public let requestTimeout: TimeAmount
    private let channel: any Channel
    private let dispatcher: NIOLoopBound<ResponseDispatcher>
    private let state: Mutex<(nextCorrelationID: Int32, versions: [APIKey: ClosedRange<Int16>])>

    private init(host: String, port: Int, clientID: String, requestTimeout: TimeAmount, channel: any Channel,
                 dispatcher: NIOLoopBound<ResponseDispatcher>) {
        self.host = host
        self.port = port
        self.clientID = clientID
        self.requestTimeout = requestTimeout
        self.channel = channel
        self.dispatcher = dispatcher
        self.state = Mutex((1, [:]))
    }

    /// Connects and negotiates API versions (ApiVersions v3, falling back to v0 as Kafka's
    /// clients do when the broker answers UNSUPPORTED_VERSION).
    public static func connect(host: String, port: Int, clientID: String = "fjord-swift",
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                               connectTimeout: TimeAmount = .seconds(10),
                               requestTimeout: TimeAmount = .seconds(30),
                               maxResponseSize: Int = 256 * 1024 * 1024,
                               security: ClientSecurity = ClientSecurity()) async throws -> BrokerConnection {
        if let problem = security.problem { throw ClientError.invalidConfiguration(problem) }
        let tls = security.securityProtocol.usesTLS ? try security.makeTLSContext() : nil
        let bootstrap = ClientBootstrap(group: group)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(connectTimeout)
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: host, port: port).get()
        } catch let error as NIOConnectionError {
            // "Connection refused", not NIO's nested error dump.
            let reasons = error.connectionErrors.map { failure -> String in
                if let io = failure.error as? IOError { return String(cString: strerror(io.errnoCode)) }
                return "\(failure.error)"
            }
            let reason = reasons.last ?? (error.dnsAError ?? error.dnsAAAAError).map { "cannot resolve: \($0)" } ?? "\(error)"
            throw ClientError.connection("\(host):\(port): \(reason)")
        } catch {
            throw ClientError.connection("\(host):\(port): \(error)")
        }
        let dispatcher = try await channel.eventLoop.submit {
            let dispatcher = ResponseDispatcher()
            if let tls {
                // SNI and the name check take a host name; an address is checked against the peer's.
                let isAddress = (try? SocketAddress(ipAddress: host, port: 0)) != nil
                try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: isAddress ? nil : host))
            }
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(ResponseFrameDecoder(maxFrameSize: maxResponseSize)))
            try channel.pipeline.syncOperations.addHandler(dispatcher)
            return NIOLoopBound(dispatcher, eventLoop: channel.eventLoop)
        }.get()
        let connection = BrokerConnection(host: host, port: port, clientID: clientID, requestTimeout: requestTimeout,
                                          channel: channel, dispatcher: dispatcher)
        do {
            try await connection.negotiateVersions()
            if security.securityProtocol.usesSASL { try await connection.authenticate(security) }
        } catch {
            await connection.close()
            throw error
        }
        return connection
    }

    /// False once the connection is closed (by either side, or after a request timeout).
    public var isActive: Bool { channel.isActive }

    /// ApiVersions v3 first; a broker without it answers UNSUPPORTED_VERSION in the v0 body
    /// format (KIP-511), which is decoded as such before asking again at v0.
    private func negotiateVersions() async throws {
        let pending = try submit(ApiVersionsRequest(), version: 3, checkVersion: false, timeout: nil)
        let frame = try await pending.future.get()
        var response: ApiVersionsResponse
        if let decoded = try? ResponseFrame.decode(frame, apiKey: .apiVersions, version: 3).1 as? ApiVersionsResponse,
           decoded.errorCode != KafkaError.unsupportedVersion.code {
            response = decoded
        } else {
            response = try await send(ApiVersionsRequest(), version: 0, checkVersion: false)
        }
        guard response.errorCode == 0 else {
            throw ClientError.kafka(KafkaError(code: response.errorCode), "ApiVersions")
        }
        var versions: [APIKey: ClosedRange<Int16>] = [:]
        for entry in response.apiKeys {
            guard let key = APIKey(rawValue: entry.apiKey) else { continue }
            let ours = key.validVersions
            let low = Swift.max(ours.lowerBound, entry.minVersion)
            let high = Swift.min(ours.upperBound, entry.maxVersion)
            if low <= high { versions[key] = low...high }
        }
        state.withLock { $0.versions = versions }
    }

    /// SASL login (SaslHandshake v1, then SaslAuthenticate): PLAIN in one message, SCRAM in two
    /// with the server's signature checked. A refusal throws SASL_AUTHENTICATION_FAILED with
    /// the broker's message. (The broker closes the connection when a KIP-368 session ends; the
    /// client then reconnects and logs in again.)
    private func authenticate(_ security: ClientSecurity) async throws {
        guard let mechanism = security.saslMechanism, let user = security.saslUsername, let password = security.saslPassword else {
            throw ClientError.invalidConfiguration(security.problem ?? "incomplete SASL settings")
        }
        var handshake = SaslHandshakeRequest()
        handshake.mechanism = mechanism
        let offered = try await send(handshake, version: 1, checkVersion: false)
        guard offered.errorCode == 0 else {
            throw ClientError.kafka(KafkaError(code: offered.errorCode),
                                    "SASL mechanism \(mechanism) is not enabled (the broker offers \(offered.mechanisms.joined(separator: ", ")))")
        }
        let version = try self.version(of: .saslAuthenticate, max: 2)
        func exchange(_ token: [UInt8]) async throws -> [UInt8] {
            var request = SaslAuthenticateRequest()
            request.authBytes = ByteBuffer(bytes: token)
            let response = try await send(request, version: version, checkVersion: false)
            guard response.errorCode == 0 else {
                throw ClientError.kafka(KafkaError(code: response.errorCode), response.errorMessage ?? "SASL authentication failed")
            }
            return Array(response.authBytes.readableBytesView)
        }
        if mechanism == "PLAIN" {
            _ = try await exchange([0] + Array(user.utf8) + [0] + Array(password.utf8))
            return
        }
        guard let scram = ScramMechanism(name: mechanism) else { throw ClientError.invalidConfiguration("unknown SASL mechanism \(mechanism)") }
        var client = ScramClient(mechanism: scram, user: user, password: password)
        do {
            let serverFirst = try await exchange(client.clientFirst)
            let serverFinal = try await exchange(try client.clientFinal(serverFirst: serverFirst))
            try client.verify(serverFinal: serverFinal)
        } catch let error as SaslAuthenticationError {
            throw ClientError.kafka(.saslAuthenticationFailed, error.message)
        }
    }

    /// The versions of `key` both sides support, or nil.
    public func versions(of key: APIKey) -> ClosedRange<Int16>? {
        state.withLock { $0.versions[key] }
    }

    /// The highest version of `key` both sides support, capped at `max`.
    public func version(of key: APIKey, max: Int16 = Int16.max) throws -> Int16 {
        guard let range = versions(of: key), range.lowerBound <= max else { throw ClientError.unsupportedAPI(key) }
        return Swift.min(range.upperBound, max)
    }

    /// Sends a request at the highest common version (or `version`) and decodes its response.
    /// `timeout` defaults to `requestTimeout`; long polls (Fetch) pass their wait on top of it.
    public func send<Request: KafkaRequest>(_ request: Request, version: Int16? = nil, timeout: TimeAmount? = nil) async throws -> Request.Response {
        let chosen = try version ?? self.version(of: Request.apiKey)
        return try await send(request, version: chosen, checkVersion: true, timeout: timeout ?? requestTimeout)
    }

    private func send<Request: KafkaRequest>(_ request: Request, version: Int16, checkVersion: Bool,
                                             timeout: TimeAmount? = nil) async throws -> Request.Response {
        try await submit(request, version: version, checkVersion: checkVersion, timeout: timeout).response()
    }

    /// Writes a request now and returns a handle to await its response later. Requests
    /// submitted from one task reach the broker in submission order, and the broker answers
    /// them in that order: the producer relies on this to pipeline a partition's batches.
    public func submit<Request: KafkaRequest>(_ request: Request, version: Int16? = nil,
                                              timeout: TimeAmount? = nil) throws -> PendingResponse<Request> {
        let chosen = try version ?? self.version(of: Request.apiKey)
        return try submit(request, version: chosen, checkVersion: true, timeout: timeout)
    }

    private func submit<Request: KafkaRequest>(_ request: Request, version: Int16, checkVersion: Bool,
                                               timeout: TimeAmount?) throws -> PendingResponse<Request> {
        if checkVersion, let range = versions(of: Request.apiKey), !range.contains(version) {
            throw ClientError.unsupportedAPI(Request.apiKey)
        }
        let (correlationID, payload) = try encodeFrame(request, version: version)
        let promise = channel.eventLoop.makePromise(of: ByteBuffer.self)
        let dispatcher = self.dispatcher
        let channel = self.channel
        let endpoint = "\(host):\(port)"
        let deadline = timeout ?? requestTimeout
        channel.eventLoop.execute {
            dispatcher.value.register(correlationID, promise, timeout: deadline, context: channel) {
                "\(Request.apiKey.name) v\(version) to \(endpoint) got no response"
            }
            channel.writeAndFlush(payload).whenFailure { promise.fail(ClientError.connection("\(endpoint): \($0)")) }
        }
        return PendingResponse(future: promise.futureResult, version: version, clientID: clientID, started: .now)
    }

    /// A size-prefixed request frame with the next correlation id.
    private func encodeFrame<Request: KafkaRequest>(_ request: Request, version: Int16) throws -> (Int32, ByteBuffer) {
        let correlationID = state.withLock { s -> Int32 in
            defer { s.nextCorrelationID = s.nextCorrelationID == Int32.max ? 1 : s.nextCorrelationID + 1 }
            return s.nextCorrelationID
        }
        var payload = channel.allocator.buffer(capacity: 256)
        payload.writeInteger(Int32(0), endianness: .big)
        try RequestFrame.encode(request, version: version, correlationID: correlationID, clientID: clientID, into: &payload)
        payload.setInteger(Int32(payload.readableBytes - 4), at: payload.readerIndex, endianness: .big)
        return (correlationID, payload)
    }

    /// Writes a request the broker does not answer (Produce with acks=0), without waiting.
    public func submitWithoutResponse<Request: KafkaRequest>(_ request: Request, version: Int16? = nil) throws {
        let chosen = try version ?? self.version(of: Request.apiKey)
        let (_, payload) = try encodeFrame(request, version: chosen)
        channel.writeAndFlush(payload, promise: nil)
    }

    public func close() async {
        try? await channel.close()
    }
}

/// A request on the wire whose response is still to come (see `BrokerConnection.submit`).
public struct PendingResponse<Request: KafkaRequest>: Sendable {
    let future: EventLoopFuture<ByteBuffer>
    let version: Int16
    let clientID: String
    let started: ContinuousClock.Instant

    /// Waits for the response and decodes it.
    public func response() async throws -> Request.Response {
        let frame: ByteBuffer
        do {
            frame = try await future.get()
        } catch {
            ClientMetrics.requestErrors(Request.apiKey, clientID: clientID).increment()
            throw error
        }
        ClientMetrics.requestLatency(Request.apiKey, clientID: clientID).recordNanoseconds((ContinuousClock.now - started).nanoseconds)
        do {
            let (_, body) = try ResponseFrame.decode(frame, apiKey: Request.apiKey, version: version)
            guard let typed = body as? Request.Response else {
                throw ClientError.protocolViolation("unexpected response type for \(Request.apiKey.name)")
            }
            return typed
        } catch let error as ProtocolError {
            throw ClientError.protocolViolation("\(Request.apiKey.name) v\(version): \(error)")
        }
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
