// fjord-projection-crash-runner BOOTSTRAP TOPIC DB: runs a ProjectionRunner that folds the events
// of TOPIC (value: an amount in cents) into balances per stream in the SQLite file DB, printing
// "lag L applied N" every 20 ms, until it is killed. The projection crash test
// (Tests/FjordEventSourcingTests/ProjectionCrashTests.swift) kills it with SIGKILL at random
// points, restarts it, and compares the result with a from-scratch replay by another run.
import FjordEventSourcing
import FjordProjections
import Foundation
import GRDB
import NIOCore

struct LedgerProjection: Projection {
    let name = "ledger"
    let topic: String

    func setUp(_ db: Database) throws {
        try db.execute(sql: """
            CREATE TABLE IF NOT EXISTS balances (
                account TEXT PRIMARY KEY, cents INTEGER NOT NULL, events INTEGER NOT NULL, last_revision INTEGER NOT NULL)
            """)
    }

    func apply(_ event: RecordedEvent, in db: Database) throws {
        let cents = Int(String(buffer: event.data)) ?? 0
        try db.cachedStatement(sql: """
            INSERT INTO balances (account, cents, events, last_revision) VALUES (?, ?, 1, ?)
            ON CONFLICT (account) DO UPDATE SET cents = cents + excluded.cents, events = events + 1,
                last_revision = excluded.last_revision
            """).execute(arguments: [event.stream, cents, event.revision])
    }
}

let arguments = CommandLine.arguments
guard arguments.count == 4 else {
    FileHandle.standardError.write(Data("usage: fjord-projection-crash-runner BOOTSTRAP TOPIC DB\n".utf8))
    exit(2)
}
do {
    let runner = try ProjectionRunner(projection: LedgerProjection(topic: arguments[2]), bootstrap: arguments[1], path: arguments[3])
    try await runner.start()
    while true {
        let status = try await runner.status()
        // Unbuffered: the test reads each line as it is written.
        FileHandle.standardOutput.write(Data("lag \(status.lag) applied \(status.eventsApplied)\n".utf8))
        try await Task.sleep(for: .milliseconds(20))
    }
} catch {
    FileHandle.standardError.write(Data("fjord-projection-crash-runner: \(error)\n".utf8))
    exit(1)
}
