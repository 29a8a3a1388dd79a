import FjordEventSourcing
import FjordProjections
import FjordTesting
import Foundation
import GRDB
import NIOCore
import Testing

/// Balances per account: each event's value is the amount in cents.
struct BalanceProjection: Projection {
    let name = "balances"
    let topic: String

    func setUp(_ db: Database) throws {
        try db.execute(sql: "CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY, cents INTEGER NOT NULL, events INTEGER NOT NULL, last_revision INTEGER NOT NULL)")
    }

    func apply(_ event: RecordedEvent, in db: Database) throws {
        let cents = Int(String(buffer: event.data)) ?? 0
        try db.execute(sql: """
            INSERT INTO balances (account, cents, events, last_revision) VALUES (?, ?, 1, ?)
            ON CONFLICT (account) DO UPDATE SET cents = cents + excluded.cents, events = events + 1, last_revision = excluded.last_revision
            """, arguments: [event.stream, cents, event.revision])
    }
}

@Suite("Projections into SQLite")
struct ProjectionTests {
    /// Appends `count` events over 20 accounts (amount = index % 7 + 1); returns the expected totals.
    func seed(_ store: EventStore, count: Int) async throws -> [String: Int] {
        var expected: [String: Int] = [:]
        var pending: [String: [EventData]] = [:]
        for i in 0..<count {
            let account = "acct-\(i % 20)"
            let cents = i % 7 + 1
            expected[account, default: 0] += cents
            pending[account, default: []].append(EventData(type: "Deposited", data: ByteBuffer(string: "\(cents)")))
        }
        for (account, events) in pending {
            for chunk in stride(from: 0, to: events.count, by: 200) {
                try await store.append(to: account, Array(events[chunk..<min(chunk + 200, events.count)]))
            }
        }
        return expected
    }

    func totals(_ runner: ProjectionRunner) async throws -> [String: Int] {
        try await runner.read { db in
            var out: [String: Int] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT account, cents FROM balances") { out[row["account"]] = row["cents"] }
            return out
        }
    }

    func waitForLagZero(_ runner: ProjectionRunner, seconds: Int = 60) async throws {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            if try await runner.status().lag == 0 { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("projection did not catch up within \(seconds) s")
    }

    @Test("catches up, follows live, and resumes exactly once after being stopped at random points", .timeLimit(.minutes(3)))
    func exactlyOnce() async throws {
        let broker = try await InProcessBroker.start()
        let store = try await EventStore.connect(bootstrap: broker.bootstrap, topic: "ledger", partitions: 3)
        var expected = try await seed(store, count: 20_000)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fjord-projection-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let path = directory.appendingPathComponent("ledger.sqlite").path
        // Stop the runner at five random points while it catches up, restart each time.
        for _ in 0..<5 {
            let runner = try ProjectionRunner(projection: BalanceProjection(topic: "ledger"), bootstrap: broker.bootstrap, path: path)
            try await runner.start()
            try await Task.sleep(for: .milliseconds(Int.random(in: 20...300)))
            await runner.stop()
        }
        let runner = try ProjectionRunner(projection: BalanceProjection(topic: "ledger"), bootstrap: broker.bootstrap, path: path)
        try await runner.start()
        try await waitForLagZero(runner)
        #expect(try await totals(runner) == expected, "no event applied twice, none skipped")
        let events = try await runner.read { db in try Int.fetchOne(db, sql: "SELECT SUM(events) FROM balances") ?? 0 }
        #expect(events == 20_000)
        let revision = try await runner.read { db in try Int64.fetchOne(db, sql: "SELECT last_revision FROM balances WHERE account = 'acct-3'") }
        #expect(revision == 999, "revisions counted per stream")

        // Live: new events arrive in the model.
        try await store.append(to: "acct-3", [EventData(type: "Deposited", data: ByteBuffer(string: "1000"))])
        expected["acct-3", default: 0] += 1000
        try await waitForLagZero(runner)
        try await Task.sleep(for: .milliseconds(100))
        #expect(try await totals(runner)["acct-3"] == expected["acct-3"])
        let status = try await runner.status()
        #expect(status.partitions.count == 3 && status.lag == 0 && status.eventsApplied > 0)

        // Rebuild while serving: every read sees a complete model (old, then new), never a partial one.
        let rebuild = Task { try await runner.rebuild() }
        var reads = 0
        while !rebuild.isCancelled {
            let seen = try await totals(runner)
            #expect(seen == expected, "a read during the rebuild saw a partial model")
            reads += 1
            if reads > 5, try await runner.status().rebuilding == false { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        try await rebuild.value
        #expect(try await totals(runner) == expected)
        await runner.stop()
        await store.close()
        try await broker.stop()
        try? FileManager.default.removeItem(at: directory)
    }
}
