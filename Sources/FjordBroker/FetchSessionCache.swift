import FjordProtocol
import Synchronization

/// Incremental fetch sessions (KIP-227, Kafka's `FetchSession` / `FetchSessionCache`).
///
/// A client that sends epoch 0 gets a session: the broker remembers its partitions and their
/// fetch positions, and later requests (epoch 1, 2, …) name only partitions that changed (or
/// are forgotten). Responses of an incremental session carry only partitions with records, an
/// error, or a changed high watermark / log start / last stable offset. Epoch -1 closes a
/// session; session id 0 with epoch -1 is a plain sessionless fetch. When the cache is full the
/// broker answers with session id 0, which clients treat as "keep sending full requests".
final class FetchSessionCache: Sendable {
    /// A session's view of one partition: where to fetch and what the client last saw.
    struct PartitionState: Equatable {
        var topicID: KafkaUUID
        var fetchOffset: Int64
        var maxBytes: Int32
        var currentLeaderEpoch: Int32
        var lastHighWatermark: Int64 = -1
        var lastLogStartOffset: Int64 = -1
        var lastStableOffset: Int64 = -1
    }

    struct Key: Hashable, Comparable {
        var topic: String
        var partition: Int32
        static func < (a: Key, b: Key) -> Bool { a.topic != b.topic ? a.topic < b.topic : a.partition < b.partition }
    }

    struct Session {
        var id: Int32
        /// The epoch the next request must carry.
        var nextEpoch: Int32
        /// Partitions in the order the client first named them.
        var order: [Key]
        var partitions: [Key: PartitionState]
        var lastUsedMs: Int64
    }

    enum Lookup {
        /// No session: a full, sessionless fetch.
        case sessionless
        /// A new session was created for this full request.
        case created(Int32)
        /// An existing session, updated by this incremental request.
        case incremental(Int32)
        case error(KafkaError)
    }

    let maxSessions: Int
    let evictionMs: Int64
    private let state = Mutex<(sessions: [Int32: Session], rng: SystemRandomNumberGenerator)>(([:], SystemRandomNumberGenerator()))

    init(maxSessions: Int = 1000, evictionMs: Int64 = 120_000) {
        self.maxSessions = maxSessions
        self.evictionMs = evictionMs
    }

    /// Resolves a request to a session and returns the partitions to fetch, in order.
    func resolve(
        sessionID: Int32, epoch: Int32, requested: [(Key, PartitionState)], forgotten: [Key], nowMs: Int64
    ) -> (Lookup, [(Key, PartitionState)]) {
        state.withLock { s in
            // Evict idle sessions.
            s.sessions = s.sessions.filter { nowMs - $0.value.lastUsedMs < evictionMs }
            if epoch == -1 {
                if sessionID != 0 { s.sessions[sessionID] = nil }
                return (.sessionless, requested)
            }
            if epoch == 0 {
                if sessionID != 0 { s.sessions[sessionID] = nil }
                guard s.sessions.count < maxSessions else { return (.sessionless, requested) }
                var id: Int32 = 0
                while id == 0 || s.sessions[id] != nil { id = Int32.random(in: 1...Int32.max, using: &s.rng) }
                var session = Session(id: id, nextEpoch: 1, order: [], partitions: [:], lastUsedMs: nowMs)
                for (key, partition) in requested where session.partitions[key] == nil {
                    session.order.append(key)
                    session.partitions[key] = partition
                }
                s.sessions[id] = session
                return (.created(id), requested)
            }
            guard var session = s.sessions[sessionID] else { return (.error(.fetchSessionIdNotFound), []) }
            guard session.nextEpoch == epoch else { return (.error(.invalidFetchSessionEpoch), []) }
            for key in forgotten {
                session.partitions[key] = nil
                session.order.removeAll { $0 == key }
            }
            for (key, partition) in requested {
                if var existing = session.partitions[key] {
                    existing.fetchOffset = partition.fetchOffset
                    existing.maxBytes = partition.maxBytes
                    existing.currentLeaderEpoch = partition.currentLeaderEpoch
                    existing.topicID = partition.topicID
                    session.partitions[key] = existing
                } else {
                    session.order.append(key)
                    session.partitions[key] = partition
                }
            }
            session.nextEpoch = epoch == Int32.max ? 1 : epoch + 1
            session.lastUsedMs = nowMs
            s.sessions[sessionID] = session
            return (.incremental(sessionID), session.order.compactMap { key in session.partitions[key].map { (key, $0) } })
        }
    }

    /// Records what the response told the client; returns whether an incremental response must
    /// include the partition (records, an error, or changed offsets).
    func noteResponse(sessionID: Int32, key: Key, highWatermark: Int64, logStartOffset: Int64, lastStableOffset: Int64,
                      hasRecords: Bool, hasError: Bool) -> Bool {
        state.withLock { s in
            guard var session = s.sessions[sessionID], var partition = session.partitions[key] else { return true }
            let changed = partition.lastHighWatermark != highWatermark || partition.lastLogStartOffset != logStartOffset
                || partition.lastStableOffset != lastStableOffset
            partition.lastHighWatermark = highWatermark
            partition.lastLogStartOffset = logStartOffset
            partition.lastStableOffset = lastStableOffset
            session.partitions[key] = partition
            s.sessions[sessionID] = session
            return hasRecords || hasError || changed
        }
    }

    var count: Int { state.withLock { $0.sessions.count } }
}
