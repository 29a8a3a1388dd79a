import CoreMetrics
import FjordBroker
import FjordStorage
import Logging
import NIOCore

/// One connection (Kafka's per-connection `Processor` state): requests are answered strictly in
/// order and the connection applies back-pressure both ways.
///
/// Invariants, all on the channel's event loop: requests start one at a time, in order, each
/// once the previous one has *admitted* the next; responses are written in request order; a
/// malformed frame or an undecodable request closes this connection only (the decoder throws,
/// or the broker answers `closeConnection`).
///
/// Admission: a request admits the next when it completes, except a Produce, which admits a
/// following Produce as soon as its records are appended, before it waits for `acks=all`
/// replication or an fsync (as Redpanda pipelines produce). The log order is still the request
/// order and the answers still come in order; what changes is that a producer's next batch is
/// appended while the previous one replicates, instead of the connection idling for a follower
/// round trip (Kafka mutes the connection until the answer is out). Any other request starts
/// only once everything before it is answered, and nothing starts after a request whose answer
/// closes the connection. At most `maxStarted` requests are started and unanswered at a time.
///
/// Back-pressure: reading stops (`autoRead` off) while the queued request bytes exceed
/// `maxQueuedBytes` (a fast producer cannot make the broker buffer without bound) or while the
/// channel is not writable (a slow reader: its responses sit above the write-buffer high
/// watermark), and no queued request is started until the channel is writable again. Reading
/// resumes when both clear.
///
/// Throttling (KIP-219): after a `.throttled` reply the connection starts no request (and,
/// once its queue is full, reads nothing) until the throttle time has passed; the response
/// itself goes out at once, carrying `throttle_time_ms`.
///
/// Flushing: responses written during a read loop are flushed once in `channelReadComplete`;
/// a response that completes outside a read loop (the usual case: handlers run on tasks) is
/// flushed at once. Record bytes go out as `FileRegion`s leased from storage (`sendfile`); the
/// handler never handles descriptors. Behind TLS, which must encrypt every byte in user space,
/// the slices are read into buffers instead (`sendsFileRegions` false).
final class KafkaConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = IOData

    private let apis: KafkaAPIs
    private let connection: ClientConnection
    private let logger: Logger
    private let maxQueuedBytes: Int
    private let sendsFileRegions: Bool
    /// How much of a file slice is read and encrypted at a time behind TLS.
    static let tlsChunkBytes = 64 * 1024
    /// Requests read and not yet started, each with when it was read (request queue time).
    private var queue: [(frame: ByteBuffer, receivedAt: ContinuousClock.Instant)] = []
    private var queuedBytes = 0
    /// Started requests not answered yet, in request order, each with its reply once it has one.
    private var started: [(id: UInt64, task: Task<Void, Never>?, reply: BrokerReply?)] = []
    private var nextID: UInt64 = 0
    /// The started request that has not admitted the next yet, if any.
    private var admitting: UInt64? = nil
    /// Started, unanswered requests at most (pipelined produce requests).
    static let maxStarted = 8
    private var readingPaused = false
    private var inReadLoop = false
    private var flushPending = false
    /// Whether the connection is muted for a quota throttle.
    private var muted = false
    /// Set once a started request answered by closing the connection: nothing after it is
    /// started (or read), as Kafka reads no request after one it closes the connection for.
    private var closing = false

    /// Open client connections (Kafka's `connection-count`).
    private static let connections = Meter(label: "kafka_server_socketservermetrics_connection_count")

    init(apis: KafkaAPIs, connection: ClientConnection, logger: Logger, maxQueuedBytes: Int, sendsFileRegions: Bool) {
        self.apis = apis
        self.connection = connection
        self.logger = logger
        self.maxQueuedBytes = maxQueuedBytes
        self.sendsFileRegions = sendsFileRegions
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        inReadLoop = true
        guard !closing else { return }
        let frame = unwrapInboundIn(data)
        queue.append((frame, .now))
        queuedBytes += frame.readableBytes
        updateReading(context: context)
        processNext(context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        inReadLoop = false
        if flushPending {
            flushPending = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        updateReading(context: context)
        if context.channel.isWritable { processNext(context: context) }
        context.fireChannelWritabilityChanged()
    }

    /// Reading runs only while the queue is within its limit and the client reads its responses.
    private func updateReading(context: ChannelHandlerContext) {
        guard !closing else { return }
        let writable = context.channel.isWritable
        if !readingPaused && (queuedBytes > maxQueuedBytes || !writable) {
            readingPaused = true
            context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
        } else if readingPaused && queuedBytes <= maxQueuedBytes / 2 && writable {
            readingPaused = false
            context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
            context.read()
        }
    }

    /// Starts the next queued request once the previous one admitted it. Started requests are
    /// cancelled when the connection closes, so a long poll or a waiting JoinGroup of a gone
    /// client does not linger.
    private func processNext(context: ChannelHandlerContext) {
        guard admitting == nil, !closing, !muted, let next = queue.first, started.count < Self.maxStarted,
              context.channel.isWritable else { return }
        // Only a Produce joins produce requests still waiting for their answers: any other
        // request (a Fetch, an OffsetCommit, …) starts once everything before it is answered,
        // as on Kafka, so it sees their effects.
        if started.contains(where: { $0.reply == nil }), !KafkaAPIs.joinsProducePipeline(next.frame) { return }
        let (frame, receivedAt) = queue.removeFirst()
        queuedBytes -= frame.readableBytes
        nextID &+= 1
        let id = nextID
        admitting = id
        started.append((id, nil, nil))
        let apis = self.apis
        let connection = self.connection
        let channel = context.channel
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        let task = Task {
            let reply = await apis.handle(frame, connection: connection, receivedAt: receivedAt) {
                eventLoop.execute {
                    let (handler, context) = loopBound.value
                    handler.admitted(id, context: context)
                }
            }
            // A closed connection (or a stopped server) has nobody to answer.
            guard !Task.isCancelled, channel.isActive else { return }
            eventLoop.execute {
                let (handler, context) = loopBound.value
                guard channel.isActive else { return }
                handler.completed(id, reply, context: context)
            }
        }
        if let index = started.firstIndex(where: { $0.id == id }) { started[index].task = task }
    }

    /// Request `id` lets the next one start (its records are appended).
    private func admitted(_ id: UInt64, context: ChannelHandlerContext) {
        guard admitting == id else { return }
        admitting = nil
        updateReading(context: context)
        processNext(context: context)
    }

    /// Request `id` has its reply: the replies at the head of the line go out, in order.
    private func completed(_ id: UInt64, _ reply: BrokerReply, context: ChannelHandlerContext) {
        guard let index = started.firstIndex(where: { $0.id == id }) else { return }
        started[index].reply = reply
        started[index].task = nil
        if admitting == id { admitting = nil }
        if reply.closesConnection && !closing {
            // Answered in its turn, after the requests before it; none after it starts.
            closing = true
            queue.removeAll()
            queuedBytes = 0
            if !readingPaused {
                readingPaused = true
                context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
            }
        }
        while let head = started.first, let ready = head.reply {
            started.removeFirst()
            guard write(ready, context: context) else { return }
        }
        updateReading(context: context)
        processNext(context: context)
    }

    /// Writes one reply; false when it closed the connection instead (or as well).
    private func write(_ reply: BrokerReply, context: ChannelHandlerContext) -> Bool {
        switch reply {
        case .throttled(let inner, let ms):
            mute(for: ms, context: context)
            return write(inner, context: context)
        case .noResponse:
            return true
        case .closeConnection(let reason):
            logger.warning("closing connection", metadata: ["remote": "\(context.channel.remoteAddress?.description ?? "?")", "reason": "\(reason)"])
            context.close(promise: nil)
            return false
        case .responseThenClose(let parts, let reason):
            logger.info("closing connection after its answer", metadata: [
                "remote": "\(context.channel.remoteAddress?.description ?? "?")", "reason": "\(reason)",
            ])
            queue.removeAll()
            queuedBytes = 0
            for entry in started { entry.task?.cancel() }
            started.removeAll()
            // Closed once the answer is out (a close fails writes still pending).
            let channel = context.channel
            let written = context.eventLoop.makePromise(of: Void.self)
            written.futureResult.whenComplete { _ in channel.close(promise: nil) }
            writeResponse(parts, context: context, completion: written)
            return false
        case .response(let parts):
            return writeResponse(parts, context: context)
        }
    }

    /// Starts no request for `ms`, then resumes with the queued ones.
    private func mute(for ms: Int64, context: ChannelHandlerContext) {
        guard ms > 0 else { return }
        muted = true
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: .milliseconds(ms)) {
            let (handler, context) = loopBound.value
            handler.muted = false
            guard context.channel.isActive else { return }
            handler.updateReading(context: context)
            handler.processNext(context: context)
        }
    }

    /// Writes one size-prefixed response; false when the connection was closed instead.
    /// `completion`, when given, completes with the last write and the response is flushed at
    /// once (else within the read loop).
    @discardableResult
    private func writeResponse(_ parts: [ResponsePart], context: ChannelHandlerContext,
                               completion: EventLoopPromise<Void>? = nil) -> Bool {
        var prefix = context.channel.allocator.buffer(capacity: 4)
        prefix.writeInteger(Int32(truncatingIfNeeded: parts.totalLength), endianness: .big)
        context.write(wrapOutboundOut(.byteBuffer(prefix)), promise: parts.isEmpty ? completion : nil)
        for (index, part) in parts.enumerated() {
            let promise = index == parts.count - 1 ? completion : nil
            switch part {
            case .bytes(let bytes):
                context.write(wrapOutboundOut(.byteBuffer(bytes)), promise: promise)
            case .file(let slice) where !sendsFileRegions:
                // Behind TLS: read, encrypt and send the slice a chunk at a time, each flushed,
                // so the client decrypts the first chunks while this broker encrypts the next
                // (a whole megabyte read, then encrypted, then sent, left the two in turn).
                do {
                    var offset = 0
                    repeat {
                        let chunk = try slice.readBytes(from: offset, count: Self.tlsChunkBytes, allocator: context.channel.allocator)
                        offset += chunk.readableBytes
                        let last = offset >= slice.length
                        context.write(wrapOutboundOut(.byteBuffer(chunk)), promise: last ? promise : nil)
                        if !last { context.flush() }
                    } while offset < slice.length
                } catch {
                    logger.error("cannot read records; closing connection", metadata: ["error": "\(error)"])
                    completion?.fail(error)
                    context.close(promise: nil)
                    return false
                }
            case .file(let slice):
                let lease: FileRegionLease
                do {
                    lease = try slice.leaseRegion()
                } catch {
                    logger.error("cannot send records; closing connection", metadata: ["error": "\(error)"])
                    completion?.fail(error)
                    context.close(promise: nil)
                    return false
                }
                let written = context.eventLoop.makePromise(of: Void.self)
                written.futureResult.whenComplete { _ in lease.release() }
                if let promise { written.futureResult.cascade(to: promise) }
                context.write(wrapOutboundOut(.fileRegion(lease.region)), promise: written)
            }
        }
        if inReadLoop && completion == nil { flushPending = true } else { context.flush() }
        return true
    }

    func channelActive(context: ChannelHandlerContext) {
        Self.connections.increment()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        Self.connections.decrement()
        for entry in started { entry.task?.cancel() }
        started.removeAll()
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
