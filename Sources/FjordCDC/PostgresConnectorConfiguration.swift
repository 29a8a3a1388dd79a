import Foundation
public import FjordPostgresReplication

/// What a `PostgresConnector` captures and how, with Debezium's PostgreSQL connector property
/// names where a property has one (`snapshot.mode`, `slot.name`, `publication.name`,
/// `publication.autocreate.mode`, `heartbeat.interval.ms`, `tombstones.on.delete`,
/// `slot.drop.on.stop`, `decimal.handling.mode`, `status.update.interval.ms`), so a Debezium
/// configuration carries over. (A snapshot's rows stream with postgres-nio's back-pressure, so
/// Debezium's `snapshot.fetch.size` has nothing to tune here and is refused as unknown.)
public struct PostgresConnectorConfiguration: Sendable {
    /// `snapshot.mode`: whether the tables' current rows are read before streaming.
    public enum SnapshotMode: String, Sendable {
        /// Read every table once, when the connector has not completed a snapshot, then stream.
        case initial
        /// Stream changes only, from the slot's position.
        case never
        /// Read every table once and stop, without streaming (the slot is temporary).
        case initialOnly = "initial_only"
    }

    /// `publication.autocreate.mode`, as Debezium's.
    public enum PublicationAutocreateMode: String, Sendable {
        /// `CREATE PUBLICATION … FOR ALL TABLES` when missing (needs a superuser).
        case allTables = "all_tables"
        /// `CREATE PUBLICATION … FOR TABLE <tables>` when missing, and set to those tables when it exists.
        case filtered
        /// Never create or change it: a missing publication is an error.
        case disabled
    }

    public var connection: PostgresReplicationConnection.Configuration
    /// `topic.prefix`: topics are `<prefix>.<schema>.<table>`; also the connector's name.
    public var prefix: String
    /// `table.include.list` as `schema.table` names; nil: every table of the database.
    public var tables: [String]?
    public var slotName: String
    public var publicationName: String
    public var publicationAutocreateMode: PublicationAutocreateMode
    public var snapshotMode: SnapshotMode
    /// `heartbeat.interval.ms`: how often a heartbeat message goes through the WAL, so an idle
    /// database's slot still advances; 0 disables heartbeats.
    public var heartbeatIntervalMs: Int
    public var tombstonesOnDelete: Bool
    /// `slot.drop.on.stop`: drop the slot on a clean stop (the next start snapshots again).
    public var slotDropOnStop: Bool
    public var decimalHandling: DebeziumValueMapper.DecimalHandling
    /// `status.update.interval.ms`: the longest time between standby status updates.
    public var statusUpdateIntervalMs: Int
    /// Tables (`schema.table`) routed as Debezium's outbox event router does instead of as
    /// change events (`outbox.tables`).
    public var outboxTables: Set<String>
    /// The compacted topic holding each connector's progress (`offset.storage.topic`).
    public var offsetsTopic: String

    /// The connector's topic for heartbeat records, as Debezium names it.
    public var heartbeatTopic: String { "__debezium-heartbeat.\(prefix)" }

    /// Parses `url` (`postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|prefer|require]`)
    /// and the Debezium-named `properties`; an unknown property is an error.
    public init(url: String, prefix: String, tables: [String]? = nil, properties: [String: String] = [:]) throws(CDCError) {
        connection = try Self.parse(url: url)
        guard !prefix.isEmpty, prefix.allSatisfy({ $0.isLetter || $0.isNumber || "._-".contains($0) }) else {
            throw .configuration("--prefix '\(prefix)': letters, digits, '.', '_' and '-' only (it starts every topic name)")
        }
        self.prefix = prefix
        if let tables {
            for table in tables where table.split(separator: ".").count != 2 {
                throw .configuration("table '\(table)': expected schema.table")
            }
        }
        self.tables = tables?.isEmpty == false ? tables : nil
        let sanitized = String(prefix.lowercased().map { $0.isLetter || $0.isNumber ? $0 : "_" })
        slotName = "fjord_" + sanitized
        publicationName = "fjord_" + sanitized
        publicationAutocreateMode = self.tables == nil ? .allTables : .filtered
        snapshotMode = .initial
        heartbeatIntervalMs = 10_000
        tombstonesOnDelete = true
        slotDropOnStop = false
        decimalHandling = .string
        statusUpdateIntervalMs = 10_000
        outboxTables = []
        offsetsTopic = "__fjord_cdc_offsets"
        for (key, value) in properties.sorted(by: { $0.key < $1.key }) {
            try apply(key, value)
        }
    }

