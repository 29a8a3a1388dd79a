#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
public import Foundation

/// A real PostgreSQL (Debian's, installed by tools/test) for one test: `initdb` into a temporary
/// directory, started on a free loopback port with `wal_level=logical`, stopped
/// (`pg_ctl stop -m immediate`) and removed by `stop()`. The superuser `postgres` (password
/// `postgres`) logs in over TCP with scram-sha-256, extra users with md5 or cleartext by name
/// (`md5user`, `plainuser`); the harness itself uses the Unix socket (trust). As root the server
/// runs as Debian's `postgres` user (initdb refuses root). Every program runs through
/// `ChildProcess`, so waiting for one never blocks the cooperative pool.
public final class PostgresServer: Sendable {
    public let directory: URL
    public let port: Int
    private let bin: String
    private let asPostgres: Bool

    public static var available: Bool { findBin() != nil }

    static func findBin() -> String? {
        for version in ["17", "16", "15"] {
            let path = "/usr/lib/postgresql/\(version)/bin"
            if FileManager.default.isExecutableFile(atPath: path + "/initdb") { return path }
        }
        return nil
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    private init(bin: String) throws {
        self.bin = bin
        asPostgres = getuid() == 0
        directory = URL(fileURLWithPath: "/tmp/fjord-pg-\(UUID().uuidString)")
        port = try BrokerProcess.freePort()
    }

    /// Creates and starts a server; `walLevel` is `logical` unless a test needs otherwise.
    public static func start(walLevel: String = "logical") async throws -> PostgresServer {
        guard let bin = findBin() else { throw Failure("PostgreSQL is not installed (tools/test installs postgresql)") }
        let server = try PostgresServer(bin: bin)
        do {
            try await server.initialize(walLevel: walLevel)
        } catch {
            await server.stop()
            throw error
        }
        return server
    }

    private func initialize(walLevel: String) async throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let passwordFile = directory.appendingPathComponent("pw").path
        try "postgres\n".write(toFile: passwordFile, atomically: true, encoding: .utf8)
        if asPostgres { try await run("/bin/chown", ["-R", "postgres:postgres", directory.path]) }
        let data = directory.appendingPathComponent("data").path
        try await runAsServer("\(bin)/initdb", ["-D", data, "-U", "postgres", "--pwfile=\(passwordFile)", "--auth-local=trust",
                                                "--auth-host=scram-sha-256", "-E", "UTF8"])
        try append("""
            listen_addresses = '127.0.0.1'
            port = \(port)
            unix_socket_directories = '\(directory.path)'
            wal_level = \(walLevel)
            max_replication_slots = 16
            max_wal_senders = 16
            fsync = off
            """, to: data + "/postgresql.conf")
        // Replication connections by method: scram for most, md5 and cleartext for their own users.
        try """
            local all all trust
            host all md5user 127.0.0.1/32 md5
            host replication md5user 127.0.0.1/32 md5
            host all plainuser 127.0.0.1/32 password
            host replication plainuser 127.0.0.1/32 password
            host all all 127.0.0.1/32 scram-sha-256
            host replication all 127.0.0.1/32 scram-sha-256

            """.write(toFile: data + "/pg_hba.conf", atomically: true, encoding: .utf8)
        if asPostgres { try await run("/bin/chown", ["-R", "postgres:postgres", data]) }
        // The server inherits pg_ctl's output: a log file, never a pipe this harness would wait on.
        try await runAsServer("\(bin)/pg_ctl", ["-D", data, "-l", directory.appendingPathComponent("log").path, "-w", "-t", "60", "start"],
                              capture: false)
    }

    /// `postgresql://USER:PASSWORD@127.0.0.1:PORT/DATABASE?sslmode=disable`.
    public func url(database: String, user: String = "postgres", password: String = "postgres") -> String {
        "postgresql://\(user):\(password)@127.0.0.1:\(port)/\(database)?sslmode=disable"
    }

    /// Runs SQL as the superuser over the Unix socket; returns psql's unaligned, tuples-only output.
    @discardableResult
    public func sql(_ statement: String, database: String = "postgres") async throws -> String {
        try await runAsServer("\(bin)/psql", ["-h", directory.path, "-p", String(port), "-U", "postgres", "-d", database,
                                              "-v", "ON_ERROR_STOP=1", "-At", "-c", statement])
    }

    public func stop() async {
        let data = directory.appendingPathComponent("data").path
        if FileManager.default.fileExists(atPath: data + "/postmaster.pid") {
            _ = try? await runAsServer("\(bin)/pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"])
        }
        try? FileManager.default.removeItem(at: directory)
    }

    @discardableResult
    private func runAsServer(_ program: String, _ arguments: [String], capture: Bool = true) async throws -> String {
        // From `/`: PostgreSQL's programs warn on stderr (which `sql` returns with the output)
        // when the postgres user cannot enter the current directory, as in a 0700 mktemp clone.
        asPostgres ? try await run("/usr/sbin/runuser", ["-u", "postgres", "--", "/usr/bin/env", "-C", "/", program] + arguments, capture: capture)
            : try await run(program, arguments, capture: capture)
    }

    private func append(_ text: String, to path: String) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(("\n" + text + "\n").utf8))
        try handle.close()
    }

    @discardableResult
    private func run(_ program: String, _ arguments: [String], capture: Bool = true) async throws -> String {
        let status: Int32
        let output: String
        if capture {
            (status, output) = try await ChildProcess.run(program, arguments, includingErrors: true)
        } else {
            status = await (try ChildProcess(program, arguments, output: .discard)).waitForExit()
            output = ""
        }
        guard status == 0 else { throw Failure("\(program) \(arguments.joined(separator: " ")) failed (status \(status)): \(output)") }
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
