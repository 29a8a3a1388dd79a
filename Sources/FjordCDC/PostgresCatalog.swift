import FjordPostgresReplication
import Foundation
import Logging
import NIOCore
import NIOSSL
import PostgresNIO

/// The connector's ordinary (non-replication) PostgreSQL session, over postgres-nio: the
/// database's settings and catalog, the publication, heartbeats, and the snapshot's reads.
///
/// Every statement names its objects through `identifier` quoting; values go as bind
/// parameters. PostgreSQL's errors come back as `CDCError.database` with the server's message.
final class PostgresCatalog: Sendable {
    let connection: PostgresConnection
    let logger: Logger

    private init(connection: PostgresConnection, logger: Logger) {
        self.connection = connection
        self.logger = logger
    }

    static func connect(_ configuration: PostgresReplicationConnection.Configuration, logger: Logger) async throws -> PostgresCatalog {
        let tls: PostgresConnection.Configuration.TLS
        switch configuration.tls {
        case .disable:
            tls = .disable
        case .prefer, .require:
            var settings = TLSConfiguration.makeClientConfiguration()
            settings.certificateVerification = .none  // as libpq's sslmode=prefer/require
            let context = try NIOSSLContext(configuration: settings)
            tls = configuration.tls == .prefer ? .prefer(context) : .require(context)
        }
        var settings = PostgresConnection.Configuration(host: configuration.host, port: configuration.port, username: configuration.user,
                                                        password: configuration.password, database: configuration.database, tls: tls)
        settings.options.connectTimeout = .seconds(10)
        // The same text forms as the replication session's, so snapshot values parse one way.
        settings.options.additionalStartupParameters = [
            ("application_name", "fjord-cdc"), ("DateStyle", "ISO, YMD"), ("TimeZone", "UTC"), ("IntervalStyle", "postgres"),
            ("extra_float_digits", "3"),
        ]
        do {
            let connection = try await PostgresConnection.connect(configuration: settings, id: 1, logger: logger)
            return PostgresCatalog(connection: connection, logger: logger)
        } catch {
            throw CDCError.database("cannot connect to \(configuration.host):\(configuration.port)/\(configuration.database) "
                                    + "as \(configuration.user): \(Self.message(error))")
        }
    }

    func close() async {
        try? await connection.close()
    }

    /// Runs `query` and collects its rows as text (every column must be text, or cast to it).
    @discardableResult
    func rows(_ query: PostgresQuery) async throws -> [[String?]] {
        do {
            var out: [[String?]] = []
            for try await row in try await connection.query(query, logger: logger) {
                out.append(row.map { cell in cell.bytes.map { String(buffer: $0) } })
            }
            return out
        } catch {
            throw CDCError.database("\(query.sql.prefix(120)): \(Self.message(error))")
        }
    }

