import FjordEtcd
import Foundation
import Logging
import Testing

/// The etcd client against a real etcd 3.4: KV and transactions, leases kept alive (and lost),
/// watches on one stream resumed after etcd restarts, and the error a caller sees while etcd is down.
@Suite("EtcdClient against a real etcd", .serialized)
struct EtcdClientTests {
    let logger = Logger(label: "etcd-test")

    func withEtcd(_ body: (EtcdServer, EtcdClient) async throws -> Void) async throws {
        let server = try EtcdServer()
        try await server.start()
        // Generous deadlines: the whole suite runs in parallel on two loaded cores, and etcd
        // fsyncs every write.
        let client = try EtcdClient(host: "127.0.0.1", port: server.clientPort, callTimeout: .seconds(15))
        // The port opens before etcd has elected itself leader: wait until it answers a read.
        try await waitUntilServing(client)
        do {
            try await body(server, client)
        } catch {
            await client.close()
            await server.remove()
            throw error
        }
        await client.close()
        await server.remove()
    }

    func waitUntilServing(_ client: EtcdClient) async throws {
        for _ in 0..<300 {
            if (try? await client.get(prefix: "/probe")) != nil { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("etcd did not answer within 30 s")
    }

    @Test("put, get, prefix reads in key order, delete; a transaction runs one branch at one revision")
    func kvAndTransactions() async throws {
        try await withEtcd { _, etcd in
            let first = try await etcd.put("/t/b", Array("2".utf8))
            try await etcd.put("/t/a", Array("1".utf8))
            try await etcd.put("/u/x", Array("other".utf8))
            let a = try #require(try await etcd.get("/t/a"))
            #expect(a.value == Array("1".utf8) && a.version == 1)
            let (kvs, revision) = try await etcd.get(prefix: "/t/")
            #expect(kvs.map(\.key) == ["/t/a", "/t/b"])
            #expect(revision > first)

            // Create-if-absent: the first succeeds, the second runs the failure branch and reads.
            let created = try await etcd.txn(if: [.absent("/t/lock")], then: [.put(key: "/t/lock", value: [1])])
            #expect(created.succeeded)
            let again = try await etcd.txn(if: [.absent("/t/lock")], then: [.put(key: "/t/lock", value: [2])], else: [.get(key: "/t/lock")])
            #expect(!again.succeeded)
            #expect(again.reads.first?.first?.value == [1])
            #expect(again.reads.first?.first?.createRevision == created.revision)
            // Compare-and-swap on the mod revision.
            let stale = try await etcd.txn(if: [.unchanged("/t/a", since: a.modRevision - 1)], then: [.put(key: "/t/a", value: [9])])
            #expect(!stale.succeeded)
            let swapped = try await etcd.txn(if: [.unchanged("/t/a", since: a.modRevision)], then: [.put(key: "/t/a", value: [9])])
            #expect(swapped.succeeded)

            #expect(try await etcd.delete("/t/b") == 1)
            #expect(try await etcd.get("/t/b") == nil)
            _ = try await etcd.txn(if: [], then: [.deletePrefix("/t/")])
            #expect(try await etcd.get(prefix: "/t/").kvs.isEmpty)
            #expect(try await etcd.get("/u/x") != nil)
        }
    }

    @Test("a kept-alive lease outlives its TTL; a revoked one takes its keys and is reported lost")
    func leases() async throws {
        try await withEtcd { _, etcd in
            let keeper = EtcdLeaseKeeper(client: etcd, logger: logger)
            defer { keeper.close() }
            // A 15 s TTL: the suite runs this beside every other suite on two cores, and the
            // keeper's timer and stream run on the same saturated cooperative pool; keepalives
            // were seen starved past 4 s and 8 s TTLs (etcd then expires the lease, rightly).
            let kept = try await etcd.grantLease(ttlSeconds: 15)
            let dropped = try await etcd.grantLease(ttlSeconds: 15)
            try await etcd.put("/l/kept", [1], lease: kept)
            try await etcd.put("/l/dropped", [1], lease: dropped)
            let (lostStream, lost) = AsyncStream.makeStream(of: Int64.self)
            keeper.keepAlive(kept, ttlSeconds: 15) { lost.yield($0) }
            // Both leases' TTL passes: only the kept one's key is left.
            try await Task.sleep(for: .seconds(18))
            #expect(try await etcd.get("/l/kept") != nil)
            #expect(try await etcd.get("/l/dropped") == nil)
            // Revoked behind the keeper's back: the next keepalive answer says so.
            try await etcd.revokeLease(kept)
            #expect(try await etcd.get("/l/kept") == nil)
            var iterator = lostStream.makeAsyncIterator()
            #expect(await iterator.next() == kept)
            keeper.close()
            await #expect(throws: EtcdError.self) { try await etcd.put("/l/again", [1], lease: kept) }
        }
    }

    @Test("many watches on one stream see every change once, in order, across an etcd restart")
    func watchesResumeAfterRestart() async throws {
        try await withEtcd { server, etcd in
            let watcher = EtcdWatcher(client: etcd, logger: logger)
            defer { watcher.close() }
            let start = try await etcd.put("/w/a/0", [0])
            let a = watcher.watch(prefix: "/w/a/", fromRevision: start)  // includes the put above
            let b = watcher.watch(prefix: "/w/b/", fromRevision: start + 1)
            for i in 1...3 { try await etcd.put("/w/a/\(i)", [UInt8(i)]) }
            try await etcd.put("/w/b/x", [7])
            try await etcd.delete("/w/a/0")

            await server.stop()
            try await server.start()
            try await waitUntilServing(etcd)
            // Calls fail until the connection is back (within the transport's 1 s backoff cap).
            var written = false
            for _ in 0..<100 where !written {
                do {
                    try await etcd.put("/w/a/after", [4])
                    written = true
                } catch let error as EtcdError where error.isRetriable {
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            #expect(written)

            var seenA: [String] = []
            var kindsA: [EtcdWatchEvent.Kind] = []
            for await update in a {
                guard case .events(let events, _) = update else { Issue.record("unexpected \(update)"); break }
                seenA += events.map(\.kv.key)
                kindsA += events.map(\.kind)
                if seenA.count >= 6 { break }
            }
            #expect(seenA == ["/w/a/0", "/w/a/1", "/w/a/2", "/w/a/3", "/w/a/0", "/w/a/after"])
            #expect(kindsA == [.put, .put, .put, .put, .delete, .put])
            for await update in b {
                guard case .events(let events, _) = update else { continue }
                #expect(events.map(\.kv.key) == ["/w/b/x"])
                break
            }
            watcher.close()
        }
    }

    @Test("while etcd is down a call fails fast with .unavailable, and succeeds once it is back")
    func unavailable() async throws {
        try await withEtcd { server, etcd in
            try await etcd.put("/d/k", [1])
            await server.stop()
            let started = ContinuousClock.now
            do {
                _ = try await etcd.get("/d/k")
                Issue.record("a read succeeded with etcd stopped")
            } catch let error as EtcdError {
                #expect(error.isRetriable, "\(error)")
            }
            #expect(ContinuousClock.now - started < .seconds(10))
            try await server.start()
            var value: EtcdKeyValue? = nil
            for _ in 0..<100 where value == nil {
                value = try? await etcd.get("/d/k")
                if value == nil { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(value?.value == [1])
        }
    }
}