    private mutating func apply(_ key: String, _ value: String) throws(CDCError) {
        func int(_ minimum: Int) throws(CDCError) -> Int {
            guard let number = Int(value), number >= minimum else { throw .configuration("\(key)=\(value): expected an integer ≥ \(minimum)") }
            return number
        }
        func bool() throws(CDCError) -> Bool {
            switch value.lowercased() {
            case "true": return true
            case "false": return false
            default: throw .configuration("\(key)=\(value): expected true or false")
            }
        }
        switch key {
        case "slot.name":
            guard !value.isEmpty, value.allSatisfy({ ($0.isLowercase && $0.isASCII) || $0.isNumber || $0 == "_" }) else {
                throw .configuration("slot.name=\(value): lower-case letters, digits and '_' only, as PostgreSQL requires")
            }
            slotName = value
        case "publication.name":
            guard !value.isEmpty else { throw .configuration("publication.name is empty") }
            publicationName = value
        case "publication.autocreate.mode":
            guard let mode = PublicationAutocreateMode(rawValue: value) else {
                throw .configuration("publication.autocreate.mode=\(value): expected all_tables, filtered or disabled")
            }
            publicationAutocreateMode = mode
        case "snapshot.mode":
            guard let mode = SnapshotMode(rawValue: value) else { throw .configuration("snapshot.mode=\(value): expected initial, never or initial_only") }
            snapshotMode = mode
        case "heartbeat.interval.ms": heartbeatIntervalMs = try int(0)
        case "tombstones.on.delete": tombstonesOnDelete = try bool()
        case "slot.drop.on.stop": slotDropOnStop = try bool()
        case "decimal.handling.mode":
            guard let mode = DebeziumValueMapper.DecimalHandling(rawValue: value) else {
                throw .configuration("decimal.handling.mode=\(value): expected string or double")
            }
            decimalHandling = mode
        case "status.update.interval.ms": statusUpdateIntervalMs = try int(100)
        case "outbox.tables":
            outboxTables = Set(value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
        case "offset.storage.topic": offsetsTopic = value
        default:
            throw .configuration("unknown property \(key)")
        }
    }

    static func parse(url: String) throws(CDCError) -> PostgresReplicationConnection.Configuration {
        guard let components = URLComponents(string: url), let scheme = components.scheme, ["postgresql", "postgres"].contains(scheme)
        else { throw .configuration("--url \(redacted(url)): expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE") }
        guard let host = components.host, !host.isEmpty else { throw .configuration("--url \(redacted(url)): no host") }
        guard let user = components.user, !user.isEmpty else { throw .configuration("--url \(redacted(url)): no user") }
        let database = String(components.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty else { throw .configuration("--url \(redacted(url)): no database") }
        var tls = PostgresReplicationConnection.TLSMode.prefer
        for item in components.queryItems ?? [] {
            switch (item.name, item.value ?? "") {
            case ("sslmode", "disable"): tls = .disable
            case ("sslmode", "allow"), ("sslmode", "prefer"): tls = .prefer
            case ("sslmode", "require"): tls = .require
            case ("sslmode", let other): throw .configuration("sslmode=\(other): expected disable, prefer or require")
            case ("application_name", _): continue
            case (let name, _): throw .configuration("--url: unknown parameter \(name)")
            }
        }
        return PostgresReplicationConnection.Configuration(
            host: host, port: components.port ?? 5432, user: user.removingPercentEncoding ?? user,
            password: components.password.map { $0.removingPercentEncoding ?? $0 }, database: database.removingPercentEncoding ?? database,
            tls: tls)
    }

    /// The URL with its password replaced, for messages.
    static func redacted(_ url: String) -> String {
        guard var components = URLComponents(string: url), components.password != nil else { return url }
        components.password = "***"
        return components.string ?? url
    }
}

/// Why a connector stopped or refused to start; each says what to do about it.
public enum CDCError: Error, CustomStringConvertible, Sendable {
    /// A setting or the database's configuration is wrong (nothing was created).
    case configuration(String)
    /// PostgreSQL refused or failed a step.
    case database(String)
    /// The broker did not acknowledge a change event (the slot was not advanced past it).
    case delivery(String)

    public var description: String {
        switch self {
        case .configuration(let message), .database(let message), .delivery(let message): return message
        }
    }
}
