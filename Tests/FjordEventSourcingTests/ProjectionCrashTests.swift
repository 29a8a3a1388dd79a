import FjordEventSourcing
import FjordTesting
import Foundation
import GRDB
import NIOCore
import Testing

/// A `fjord-projection-crash-runner` child, SIGKILLed by its output reader the moment it
/// reports a lag of at most `killAtLag` (its "lag L applied N" lines come every 20 ms), so the
/// kill lands mid-replay however late the test's own task gets to run.
final class ProjectionRunnerProcess {
    let child: ChildProcess
    let mark: Int64

    init(bootstrap: String, topic: String, database: String, killAtLag mark: Int64) throws {
        self.mark = mark
        child = try ChildProcess(BrokerProcess.productsDirectory.appendingPathComponent("fjord-projection-crash-runner").path,
                                 [bootstrap, topic, database], output: .lines,
                                 signalWhen: (SIGKILL, { line in (Self.lag(line) ?? .max) <= mark }))
    }

    static func lag(_ line: String) -> Int64? {
        let fields = line.split(separator: " ")
        guard fields.count == 4, fields[0] == "lag" else { return nil }
        return Int64(fields[1])
    }

    /// Waits until the child is gone (killed at the mark, or by a watchdog after `seconds`);
    /// returns the lag it reported when it reached the mark, nil if it never did.
    func waitForKill(seconds: Int = 120) async -> Int64? {
        let child = self.child
        let watchdog = Task {
            try await Task.sleep(for: .seconds(seconds))
            child.signal(SIGKILL)
        }
        defer { watchdog.cancel() }
        var reached: Int64? = nil
        for await line in child.lines {
            if reached == nil, let lag = Self.lag(line), lag <= mark { reached = lag }
        }
        await child.waitForExit()
        return reached
    }
}

@Suite("Projection crash safety")
struct ProjectionCrashTests {
    typealias Balance = [String: [Int64]]  // account → [cents, events, last revision]

    /// Where the runner keeps its read model: SQLite files, or databases of a real PostgreSQL.
    enum Store {
        case sqlite(directory: URL)
        case postgres(PostgresServer)

        /// The runner's DB argument for the model called `name`.
        func location(_ name: String) -> String {
            switch self {
            case .sqlite(let directory): return directory.appendingPathComponent("\(name).sqlite").path
            case .postgres(let server): return server.url(database: name)
            }
        }

        func prepare(_ name: String) async throws {
            if case .postgres(let server) = self { try await server.sql("CREATE DATABASE \(name)") }
        }

        func balances(_ name: String) async throws -> Balance {
            switch self {
            case .sqlite:
                let queue = try DatabaseQueue(path: location(name))
                return try await queue.read { db in
                    var out: Balance = [:]
                    for row in try Row.fetchAll(db, sql: "SELECT account, cents, events, last_revision FROM balances") {
                        out[row["account"]] = [row["cents"], row["events"], row["last_revision"]]
                    }
                    return out
                }
            case .postgres(let server):
                var out: Balance = [:]
                let text = try await server.sql("SELECT account, cents, events, last_revision FROM balances", database: name)
                for line in text.split(separator: "\n") {
                    let fields = line.split(separator: "|")
                    guard fields.count == 4 else { continue }
                    out[String(fields[0])] = fields.dropFirst().map { Int64($0) ?? -1 }
                }
                return out
            }
        }
    }

    /// 100,000 events over 50 accounts; the projection runner, a separate process, is SIGKILLed at
    /// five random points of its replay (as soon as its lag passed a random mark) and started
    /// again each time. Its read model must equal a from-scratch replay: the checkpoint commits
    /// with the model, so no event is applied twice and none is skipped.
    @Test("100,000 events, the runner SIGKILLed at 5 random points: the read model equals a from-scratch replay",
          .timeLimit(.minutes(5)))
    func sigkillDuringReplay() async throws {
        let executable = BrokerProcess.productsDirectory.appendingPathComponent("fjord-projection-crash-runner")
        try #require(FileManager.default.isExecutableFile(atPath: executable.path), "build fjord-projection-crash-runner first (swift build)")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fjord-projection-crash-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try await BrokerProcess.with { broker in try await sigkillDuringReplay(broker, store: .sqlite(directory: directory), total: 100_000) }
    }

