// fjord-projection-crash-runner BOOTSTRAP TOPIC DB: runs a ProjectionRunner that folds the events
// of TOPIC (value: an amount in cents) into balances per stream in the SQLite file DB (or, when
// DB is a postgresql:// URL, a PostgresProjectionRunner into that database), printing
// "lag L applied N" every 20 ms, until it is killed. The projection crash test
// (Tests/FjordEventSourcingTests/ProjectionCrashTests.swift) kills it with SIGKILL at random
// points, restarts it, and compares the result with a from-scratch replay by another run.
import FjordEventSourcing
import FjordProjections
import Foundation
import GRDB
import Logging
import NIOCore
import PostgresNIO

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

/// The same ledger in PostgreSQL.
struct PostgresLedgerProjection: PostgresProjection {
    let name = "ledger"
    let topic: String

    func setUp(_ connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query("""
            CREATE TABLE IF NOT EXISTS balances (
                account text PRIMARY KEY, cents bigint NOT NULL, events bigint NOT NULL, last_revision bigint NOT NULL)
            """, logger: logger)
    }

    func apply(_ event: RecordedEvent, on connection: PostgresConnection, logger: Logger) async throws {
        let cents = Int64(String(buffer: event.data)) ?? 0
        try await connection.query("""
            INSERT INTO balances (account, cents, events, last_revision) VALUES (\(event.stream), \(cents), 1, \(event.revision))
            ON CONFLICT (account) DO UPDATE SET cents = balances.cents + excluded.cents, events = balances.events + 1,
                last_revision = excluded.last_revision
            """, logger: logger)
    }
}

/// `postgresql://USER:PASSWORD@HOST:PORT/DATABASE` as postgres-nio's configuration.
func postgresConfiguration(_ url: String) -> PostgresConnection.Configuration? {
    guard let components = URLComponents(string: url), components.scheme == "postgresql", let host = components.host,
        let user = components.user else { return nil }
    return PostgresConnection.Configuration(host: host, port: components.port ?? 5432, username: user, password: components.password,
                                            database: String(components.path.dropFirst()), tls: .disable)
}

let arguments = CommandLine.arguments
guard arguments.count == 4 else {
    FileHandle.standardError.write(Data("usage: fjord-projection-crash-runner BOOTSTRAP TOPIC DB\n".utf8))
    exit(2)
}
do {
    let status: () async throws -> ProjectionRunner.Status
    if arguments[3].hasPrefix("postgresql://") {
        guard let configuration = postgresConfiguration(arguments[3]) else { throw CocoaError(.fileReadInvalidFileName) }
        let runner = PostgresProjectionRunner(projection: PostgresLedgerProjection(topic: arguments[2]), bootstrap: arguments[1],
                                              postgres: configuration)
        try await runner.start()
        status = { try await runner.status() }
    } else {
        let runner = try ProjectionRunner(projection: LedgerProjection(topic: arguments[2]), bootstrap: arguments[1], path: arguments[3])
        try await runner.start()
        status = { try await runner.status() }
    }
    while true {
        let current = try await status()
        // Unbuffered: the test reads each line as it is written.
        FileHandle.standardOutput.write(Data("lag \(current.lag) applied \(current.eventsApplied)\n".utf8))
        try await Task.sleep(for: .milliseconds(20))
    }
} catch {
    FileHandle.standardError.write(Data("fjord-projection-crash-runner: \(error)\n".utf8))
    exit(1)
}