    /// PostgreSQL's own message (and SQLSTATE) for a postgres-nio error.
    static func message(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let info = error.serverInfo, let message = info[.message] {
                return message + (info[.sqlState].map { " (SQLSTATE \($0))" } ?? "")
            }
            return "\(error.code)"
        }
        return "\(error)"
    }

    // MARK: Settings and tables

    func walLevel() async throws -> String {
        try await rows("SHOW wal_level").first?.first.flatMap { $0 } ?? ""
    }

    /// Every ordinary or partitioned table outside the system schemas, as `schema.table`.
    func userTables() async throws -> [String] {
        try await rows("""
            SELECT n.nspname::text || '.' || c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
              AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
            ORDER BY 1
            """).compactMap { $0.first ?? nil }
    }

    /// The publication's tables as `schema.table`, and whether it is FOR ALL TABLES; nil if missing.
    func publication(_ name: String) async throws -> (allTables: Bool, tables: Set<String>)? {
        guard let all = try await rows("SELECT puballtables::text FROM pg_publication WHERE pubname = \(name)").first?.first else {
            return nil
        }
        let tables = try await rows("SELECT schemaname::text || '.' || tablename::text FROM pg_publication_tables WHERE pubname = \(name)")
        return (all == "true", Set(tables.compactMap { $0.first ?? nil }))
    }

    func createPublication(_ name: String, tables: [String]?) async throws {
        if let tables {
            try await rows(PostgresQuery(unsafeSQL: "CREATE PUBLICATION \(identifier(name)) FOR TABLE \(tables.map(qualified).joined(separator: ", "))"))
        } else {
            try await rows(PostgresQuery(unsafeSQL: "CREATE PUBLICATION \(identifier(name)) FOR ALL TABLES"))
        }
    }

    func setPublicationTables(_ name: String, tables: [String]) async throws {
        try await rows(PostgresQuery(unsafeSQL: "ALTER PUBLICATION \(identifier(name)) SET TABLE \(tables.map(qualified).joined(separator: ", "))"))
    }

    func dropPublication(_ name: String) async throws {
        try await rows(PostgresQuery(unsafeSQL: "DROP PUBLICATION IF EXISTS \(identifier(name))"))
    }

    /// The tables of `tables` whose REPLICA IDENTITY is not FULL (their updates and deletes carry no old row).
    func tablesWithoutFullIdentity(_ tables: [String]) async throws -> [String] {
        var out: [String] = []
        for table in tables {
            let (schema, name) = split(table)
            let identity = try await rows("""
                SELECT c.relreplident::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = \(schema) AND c.relname = \(name)
                """).first?.first ?? nil
            if identity != "f" { out.append(table) }
        }
        return out
    }

    // MARK: Slots

    /// The slot's confirmed position, whether a process streams from it, and its plugin; nil if missing.
    func slot(_ name: String) async throws -> (confirmed: LSN, active: Bool, plugin: String, database: String)? {
        guard let row = try await rows("""
            SELECT coalesce(confirmed_flush_lsn::text, '0/0'), active::text, coalesce(plugin::text, ''), coalesce(database::text, '')
            FROM pg_replication_slots WHERE slot_name = \(name)
            """).first else { return nil }
        return (LSN(row[0] ?? "0/0") ?? .zero, row[1] == "true", row[2] ?? "", row[3] ?? "")
    }

    func dropSlot(_ name: String) async throws {
        try await rows("SELECT pg_drop_replication_slot(\(name))::text")
    }

    /// Emits a non-transactional logical message: it passes through every logical slot, so
    /// the connector's slot advances even when its tables are idle.
    func emitHeartbeat(prefix: String) async throws {
        try await rows("SELECT pg_logical_emit_message(false, \(prefix), '')::text")
    }

    // MARK: Relations

    /// The table's shape as a Relation message would give it, with `isKey` on the primary key
    /// (Debezium's key), whatever the replica identity says.
    func relation(_ table: String) async throws -> PgRelation {
        let (schema, name) = split(table)
        guard let header = try await rows("""
            SELECT c.oid::text, c.relreplident::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = \(schema) AND c.relname = \(name)
            """).first, let oid = header[0].flatMap({ UInt32($0) }) else {
            throw CDCError.configuration("table \(table) does not exist")
        }
        let columns = try await rows("""
            SELECT a.attname::text, a.atttypid::int8::text, a.atttypmod::text,
                   coalesce(a.attnum = ANY(i.indkey), false)::text
            FROM pg_attribute a LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
            WHERE a.attrelid = \(Int64(oid)) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
            """).map { row in
            PgRelation.Column(name: row[0] ?? "", typeOID: UInt32(row[1] ?? "") ?? 25, typeModifier: Int32(row[2] ?? "") ?? -1,
                              isKey: row[3] == "true")
        }
        return PgRelation(id: oid, namespace: schema, name: name, replicaIdentity: header[1]?.utf8.first ?? UInt8(ascii: "d"),
                          columns: columns)
    }

    /// The primary key's column names of the relation with this oid.
    func primaryKey(relationID: UInt32) async throws -> Set<String> {
        Set(try await rows("""
            SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
            WHERE i.indrelid = \(Int64(relationID)) AND i.indisprimary
            """).compactMap { $0.first ?? nil })
    }

    func estimatedRows(_ table: String) async throws -> Int64 {
        let (schema, name) = split(table)
        let value = try await rows("""
            SELECT greatest(c.reltuples, 0)::int8::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = \(schema) AND c.relname = \(name)
            """).first?.first ?? nil
        return value.flatMap { Int64($0) } ?? 0
    }

    // MARK: Snapshot

    /// Runs `body` inside a REPEATABLE READ, read-only transaction that sees exactly the
    /// exported snapshot `name` (the slot's starting point).
    func withSnapshot<Result>(_ name: String, _ body: () async throws -> Result) async throws -> Result {
        try await rows("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        do {
            try await rows(PostgresQuery(unsafeSQL: "SET TRANSACTION SNAPSHOT '\(name.replacingOccurrences(of: "'", with: "''"))'"))
            let result = try await body()
            try await rows("COMMIT")
            return result
        } catch {
            _ = try? await rows("ROLLBACK")
            throw error
        }
    }

    /// Streams every row of `relation` as text values (the columns' output functions, the
    /// forms pgoutput sends), `body` called per row.
    func readRows(_ relation: PgRelation, _ body: ([PgColumnValue]) async throws -> Void) async throws {
        let columns = relation.columns.map { "\(identifier($0.name))::text" }.joined(separator: ", ")
        let sql = "SELECT \(columns) FROM \(identifier(relation.namespace)).\(identifier(relation.name))"
        do {
            for try await row in try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger) {
                try await body(row.map { cell in cell.bytes.map { PgColumnValue.text(String(buffer: $0)) } ?? .null })
            }
        } catch let error as CDCError {
            throw error
        } catch let stop as StopRequested {
            throw stop
        } catch {
            throw CDCError.database("reading \(relation.namespace).\(relation.name): \(Self.message(error))")
        }
    }

    private func split(_ table: String) -> (String, String) {
        let parts = table.split(separator: ".", maxSplits: 1).map(String.init)
        return parts.count == 2 ? (parts[0], parts[1]) : ("public", table)
    }

    private func qualified(_ table: String) -> String {
        let (schema, name) = split(table)
        return "\(identifier(schema)).\(identifier(name))"
    }
}

/// `"name"` with `"` doubled: an SQL identifier, whatever its characters.
func identifier(_ name: String) -> String {
    "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}

extension PostgresCatalog {
    /// WAL between the server's current position and the slot's confirmed one; nil without the slot.
    func slotLagBytes(_ name: String) async throws -> Int64? {
        let value = try await rows("""
            SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::int8::text FROM pg_replication_slots WHERE slot_name = \(name)
            """).first?.first ?? nil
        return value.flatMap { Int64($0) }
    }
}
