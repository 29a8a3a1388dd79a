public import FjordProtocol
public import NIOCore
public import NIOPosix
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
final class ResponseDispatcher: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private var pending: [Int32: EventLoopPromise<ByteBuffer>] = [:]

    func register(_ correlationID: Int32, _ promise: EventLoopPromise<ByteBuffer>) {
        pending[correlationID] = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard let correlationID = frame.getInteger(at: frame.readerIndex, endianness: .big, as: Int32.self),
            let promise = pending.removeValue(forKey: correlationID)
        else {
            context.fireErrorCaught(ClientError.protocolViolation("response for an unknown correlation id"))
            return
        }
        promise.succeed(frame)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(ClientError.connection("connection closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(error)
        context.close(promise: nil)
    }

    private func failAll(_ error: any Error) {
        let waiting = pending
        pending = [:]
        for promise in waiting.values { promise.fail(error) }
    }
}

/// One TCP connection to one broker, with pipelined requests (Kafka answers in order on a
/// connection; responses are matched by correlation id) and the API versions negotiated at
/// connect time: for each API the highest version both sides support.
public final class BrokerConnection: Sendable {
    public let host: String
    public let port: Int
    public let clientID: String
    private let channel: any Channel
    private let dispatcher: NIOLoopBound<ResponseDispatcher>
    private let state: Mutex<(nextCorrelationID: Int32, versions: [APIKey: ClosedRange<Int16>])>

    private init(host: String, port: Int, clientID: String, channel: any Channel, dispatcher: NIOLoopBound<ResponseDispatcher>) {
        self.host = host
        self.port = port
        self.clientID = clientID
        self.channel = channel
        self.dispatcher = dispatcher
        self.state = Mutex((1, [:]))
    }

    /// Connects and negotiates API versions (ApiVersions v3, falling back to v0 as Kafka's
    /// clients do when the broker answers UNSUPPORTED_VERSION).
    public static func connect(host: String, port: Int, clientID: String = "fjord-swift",
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                               maxResponseSize: Int = 256 * 1024 * 1024) async throws -> BrokerConnection {
        let bootstrap = ClientBootstrap(group: group)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: host, port: port).get()
        } catch {
            throw ClientError.connection("\(host):\(port): \(error)")
        }
        let dispatcher = try await channel.eventLoop.submit {
            let dispatcher = ResponseDispatcher()
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(ResponseFrameDecoder(maxFrameSize: maxResponseSize)))
            try channel.pipeline.syncOperations.addHandler(dispatcher)
            return NIOLoopBound(dispatcher, eventLoop: channel.eventLoop)
        }.get()
        let connection = BrokerConnection(host: host, port: port, clientID: clientID, channel: channel, dispatcher: dispatcher)
        try await connection.negotiateVersions()
        return connection
    }

    private func negotiateVersions() async throws {
        var response = try await send(ApiVersionsRequest(), version: 3, checkVersion: false)
        if response.errorCode == KafkaError.unsupportedVersion.code {
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
    public func send<Request: KafkaRequest>(_ request: Request, version: Int16? = nil) async throws -> Request.Response {
        let chosen = try version ?? self.version(of: Request.apiKey)
        return try await send(request, version: chosen, checkVersion: true)
    }

    private func send<Request: KafkaRequest>(_ request: Request, version: Int16, checkVersion: Bool) async throws -> Request.Response {
        if checkVersion, let range = versions(of: Request.apiKey), !range.contains(version) {
            throw ClientError.unsupportedAPI(Request.apiKey)
        }
        let (correlationID, payload) = try encodeFrame(request, version: version)
        let promise = channel.eventLoop.makePromise(of: ByteBuffer.self)
        let dispatcher = self.dispatcher
        let channel = self.channel
        channel.eventLoop.execute {
            dispatcher.value.register(correlationID, promise)
            channel.writeAndFlush(payload).whenFailure { promise.fail($0) }
        }
        let frame = try await promise.futureResult.get()
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

    /// Sends a request the broker does not answer (Produce with acks=0).
    public func sendWithoutResponse<Request: KafkaRequest>(_ request: Request, version: Int16? = nil) async throws {
        let chosen = try version ?? self.version(of: Request.apiKey)
        let (_, payload) = try encodeFrame(request, version: chosen)
        try await channel.writeAndFlush(payload)
    }

    public func close() async {
        try? await channel.close()
    }
}
