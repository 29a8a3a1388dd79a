import FjordCDC
import FjordPostgresReplication
import Testing

/// Debezium's PostgreSQL change events (JSON converter, schemas disabled), built from pgoutput.
struct DebeziumEnvelopeTests {
    typealias T = DebeziumValueMapper.TypeOID
    static let relation = PgRelation(id: 16_384, namespace: "public", name: "orders", replicaIdentity: UInt8(ascii: "d"), columns: [
        .init(name: "id", typeOID: T.int4, typeModifier: -1, isKey: true),
        .init(name: "note", typeOID: T.text, typeModifier: -1, isKey: false),
        .init(name: "total", typeOID: T.numeric, typeModifier: -1, isKey: false),
    ])
    static let transaction = ChangeTransaction(xid: 750, commitLSN: LSN(0x1_6B37_4D48), commitTimeMicros: 765_432_100_000_000)
    let envelope = DebeziumEnvelope(prefix: "shop", database: "shopdb")

    @Test("insert: topic per table, key from the primary key, op c, source as Debezium's")
    func insert() throws {
        let records = try #require(envelope.records(for: .insert(relationID: 16_384, new: [.text("7"), .text("a \"b\""), .text("12.50")]),
                                                    relations: [16_384: Self.relation], transaction: Self.transaction,
                                                    lsn: LSN(0x1_6B37_4D00), nowMs: 1_700_000_000_000))
        #expect(records.count == 1)
        #expect(records[0].topic == "shop.public.orders")
        #expect(records[0].key == #"{"id":7}"#)
        #expect(records[0].value == #"{"before":null,"after":{"id":7,"note":"a \"b\"","total":"12.50"},"source":{"version":"fjord","connector":"postgresql","name":"shop","ts_ms":1712116900000,"snapshot":"false","db":"shopdb","sequence":"[\"6093753672\",\"6093753600\"]","schema":"public","table":"orders","txId":750,"lsn":6093753600,"xmin":null},"op":"c","ts_ms":1700000000000,"transaction":null}"#)
    }

    @Test("delete: before holds the key only without REPLICA IDENTITY FULL, then a tombstone; update keeps a full old row")
    func deleteAndUpdate() throws {
        let relations: [UInt32: PgRelation] = [16_384: Self.relation]
        let deleted = try #require(envelope.records(for: .delete(relationID: 16_384, old: [.text("7"), .null, .null], oldIsKeyOnly: true),
                                                    relations: relations, transaction: Self.transaction, lsn: LSN(1), nowMs: 0))
        #expect(deleted.count == 2)
        #expect(deleted[0].value?.hasPrefix(#"{"before":{"id":7,"note":null,"total":null},"after":null"#) == true)
        #expect(deleted[0].value?.contains(#""op":"d""#) == true)
        #expect(deleted[1] == ChangeRecord(topic: "shop.public.orders", key: #"{"id":7}"#, value: nil, lsn: LSN(1)))
        let updated = try #require(envelope.records(
            for: .update(relationID: 16_384, old: [.text("7"), .text("x"), .text("1")], oldIsKeyOnly: false,
                         new: [.text("7"), .unchangedToast, .text("2")]),
            relations: relations, transaction: Self.transaction, lsn: LSN(2), nowMs: 0))
        #expect(updated[0].value?.hasPrefix(#"{"before":{"id":7,"note":"x","total":"1"},"after":{"id":7,"note":"__debezium_unavailable_value","total":"2"}"#) == true)
        // A relation the stream has not described yet is not guessed at.
        #expect(envelope.records(for: .insert(relationID: 1, new: []), relations: relations, transaction: Self.transaction, lsn: LSN(3), nowMs: 0) == nil)
    }

    @Test("snapshot reads are op r, the last one marked; truncate is op t without a key")
    func snapshotAndTruncate() throws {
        let read = envelope.snapshotRecord(Self.relation, row: [.text("1"), .null, .text("0")], transaction: Self.transaction, lsn: LSN(9),
                                           last: true, nowMs: 5)
        #expect(read.value?.contains(#""snapshot":"last""#) == true && read.value?.contains(#""op":"r""#) == true)
        let truncated = try #require(envelope.records(for: .truncate(relationIDs: [16_384], options: 0), relations: [16_384: Self.relation],
                                                      transaction: Self.transaction, lsn: LSN(9), nowMs: 5))
        #expect(truncated.count == 1 && truncated[0].key == nil && truncated[0].value?.contains(#""op":"t""#) == true)
    }

    @Test("PostgreSQL's text values as Debezium's JSON types")
    func values() {
        let mapper = DebeziumValueMapper()
        func json(_ text: String, _ type: UInt32, _ modifier: Int32 = -1) -> String { mapper.map(text: text, typeOID: type, typeModifier: modifier).json }
        #expect(json("t", T.bool) == "true")
        #expect(json("-42", T.int8) == "-42")
        #expect(json("1.5", T.float8) == "1.5" && json("NaN", T.float4) == #""NaN""#)
        #expect(json("123.4500", T.numeric) == #""123.4500""#)
        #expect(DebeziumValueMapper(decimalHandling: .double).map(text: "123.45", typeOID: T.numeric).json == "123.45")
        // io.debezium.time.Date: days since the epoch.
        #expect(json("1970-01-02", T.date) == "1")
        #expect(json("2024-02-29", T.date) == "19782")
        #expect(json("1969-12-31", T.date) == "-1")
        // MicroTimestamp (precision > 3), Timestamp in ms (precision ≤ 3).
        #expect(json("2024-02-29 12:00:00.5", T.timestamp) == "1709208000500000")
        #expect(json("2024-02-29 12:00:00.5", T.timestamp, 3) == "1709208000500")
        // ZonedTimestamp / ZonedTime: ISO-8601 in UTC.
        #expect(json("2024-02-29 12:00:00.25+02", T.timestamptz) == #""2024-02-29T10:00:00.25Z""#)
        #expect(json("23:30:00-01:30", T.timetz) == #""01:00:00Z""#)
        // MicroTime and MicroDuration (a month is 365.25 / 12 days).
        #expect(json("01:02:03.000004", T.time) == "3723000004")
        #expect(json("1 day 01:00:00", T.interval) == "90000000000")
        #expect(json("1 mon", T.interval) == "2629800000000")
        // bytea's hex format as base64; uuid and json as strings; arrays element by element.
        #expect(json("\\x48656c6c6f", T.bytea) == #""SGVsbG8=""#)
        #expect(json("0b8f3a0e-6c5d-4d1e-9f3e-1a2b3c4d5e6f", T.uuid) == #""0b8f3a0e-6c5d-4d1e-9f3e-1a2b3c4d5e6f""#)
        #expect(json(#"{"a": [1, 2]}"#, T.jsonb) == #""{\"a\": [1, 2]}""#)
        #expect(json("{1,2,NULL}", 1007) == "[1,2,null]")
        #expect(json(#"{"a b","c\"d",NULL,"NULL"}"#, 1009) == #"["a b","c\"d",null,"NULL"]"#)
        #expect(json("{}", 1009) == "[]")
        #expect(mapper.map(.unchangedToast, typeOID: T.text).json == #""__debezium_unavailable_value""#)
    }
}