    /// The same with the read model in PostgreSQL (PostgresProjectionRunner): 20,000 events,
    /// since every event is a round trip to the server.
    @Test("the same with a PostgreSQL read model: 20,000 events, 5 SIGKILLs, equal to a from-scratch replay",
          .enabled(if: PostgresServer.available), .timeLimit(.minutes(5)))
    func sigkillDuringReplayIntoPostgres() async throws {
        let server = try await PostgresServer.start()
        do {
            try await BrokerProcess.with { broker in try await sigkillDuringReplay(broker, store: .postgres(server), total: 20_000) }
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    func sigkillDuringReplay(_ broker: BrokerProcess, store model: Store, total: Int) async throws {
        let store = try await EventStore.connect(bootstrap: broker.bootstrap, topic: "ledger", partitions: 3)
        let accounts = 50
        try await withThrowingTaskGroup(of: Void.self) { group in
            for account in 0..<accounts {
                group.addTask {
                    let amounts = stride(from: account, to: total, by: accounts).map { $0 % 7 + 1 }
                    for chunk in stride(from: 0, to: amounts.count, by: 250) {
                        let events = amounts[chunk..<min(chunk + 250, amounts.count)].map {
                            EventData(type: "Deposited", data: ByteBuffer(string: "\($0)"))
                        }
                        try await store.append(to: "acct-\(account)", events,
                                               expectedVersion: chunk == 0 ? .noStream : .exact(Int64(chunk - 1)))
                    }
                }
            }
            try await group.waitForAll()
        }
        await store.close()

        try await model.prepare("crashed")
        let marks = (0..<5).map { _ in Int64.random(in: Int64(total / 10)...Int64(total * 95 / 100)) }.sorted(by: >)
        var midReplayKills = 0
        for mark in marks {
            // Killed as soon as it reports being within `mark` of the end: wherever it is in its batch.
            let child = try ProjectionRunnerProcess(bootstrap: broker.bootstrap, topic: "ledger", database: model.location("crashed"),
                                                    killAtLag: mark)
            #expect(await child.waitForKill() != nil, "the runner reported its lag")
            let applied = (try? await model.balances("crashed"))?.values.reduce(0) { $0 + $1[1] } ?? 0
            if applied < Int64(total) { midReplayKills += 1 }
        }
        #expect(midReplayKills == 5, "\(midReplayKills) of 5 kills landed mid-replay")
        let resumed = try ProjectionRunnerProcess(bootstrap: broker.bootstrap, topic: "ledger", database: model.location("crashed"), killAtLag: 0)
        #expect(await resumed.waitForKill() == 0, "the restarted runner catches up")

        try await model.prepare("scratch")
        let replay = try ProjectionRunnerProcess(bootstrap: broker.bootstrap, topic: "ledger", database: model.location("scratch"), killAtLag: 0)
        #expect(await replay.waitForKill() == 0, "the from-scratch replay catches up")

        let balances = try await model.balances("crashed")
        #expect(balances == (try await model.balances("scratch")), "the crashed-and-resumed model equals a from-scratch replay")
        #expect(balances.values.reduce(0) { $0 + $1[1] } == Int64(total), "no event applied twice, none skipped")
        #expect(balances.count == accounts && balances["acct-7"]?[2] == Int64(total / accounts - 1))
        var expectedCents: Int64 = 0
        for index in 0..<total { expectedCents += Int64(index % 7 + 1) }
        #expect(balances.values.reduce(0) { $0 + $1[0] } == expectedCents)
    }
}
