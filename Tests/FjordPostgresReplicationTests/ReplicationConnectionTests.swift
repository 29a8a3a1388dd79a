import FjordPostgresReplication
import FjordTesting
import NIOCore
import Testing

/// The replication connection against a real PostgreSQL: authentication methods, replication
/// commands, and a pgoutput stream decoded change by change with the slot confirmed.
@Suite("PostgreSQL replication protocol", .enabled(if: PostgresServer.available), .serialized, .timeLimit(.minutes(2)))
struct ReplicationConnectionTests {
    static func configuration(_ server: PostgresServer, user: String, password: String) -> PostgresReplicationConnection.Configuration {
        PostgresReplicationConnection.Configuration(host: "127.0.0.1", port: server.port, user: user, password: password,
                                                    database: "shop", tls: .disable)
    }

    /// Runs `body` with a fresh server and stops it however `body` ends.
    func withServer(_ body: (PostgresServer) async throws -> Void) async throws {
        let server = try await PostgresServer.start()
        do {
            try await body(server)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    static func prepare(_ server: PostgresServer) async throws {
        try await server.sql("CREATE DATABASE shop")
        try await server.sql("CREATE ROLE cdc LOGIN REPLICATION PASSWORD 'cdc-secret'")
        try await server.sql("SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN REPLICATION PASSWORD 'md5-secret'")
        try await server.sql("CREATE ROLE plainuser LOGIN REPLICATION PASSWORD 'plain-secret'")
        try await server.sql("""
            CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), note text);
            ALTER TABLE items REPLICA IDENTITY FULL;
            GRANT SELECT ON items TO cdc;
            CREATE PUBLICATION shop_pub FOR TABLE items;
            """, database: "shop")
    }

    @Test("SCRAM-SHA-256, MD5 and cleartext logins; a wrong password is the server's refusal")
    func authentication() async throws {
        try await withServer { server in
            try await Self.prepare(server)
            for (user, password) in [("cdc", "cdc-secret"), ("md5user", "md5-secret"), ("plainuser", "plain-secret")] {
                let system = try await PostgresReplicationConnection.withConnection(Self.configuration(server, user: user, password: password)) {
                    try await $0.simpleQuery("IDENTIFY_SYSTEM")
                }
                #expect(system.columns.contains("xlogpos") && system.value("dbname") == "shop", "\(user)")
                #expect(LSN(system.value("xlogpos") ?? "") != nil)
            }
            await #expect(throws: PostgresReplicationError.self) {
                try await PostgresReplicationConnection.withConnection(Self.configuration(server, user: "cdc", password: "wrong")) { _ in }
            }
            do {
                try await PostgresReplicationConnection.withConnection(Self.configuration(server, user: "cdc", password: "wrong")) { _ in }
            } catch let error as PostgresReplicationError {
                #expect(error.sqlState == "28P01", "invalid_password: \(error)")
            }
        }
    }

    @Test("a slot streams pgoutput: relation, insert, update with the old row, delete, truncate, messages; confirming moves the slot")
    func stream() async throws {
        try await withServer { server in
            try await Self.prepare(server)
            let configuration = Self.configuration(server, user: "cdc", password: "cdc-secret")
            try await PostgresReplicationConnection.withConnection(configuration) { connection in
                let slot = try await connection.simpleQuery("CREATE_REPLICATION_SLOT fjord_test LOGICAL pgoutput (SNAPSHOT 'nothing')")
                let consistent = try #require(slot.value("consistent_point").flatMap { LSN($0) })
                // Five transactions (psql -c runs its statements as one).
                for statement in ["INSERT INTO items VALUES (1, 'apple', 1.50, NULL), (2, 'pear', 2.25, 'ripe')",
                                  "UPDATE items SET price = 1.75 WHERE id = 1", "DELETE FROM items WHERE id = 2",
                                  "SELECT pg_logical_emit_message(true, 'fjord', 'hello')", "TRUNCATE items"] {
                    try await server.sql(statement, database: "shop")
                }
                try await connection.startReplication(slot: "fjord_test", from: .zero, options: [
                    ("proto_version", "1"), ("publication_names", "shop_pub"), ("messages", "true"),
                ])
                var messages: [PgOutputMessage] = []
                var lastCommitEnd = LSN.zero
                var commits = 0
                while commits < 5 {
                    switch try await connection.nextReplicationMessage() {
                    case .xlogData(_, _, _, let payload):
                        // XLogData's own WAL positions may be 0 for logical messages: the commits carry the LSNs.
                        let message = try PgOutputMessage(decoding: payload)
                        if case .begin(let final, _, _) = message { #expect(final >= consistent) }
                        if case .commit(_, let end, _) = message {
                            commits += 1
                            lastCommitEnd = end
                        }
                        messages.append(message)
                    case .keepalive(_, _, let replyRequested):
                        if replyRequested { try await connection.sendStandbyStatus(written: lastCommitEnd, flushed: lastCommitEnd, applied: lastCommitEnd) }
                    case .wakeup:
                        Issue.record("a wakeup nobody asked for")
                    case .end:
                        Issue.record("the stream ended")
                        return
                    }
                }
                // The stream is idle now: a reader waiting on it wakes when another task asks.
                let waker = connection.waker
                let wake = Task {
                    try await Task.sleep(for: .milliseconds(200))
                    waker.wake()
                }
                var woken = false
                while !woken {
                    if case .wakeup = try await connection.nextReplicationMessage() { woken = true }
                }
                try await wake.value
                let relation = try #require(messages.compactMap { if case .relation(let r) = $0 { return r } else { return nil } }.first)
                #expect(relation.namespace == "public" && relation.name == "items" && relation.replicaIdentity == UInt8(ascii: "f"))
                #expect(relation.columns.map(\.name) == ["id", "name", "price", "note"])
                let inserts = messages.compactMap { if case .insert(_, let new) = $0 { return new } else { return nil } }
                #expect(inserts == [[.text("1"), .text("apple"), .text("1.50"), .null], [.text("2"), .text("pear"), .text("2.25"), .text("ripe")]])
                let update = messages.first { if case .update = $0 { return true } else { return false } }
                #expect(update == .update(relationID: relation.id, old: [.text("1"), .text("apple"), .text("1.50"), .null], oldIsKeyOnly: false,
                                          new: [.text("1"), .text("apple"), .text("1.75"), .null]))
                #expect(messages.contains(.delete(relationID: relation.id, old: [.text("2"), .text("pear"), .text("2.25"), .text("ripe")],
                                                  oldIsKeyOnly: false)))
                #expect(messages.contains { if case .message(true, _, "fjord", let content) = $0 { return String(buffer: content) == "hello" } else { return false } })
                #expect(messages.contains(.truncate(relationIDs: [relation.id], options: 0)))
                // Confirming the last commit moves the slot's confirmed_flush_lsn there.
                try await connection.sendStandbyStatus(written: lastCommitEnd, flushed: lastCommitEnd, applied: lastCommitEnd, replyRequested: true)
                var confirmed = LSN.zero
                for _ in 0..<50 where confirmed < lastCommitEnd {
                    try await Task.sleep(for: .milliseconds(100))
                    confirmed = LSN(try await server.sql("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'fjord_test'")) ?? .zero
                }
                #expect(confirmed == lastCommitEnd)
            }
        }
    }

    @Test("replication commands that fail are the server's errors; the connection stays usable")
    func errors() async throws {
        try await withServer { server in
            try await Self.prepare(server)
            try await PostgresReplicationConnection.withConnection(Self.configuration(server, user: "cdc", password: "cdc-secret")) { connection in
                await #expect(throws: PostgresReplicationError.self) {
                    try await connection.startReplication(slot: "missing", from: .zero, options: [("proto_version", "1"), ("publication_names", "shop_pub")])
                }
                let system = try await connection.simpleQuery("IDENTIFY_SYSTEM")
                #expect(system.rows.count == 1)
            }
        }
    }

    @Test("LSNs parse and print as PostgreSQL writes them")
    func lsn() {
        #expect(LSN("16/B374D848")?.value == 0x16_B374_D848)
        #expect(LSN(0x16_B374_D848).description == "16/B374D848")
        #expect(LSN("nonsense") == nil && LSN("1/2/3") == nil)
        #expect(LSN("0/1")! < LSN("1/0")!)
    }
}
