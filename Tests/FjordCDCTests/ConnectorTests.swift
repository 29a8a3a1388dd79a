@testable import FjordCDC
import FjordPostgresReplication
import Logging
import Testing

@Suite("Connector bookkeeping")
struct ConnectorTests {
    struct Refused: Error {}

    /// The confirmable position moves to a transaction's end only when it and every earlier
    /// transaction are acknowledged, never backwards, and never past a refused event.
    @Test("the acknowledged position follows complete transactions in commit order")
    func acknowledgedPosition() {
        let position = AcknowledgedPosition(start: LSN(100))
        let first = position.open()
        position.submitted(first)
        position.submitted(first)
        let second = position.open()
        position.submitted(second)
        position.seal(second, end: LSN(300), commitTimeMs: 2)
        position.completed(second, error: nil)
        #expect(position.confirmable == LSN(100), "the second waits for the first")
        position.seal(first, end: LSN(200), commitTimeMs: 1)
        position.completed(first, error: nil)
        #expect(position.confirmable == LSN(100), "one event of the first is in flight")
        position.completed(first, error: nil)
        #expect(position.confirmable == LSN(300) && position.confirmedCommitTimeMs == 2 && position.isIdle)
        #expect(position.delivered == 3)

        let empty = position.open()  // a transaction with no events of the publication
        position.seal(empty, end: LSN(400), commitTimeMs: 3)
        #expect(position.confirmable == LSN(400))

        let refused = position.open()
        position.submitted(refused)
        position.submitted(refused)
        position.completed(refused, error: Refused())
        position.completed(refused, error: nil)
        position.seal(refused, end: LSN(500), commitTimeMs: 4)
        let later = position.open()
        position.seal(later, end: LSN(600), commitTimeMs: 5)
        #expect(position.confirmable == LSN(400), "nothing past a refused event")
        #expect(position.failure != nil)
    }

    @Test("the URL and Debezium's property names configure the connector; bad values are refused")
    func configuration() throws {
        let plain = try PostgresConnectorConfiguration(url: "postgresql://cdc:p%40ss@db.example:6543/shop?sslmode=require", prefix: "shop")
        #expect(plain.connection.host == "db.example" && plain.connection.port == 6543)
        #expect(plain.connection.user == "cdc" && plain.connection.password == "p@ss" && plain.connection.database == "shop")
        #expect(plain.connection.tls == .require)
        #expect(plain.slotName == "fjord_shop" && plain.publicationName == "fjord_shop" && plain.tables == nil)
        #expect(plain.publicationAutocreateMode == .allTables && plain.snapshotMode == .initial && plain.tombstonesOnDelete)
        #expect(plain.heartbeatTopic == "__debezium-heartbeat.shop")

        let tuned = try PostgresConnectorConfiguration(
            url: "postgres://u@localhost/db", prefix: "app.v2", tables: ["public.a", "sales.b"],
            properties: ["snapshot.mode": "never", "slot.name": "my_slot", "heartbeat.interval.ms": "0",
                         "tombstones.on.delete": "false", "outbox.tables": "public.outbox, sales.outbox", "decimal.handling.mode": "double"])
        #expect(tuned.connection.port == 5432 && tuned.connection.password == nil && tuned.connection.tls == .prefer)
        #expect(tuned.tables == ["public.a", "sales.b"] && tuned.publicationAutocreateMode == .filtered)
        #expect(tuned.slotName == "my_slot" && tuned.publicationName == "fjord_app_v2" && tuned.snapshotMode == .never)
        #expect(tuned.heartbeatIntervalMs == 0 && !tuned.tombstonesOnDelete && tuned.outboxTables == ["public.outbox", "sales.outbox"])

        for (url, prefix, tables, properties) in [
            ("mysql://u@h/db", "p", nil, [:]), ("postgresql://h/db", "p", nil, [:]), ("postgresql://u@h/", "p", nil, [:]),
            ("postgresql://u@h/db", "bad prefix", nil, [:]), ("postgresql://u@h/db", "p", ["nodot"], [:]),
            ("postgresql://u@h/db?sslmode=verify-full", "p", nil, [:]), ("postgresql://u@h/db", "p", nil, ["snapshot.mode": "always"]),
            ("postgresql://u@h/db", "p", nil, ["slot.name": "Bad-Name"]), ("postgresql://u@h/db", "p", nil, ["no.such.key": "1"]),
        ] as [(String, String, [String]?, [String: String])] {
            #expect(throws: CDCError.self, "\(url) \(prefix) \(properties)") {
                try PostgresConnectorConfiguration(url: url, prefix: prefix, tables: tables, properties: properties)
            }
        }
    }

    @Test("outbox rows become events keyed by aggregate with id and type headers; updates and deletes do not")
    func outbox() {
        let relation = PgRelation(id: 7, namespace: "public", name: "outbox", replicaIdentity: UInt8(ascii: "d"), columns: [
            .init(name: "id", typeOID: 2950, typeModifier: -1, isKey: true),
            .init(name: "aggregatetype", typeOID: 25, typeModifier: -1, isKey: false),
            .init(name: "aggregateid", typeOID: 25, typeModifier: -1, isKey: false),
            .init(name: "type", typeOID: 25, typeModifier: -1, isKey: false),
            .init(name: "payload", typeOID: 3802, typeModifier: -1, isKey: false),
        ])
        let row: [PgColumnValue] = [.text("e-1"), .text("order"), .text("o-42"), .text("OrderPlaced"), .text(#"{"total": 5}"#)]
        let router = OutboxEventRouter()
        let logger = Logger(label: "test")
        let records = router.records(for: .insert(relationID: 7, new: row), relation: relation, lsn: LSN(9), logger: logger)
        #expect(records == [ChangeRecord(topic: "outbox.event.order", key: "o-42", value: #"{"total": 5}"#, lsn: LSN(9),
                                         headers: [.init(key: "id", value: "e-1"), .init(key: "type", value: "OrderPlaced")])])
        #expect(router.records(for: .delete(relationID: 7, old: row, oldIsKeyOnly: true), relation: relation, lsn: LSN(10), logger: logger).isEmpty)
        #expect(router.records(for: .update(relationID: 7, old: nil, oldIsKeyOnly: false, new: row), relation: relation, lsn: LSN(11),
                               logger: logger).isEmpty)
    }
}
