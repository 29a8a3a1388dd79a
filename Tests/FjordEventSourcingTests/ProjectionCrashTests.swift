import FjordEventSourcing
import FjordTesting
import Foundation
import GRDB
import NIOCore
import Testing

/// A `fjord-projection-crash-runner` child: its "lag L applied N" lines, read as they come.
final class ProjectionRunnerProcess {
    let child: ChildProcess
    private var lines: AsyncStream<String>.Iterator

    init(bootstrap: String, topic: String, database: String) throws {
        child = try ChildProcess(BrokerProcess.productsDirectory.appendingPathComponent("fjord-projection-crash-runner").path,
                                 [bootstrap, topic, database], output: .lines)
        lines = child.lines.makeAsyncIterator()
    }

    /// Reads lines until one reports a lag ≤ `lag` and returns it; nil if the child exited or
    /// `seconds` passed (then the child is killed, which ends its output).
    func waitForLag(atMost lag: Int64, seconds: Int = 120) async -> Int64? {
        let child = self.child
        let watchdog = Task {
            try await Task.sleep(for: .seconds(seconds))
            child.signal(SIGKILL)
        }
        defer { watchdog.cancel() }
        while let line = await lines.next() {  // the child writes every 20 ms
            let fields = line.split(separator: " ")
            if fields.count == 4, fields[0] == "lag", let reported = Int64(fields[1]), reported <= lag { return reported }
        }
        return nil
    }

    func kill() async {
        await child.stop(with: SIGKILL)
    }
}

@Suite("Projection crash safety")
struct ProjectionCrashTests {
    typealias Balance = [String: [Int64]]  // account → [cents, events, last revision]

    func balances(_ path: String) throws -> Balance {
        let queue = try DatabaseQueue(path: path)
        return try queue.read { db in
            var out: Balance = [:]
            for row in try Row.fetchAll(db, sql: "SELECT account, cents, events, last_revision FROM balances") {
                out[row["account"]] = [row["cents"], row["events"], row["last_revision"]]
            }
            return out
        }
    }

    /// 100,000 events over 50 accounts; the projection runner, a separate process, is SIGKILLed at
    /// five random points of its replay (a random moment after its lag passed a random mark) and
    /// started again each time. Its read model must equal a from-scratch replay: the checkpoint
    /// commits with the model, so no event is applied twice and none is skipped.
    @Test("100,000 events, the runner SIGKILLed at 5 random points: the read model equals a from-scratch replay",
          .timeLimit(.minutes(5)))
    func sigkillDuringReplay() async throws {
        let executable = BrokerProcess.productsDirectory.appendingPathComponent("fjord-projection-crash-runner")
        try #require(FileManager.default.isExecutableFile(atPath: executable.path), "build fjord-projection-crash-runner first (swift build)")
        try await BrokerProcess.with { broker in try await sigkillDuringReplay(broker) }
    }

    func sigkillDuringReplay(_ broker: BrokerProcess) async throws {
        let store = try await EventStore.connect(bootstrap: broker.bootstrap, topic: "ledger", partitions: 3)
        let total = 100_000
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

        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fjord-projection-crash-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let crashed = directory.appendingPathComponent("crashed.sqlite").path
        let marks = (0..<5).map { _ in Int64.random(in: 10_000...95_000) }.sorted(by: >)
        var midReplayKills = 0
        for mark in marks {
            let child = try ProjectionRunnerProcess(bootstrap: broker.bootstrap, topic: "ledger", database: crashed)
            let lag = await child.waitForLag(atMost: mark)
            #expect(lag != nil, "the runner reported its lag")
            // Killed as soon as it reports being within `mark` of the end: wherever it is in its batch.
            await child.kill()
            let applied = (try? balances(crashed))?.values.reduce(0) { $0 + $1[1] } ?? 0
            if applied < Int64(total) { midReplayKills += 1 }
        }
        // A runner may finish before its kill lands when the test's task waits for a busy
        // thread pool; the kills must still have hit replays in progress.
        #expect(midReplayKills >= 2, "\(midReplayKills) of 5 kills landed mid-replay")
        let resumed = try ProjectionRunnerProcess(bootstrap: broker.bootstrap, topic: "ledger", database: crashed)
        #expect(await resumed.waitForLag(atMost: 0) == 0, "the restarted runner catches up")
        await resumed.kill()

        let scratch = directory.appendingPathComponent("scratch.sqlite").path
        let replay = try ProjectionRunnerProcess(bootstrap: broker.bootstrap, topic: "ledger", database: scratch)
        #expect(await replay.waitForLag(atMost: 0) == 0, "the from-scratch replay catches up")
        await replay.kill()

        let model = try balances(crashed)
        #expect(model == (try balances(scratch)), "the crashed-and-resumed model equals a from-scratch replay")
        #expect(model.values.reduce(0) { $0 + $1[1] } == Int64(total), "no event applied twice, none skipped")
        #expect(model.count == accounts && model["acct-7"]?[2] == Int64(total / accounts - 1))
        var expectedCents: Int64 = 0
        for index in 0..<total { expectedCents += Int64(index % 7 + 1) }
        #expect(model.values.reduce(0) { $0 + $1[0] } == expectedCents)
    }
}
