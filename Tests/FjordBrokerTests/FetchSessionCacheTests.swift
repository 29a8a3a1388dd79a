@testable import FjordBroker
import FjordProtocol
import Testing

@Suite("Fetch sessions (KIP-227)")
struct FetchSessionCacheTests {
    typealias Key = FetchSessionCache.Key
    typealias State = FetchSessionCache.PartitionState

    func state(_ offset: Int64) -> State {
        State(topicID: .zero, fetchOffset: offset, maxBytes: 1 << 20, currentLeaderEpoch: -1)
    }

    @Test("a full request creates a session; incremental requests update it and send only changes")
    func lifecycle() {
        let cache = FetchSessionCache()
        let a = Key(topic: "t", partition: 0)
        let b = Key(topic: "t", partition: 1)
        let (created, first) = cache.resolve(sessionID: 0, epoch: 0, requested: [(a, state(0)), (b, state(0))], forgotten: [], nowMs: 0)
        guard case .created(let id) = created else {
            Issue.record("expected a new session, got \(created)")
            return
        }
        #expect(first.count == 2)
        // The first response sets the baseline; every partition is included.
        #expect(cache.noteResponse(sessionID: id, key: a, highWatermark: 10, logStartOffset: 0, lastStableOffset: 10, hasRecords: true, hasError: false))
        #expect(cache.noteResponse(sessionID: id, key: b, highWatermark: 0, logStartOffset: 0, lastStableOffset: 0, hasRecords: false, hasError: false))
        // Incremental epoch 1: the client moved a's position; b is remembered at 0.
        let (next, partitions) = cache.resolve(sessionID: id, epoch: 1, requested: [(a, state(10))], forgotten: [], nowMs: 1)
        guard case .incremental = next else {
            Issue.record("expected incremental, got \(next)")
            return
        }
        #expect(partitions.map(\.0) == [a, b])
        #expect(partitions.first?.1.fetchOffset == 10)
        // b unchanged and empty: left out of an incremental response.
        #expect(!cache.noteResponse(sessionID: id, key: b, highWatermark: 0, logStartOffset: 0, lastStableOffset: 0, hasRecords: false, hasError: false))
        #expect(cache.noteResponse(sessionID: id, key: b, highWatermark: 5, logStartOffset: 0, lastStableOffset: 5, hasRecords: false, hasError: false))
        // Wrong epoch and unknown session are errors; forgotten partitions leave the session.
        guard case .error(.invalidFetchSessionEpoch) = cache.resolve(sessionID: id, epoch: 5, requested: [], forgotten: [], nowMs: 2).0 else {
            Issue.record("expected INVALID_FETCH_SESSION_EPOCH")
            return
        }
        guard case .error(.fetchSessionIdNotFound) = cache.resolve(sessionID: id &+ 1, epoch: 1, requested: [], forgotten: [], nowMs: 2).0 else {
            Issue.record("expected FETCH_SESSION_ID_NOT_FOUND")
            return
        }
        let (_, remaining) = cache.resolve(sessionID: id, epoch: 2, requested: [], forgotten: [a], nowMs: 3)
        #expect(remaining.map(\.0) == [b])
        // Epoch -1 closes it.
        _ = cache.resolve(sessionID: id, epoch: -1, requested: [], forgotten: [], nowMs: 4)
        #expect(cache.count == 0)
    }

    @Test("a full cache answers sessionless, and idle sessions are evicted")
    func limits() {
        let cache = FetchSessionCache(maxSessions: 1, evictionMs: 100)
        guard case .created = cache.resolve(sessionID: 0, epoch: 0, requested: [], forgotten: [], nowMs: 0).0 else {
            Issue.record("expected a session")
            return
        }
        guard case .sessionless = cache.resolve(sessionID: 0, epoch: 0, requested: [], forgotten: [], nowMs: 50).0 else {
            Issue.record("expected sessionless when full")
            return
        }
        guard case .created = cache.resolve(sessionID: 0, epoch: 0, requested: [], forgotten: [], nowMs: 500).0 else {
            Issue.record("expected the idle session to be evicted")
            return
        }
    }
}
