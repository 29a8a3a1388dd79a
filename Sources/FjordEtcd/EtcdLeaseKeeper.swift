import GRPCCore
public import Logging
import Synchronization

/// Keeps leases alive over one LeaseKeepAlive stream for all of them (etcd's keepalive is a
/// bidirectional stream: one request per lease per interval, one response each).
///
/// A response with a TTL of 0 means the lease is gone (it expired while this process could not
/// reach etcd, or it was revoked): the lease is dropped and its `onLost` runs once, so its owner
/// registers again. A broken stream is opened again with backoff; etcd restores leases when it
/// restarts, so a short etcd outage loses nothing.
public final class EtcdLeaseKeeper: Sendable {
    private struct Kept {
        var ttlSeconds: Int64
        var onLost: @Sendable (Int64) -> Void
    }

    private let client: EtcdClient
    private let logger: Logger
    private let kept = Mutex<[Int64: Kept]>([:])
    private let runner = Mutex<Task<Void, Never>?>(nil)
    /// Whether the current stream has delivered a response (resets the reconnect backoff).
    private let streamAnswered = Mutex(false)

    public init(client: EtcdClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Keeps `lease` alive until `stop(_:)`, or until etcd says it is gone (then `onLost`).
    public func keepAlive(_ lease: Int64, ttlSeconds: Int64, onLost: @escaping @Sendable (Int64) -> Void) {
        kept.withLock { $0[lease] = Kept(ttlSeconds: ttlSeconds, onLost: onLost) }
        runner.withLock { task in
            if task == nil { task = Task { [weak self] in await self?.run() } }
        }
    }

    /// Stops keeping `lease` alive (it expires after its TTL unless revoked).
    public func stop(_ lease: Int64) {
        _ = kept.withLock { $0.removeValue(forKey: lease) }
    }

    /// Stops the stream and every lease's keepalive.
    public func close() {
        kept.withLock { $0 = [:] }
        runner.withLock { task in
            task?.cancel()
            task = nil
        }
    }

    private var interval: Duration {
        let shortest = kept.withLock { $0.values.map(\.ttlSeconds).min() } ?? 3
        // A third of the TTL, as etcd's own clients do.
        return .milliseconds(Swift.max(300, shortest * 1000 / 3))
    }

    private func run() async {
        var backoff = Duration.milliseconds(100)
        while !Task.isCancelled {
            do {
                let options = EtcdClient.streamOptions
                try await client.leases.leaseKeepAlive(options: options, requestProducer: { [self] writer in
                    while !Task.isCancelled {
                        for lease in kept.withLock({ Array($0.keys) }) {
                            var request = Etcdserverpb_LeaseKeepAliveRequest()
                            request.id = lease
                            try await writer.write(request)
                        }
                        try await Task.sleep(for: interval)
                    }
                }, onResponse: { [self] response in
                    for try await message in response.messages {
                        streamAnswered.withLock { $0 = true }
                        if message.ttl <= 0 { lost(message.id) }
                    }
                })
            } catch {
                if Task.isCancelled { return }
                logger.debug("etcd lease keepalive stream failed; retrying", metadata: ["error": "\(EtcdError.from(error))"])
            }
            // A stream that answered before it broke retries at once; one that never did backs off.
            backoff = streamAnswered.withLock { answered in
                defer { answered = false }
                return answered ? .milliseconds(100) : Swift.min(backoff * 2, .seconds(1))
            }
            try? await Task.sleep(for: backoff)
        }
    }

    private func lost(_ lease: Int64) {
        guard let entry = kept.withLock({ $0.removeValue(forKey: lease) }) else { return }
        logger.warning("etcd lease lost", metadata: ["lease": "\(String(lease, radix: 16))"])
        entry.onLost(lease)
    }
}
