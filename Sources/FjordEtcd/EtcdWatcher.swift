import GRPCCore
import Foundation
public import Logging
import Synchronization

/// A change etcd reported under a watched range.
public struct EtcdWatchEvent: Sendable, Equatable {
    public enum Kind: Sendable, Equatable { case put, delete }
    public var kind: Kind
    /// For a delete: the key and the revision of the deletion (`modRevision`), no value.
    public var kv: EtcdKeyValue
}

/// What a watch delivers.
public enum EtcdWatchUpdate: Sendable, Equatable {
    /// The changes of one or more revisions, in revision order; `revision` is the store's
    /// revision when etcd sent them.
    case events([EtcdWatchEvent], revision: Int64)
    /// The revisions from where the watch would resume were compacted away: read the range
    /// again, then watch from the revision of that read.
    case compacted(revision: Int64)
}

/// Many watches over one Watch stream (etcd multiplexes watch ids on one bidirectional stream).
///
/// Each watch remembers the revision after the last one it delivered; when the stream breaks
/// (etcd restarted or unreachable), it is opened again with backoff and every watch is created
/// again from its own next revision, so no change is missed or delivered twice.
public final class EtcdWatcher: Sendable {
    private struct Watch {
        var prefix: String
        var nextRevision: Int64
        var continuation: AsyncStream<EtcdWatchUpdate>.Continuation
    }

    private struct State {
        var watches: [Int64: Watch] = [:]
        var nextID: Int64 = 1
        /// Sends create/cancel requests on the open stream, if one is open.
        var requests: AsyncStream<Etcdserverpb_WatchRequest>.Continuation?
        var runner: Task<Void, Never>?
    }

    private let client: EtcdClient
    private let logger: Logger
    private let state = Mutex(State())
    /// Whether the current stream has delivered a response (resets the reconnect backoff).
    private let streamAnswered = Mutex(false)

    public init(client: EtcdClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Watches every key starting with `prefix`, from `revision` on (the revision after a read
    /// of the range, so nothing is missed between the read and the watch).
    public func watch(prefix: String, fromRevision revision: Int64) -> AsyncStream<EtcdWatchUpdate> {
        let (stream, continuation) = AsyncStream.makeStream(of: EtcdWatchUpdate.self)
        let (id, requests) = state.withLock { s -> (Int64, AsyncStream<Etcdserverpb_WatchRequest>.Continuation?) in
            let id = s.nextID
            s.nextID += 1
            s.watches[id] = Watch(prefix: prefix, nextRevision: revision, continuation: continuation)
            if s.runner == nil { s.runner = Task { [weak self] in await self?.run() } }
            return (id, s.requests)
        }
        continuation.onTermination = { [weak self] _ in self?.cancel(id) }
        requests?.yield(Self.createRequest(id: id, prefix: prefix, revision: revision))
        return stream
    }

    /// Stops every watch and the stream.
    public func close() {
        let (watches, runner) = state.withLock { s in
            defer { s.watches = [:]; s.runner = nil }
            return (Array(s.watches.values), s.runner)
        }
        runner?.cancel()
        for watch in watches { watch.continuation.finish() }
    }

    private func cancel(_ id: Int64) {
        let requests = state.withLock { s -> AsyncStream<Etcdserverpb_WatchRequest>.Continuation? in
            guard s.watches.removeValue(forKey: id) != nil else { return nil }
            return s.requests
        }
        var request = Etcdserverpb_WatchRequest()
        var cancel = Etcdserverpb_WatchCancelRequest()
        cancel.watchID = id
        request.requestUnion = .cancelRequest(cancel)
        requests?.yield(request)
    }

    private static func createRequest(id: Int64, prefix: String, revision: Int64) -> Etcdserverpb_WatchRequest {
        var create = Etcdserverpb_WatchCreateRequest()
        create.key = Data(prefix.utf8)
        create.rangeEnd = EtcdClient.prefixEnd(prefix)
        create.startRevision = revision
        create.watchID = id
        var request = Etcdserverpb_WatchRequest()
        request.requestUnion = .createRequest(create)
        return request
    }

    private func run() async {
        var backoff = Duration.milliseconds(100)
        while !Task.isCancelled {
            let (requests, continuation) = AsyncStream.makeStream(of: Etcdserverpb_WatchRequest.self)
            let creates = state.withLock { s in
                s.requests = continuation
                return s.watches.map { Self.createRequest(id: $0.key, prefix: $0.value.prefix, revision: $0.value.nextRevision) }
            }
            for create in creates { continuation.yield(create) }
            do {
                let options = EtcdClient.streamOptions
                try await client.watches.watch(options: options, requestProducer: { writer in
                    for await request in requests { try await writer.write(request) }
                }, onResponse: { [self] response in
                    for try await message in response.messages {
                        streamAnswered.withLock { $0 = true }
                        deliver(message)
                    }
                })
            } catch {
                if Task.isCancelled { break }
                logger.debug("etcd watch stream failed; retrying", metadata: ["error": "\(EtcdError.from(error))"])
            }
            state.withLock { $0.requests = nil }
            continuation.finish()
            // A stream that answered before it broke retries at once; one that never did backs off.
            backoff = streamAnswered.withLock { answered in
                defer { answered = false }
                return answered ? .milliseconds(100) : Swift.min(backoff * 2, .seconds(1))
            }
            try? await Task.sleep(for: backoff)
        }
    }

    private func deliver(_ message: Etcdserverpb_WatchResponse) {
        let id = message.watchID
        if message.compactRevision > 0 {
            let watch = state.withLock { s -> Watch? in
                // Resuming is pointless; the owner re-reads and watches again.
                s.watches.removeValue(forKey: id)
            }
            watch?.continuation.yield(.compacted(revision: message.compactRevision))
            watch?.continuation.finish()
            return
        }
        if message.canceled {
            // Ours are cancelled through `cancel` (and removed there). A watch etcd cancelled by
            // itself ends: its owner reads the range again and watches anew.
            let watch = state.withLock { $0.watches.removeValue(forKey: id) }
            if let watch {
                logger.warning("etcd cancelled a watch", metadata: ["reason": "\(message.cancelReason)"])
                watch.continuation.finish()
            }
            return
        }
        guard !message.events.isEmpty else { return }
        let events = message.events.map { event in
            EtcdWatchEvent(kind: event.type == .delete ? .delete : .put, kv: EtcdKeyValue(event.kv))
        }
        let continuation = state.withLock { s -> AsyncStream<EtcdWatchUpdate>.Continuation? in
            guard var watch = s.watches[id] else { return nil }
            watch.nextRevision = (events.last?.kv.modRevision ?? watch.nextRevision - 1) + 1
            s.watches[id] = watch
            return watch.continuation
        }
        continuation?.yield(.events(events, revision: message.header.revision))
    }
}
