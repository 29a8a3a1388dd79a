import Foundation

/// A real PostgreSQL 15 for one test: `initdb` into a temporary directory, started on a free
/// loopback port with `wal_level=logical`, stopped (`pg_ctl stop -m immediate`) and removed at the
/// end. As root, the server runs as Debian's `postgres` user (initdb refuses root).
final class PostgresServer: Sendable {
    let directory: URL
    let port: Int
    let bin: String
    private let asPostgres: Bool

    static var available: Bool { findBin() != nil }

    static func findBin() -> String? {
        for version in ["17", "16", "15"] {
            let path = "/usr/lib/postgresql/\(version)/bin"
            if FileManager.default.isExecutableFile(atPath: path + "/initdb") { return path }
        }
        return nil
    }

    init() throws {
        guard let bin = Self.findBin() else { throw Failure("PostgreSQL is not installed (tools/test installs postgresql)") }
        self.bin = bin
        asPostgres = getuid() == 0
        directory = URL(fileURLWithPath: "/tmp/fjord-pg-\(UUID().uuidString)")
        port = Self.freePort()
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        if asPostgres { try run("/bin/chown", ["postgres:postgres", directory.path]) }
        let data = directory.appendingPathComponent("data").path
        try runAsServer("\(bin)/initdb", ["-D", data, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8"])
        let conf = """
            listen_addresses = '127.0.0.1'
            port = \(port)
            unix_socket_directories = '\(directory.path)'
            wal_level = logical
            max_replication_slots = 8
            max_wal_senders = 8
            fsync = off
            """
        try appendAsServer(conf, to: data + "/postgresql.conf")
        // Replication connections by method: scram for most, md5 and cleartext for their own users.
        try writeAsServer("""
            local all all trust
            host all md5user 127.0.0.1/32 md5
            host replication md5user 127.0.0.1/32 md5
            host all plainuser 127.0.0.1/32 password
            host replication plainuser 127.0.0.1/32 password
            host all all 127.0.0.1/32 scram-sha-256
            host replication all 127.0.0.1/32 scram-sha-256
            """, to: data + "/pg_hba.conf")
        // The server inherits pg_ctl's output: no pipe there, or reading it would wait for the server's end.
        try runAsServer("\(bin)/pg_ctl", ["-D", data, "-l", directory.appendingPathComponent("log").path, "-w", "-t", "60", "start"],
                        capture: false)
    }

    /// Runs SQL as the superuser over the Unix socket; returns psql's unaligned, tuples-only output.
    @discardableResult
    func sql(_ statement: String, database: String = "postgres") throws -> String {
        try runAsServer("\(bin)/psql", ["-h", directory.path, "-p", String(port), "-U", "postgres", "-d", database,
                                        "-v", "ON_ERROR_STOP=1", "-At", "-c", statement])
    }

    func stop() {
        _ = try? runAsServer("\(bin)/pg_ctl", ["-D", directory.appendingPathComponent("data").path, "-m", "immediate", "-w", "stop"])
        try? FileManager.default.removeItem(at: directory)
    }

    @discardableResult
    private func runAsServer(_ program: String, _ arguments: [String], capture: Bool = true) throws -> String {
        asPostgres ? try run("/usr/sbin/runuser", ["-u", "postgres", "--", program] + arguments, capture: capture)
            : try run(program, arguments, capture: capture)
    }

    private func writeAsServer(_ text: String, to path: String) throws {
        try (text + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        if asPostgres { try run("/bin/chown", ["postgres:postgres", path]) }
    }

    private func appendAsServer(_ text: String, to path: String) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(("\n" + text + "\n").utf8))
        try handle.close()
    }

    /// Runs a program and waits for it with posix_spawn and waitpid. (Foundation's `Process`
    /// was seen to miss the exit of `runuser` whose grandchild, the server, lives on, and
    /// `waitUntilExit` then never returned.) Output goes to a file, read back when captured.
    @discardableResult
    private func run(_ program: String, _ arguments: [String], capture: Bool = true) throws -> String {
        let outputPath = capture ? directory.path + "/cmd-\(UUID().uuidString).out" : "/dev/null"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv: [UnsafeMutablePointer<CChar>?] = ([program] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, program, &actions, nil, argv, environ)
        guard spawned == 0 else { throw Failure("cannot run \(program): \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let text = capture ? ((try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "") : ""
        if capture { try? FileManager.default.removeItem(atPath: outputPath) }
        let exited = status & 0x7f == 0
        guard exited && (status >> 8) & 0xff == 0 else {
            throw Failure("\(program) \(arguments.joined(separator: " ")) failed (status \(status)): \(text)")
        }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func freePort() -> Int {
        let socket = Foundation.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) }
        }
        _ = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }
}
