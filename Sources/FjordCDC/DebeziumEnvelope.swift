public import FjordPostgresReplication

/// One record for the broker: topic, key and value as text (JSON for change events; nil value:
/// a tombstone), headers, and the LSN of the change (for deduplication after a restart).
public struct ChangeRecord: Sendable, Equatable {
    public struct Header: Sendable, Equatable {
        public var key: String
        public var value: String

        public init(key: String, value: String) {
            self.key = key
            self.value = value
        }
    }

    public var topic: String
    public var key: String?
    public var value: String?
    public var lsn: LSN
    public var headers: [Header]

    public init(topic: String, key: String?, value: String?, lsn: LSN, headers: [Header] = []) {
        self.topic = topic
        self.key = key
        self.value = value
        self.lsn = lsn
        self.headers = headers
    }
}

/// The transaction a change belongs to, as its Begin/Commit told it.
public struct ChangeTransaction: Sendable, Equatable {
    public var xid: UInt32
    public var commitLSN: LSN
    public var commitTimeMicros: Int64

    public init(xid: UInt32, commitLSN: LSN, commitTimeMicros: Int64) {
        self.xid = xid
        self.commitLSN = commitLSN
        self.commitTimeMicros = commitTimeMicros
    }
}

/// Builds Debezium's change-event envelope for PostgreSQL changes, so consumers written for
/// Debezium's PostgreSQL connector (JSON converter, schemas disabled) read Fjord's unchanged:
///
/// - topic `<prefix>.<schema>.<table>`;
/// - key: the replica identity's key columns as a JSON object (null for a table without one);
/// - value: `{"before", "after", "source", "op", "ts_ms", "transaction"}` with `op` `c` insert,
///   `u` update, `d` delete, `r` snapshot read, `t` truncate; `before` is the old row only with
///   REPLICA IDENTITY FULL (the key columns alone otherwise, on a delete or key change);
/// - a tombstone (null value, same key) after each delete when `tombstonesOnDelete`;
/// - an unchanged TOASTed value is `unavailableValuePlaceholder`.
///
/// `source` carries `connector: "postgresql"`, `name` (the prefix), `db`, `schema`, `table`,
/// `txId`, `lsn`, `ts_ms` (commit time), `snapshot` and `sequence` as Debezium writes them.
public struct DebeziumEnvelope: Sendable {
    public var prefix: String
    public var database: String
    public var mapper: DebeziumValueMapper
    public var tombstonesOnDelete: Bool

    public init(prefix: String, database: String, mapper: DebeziumValueMapper = DebeziumValueMapper(), tombstonesOnDelete: Bool = true) {
        self.prefix = prefix
        self.database = database
        self.mapper = mapper
        self.tombstonesOnDelete = tombstonesOnDelete
    }

    public func topic(_ relation: PgRelation) -> String { "\(prefix).\(relation.namespace).\(relation.name)" }

    /// The records of one streamed change (`insert`, `update`, `delete`; `truncate` gives one per
    /// table), at `lsn` in `transaction`; nil for messages that are not row changes.
    public func records(for message: PgOutputMessage, relations: [UInt32: PgRelation], transaction: ChangeTransaction,
                        lsn: LSN, nowMs: Int64) -> [ChangeRecord]? {
        switch message {
        case .insert(let id, let new):
            guard let relation = relations[id] else { return nil }
            return [record(relation, op: "c", before: nil, after: new, keyFrom: new, transaction: transaction, lsn: lsn, nowMs: nowMs)]
        case .update(let id, let old, let keyOnly, let new):
            guard let relation = relations[id] else { return nil }
            let before = old.map { keyOnly ? keyColumnsOnly(relation, $0) : $0 }
            return [record(relation, op: "u", before: before, after: new, keyFrom: new, transaction: transaction, lsn: lsn, nowMs: nowMs)]
        case .delete(let id, let old, let keyOnly):
            guard let relation = relations[id] else { return nil }
            let before = keyOnly ? keyColumnsOnly(relation, old) : old
            var out = [record(relation, op: "d", before: before, after: nil, keyFrom: old, transaction: transaction, lsn: lsn, nowMs: nowMs)]
            if tombstonesOnDelete { out.append(ChangeRecord(topic: topic(relation), key: out[0].key, value: nil, lsn: lsn)) }
            return out
        case .truncate(let ids, _):
            return ids.compactMap { relations[$0] }.map { relation in
                let value = envelope(relation, op: "t", before: nil, after: nil, transaction: transaction, lsn: lsn, snapshot: "false", nowMs: nowMs)
                return ChangeRecord(topic: topic(relation), key: nil, value: value.json, lsn: lsn)
            }
        default:
            return nil
        }
    }

    /// A snapshot read (`op: r`) of one row; `last` marks the snapshot's final record.
    public func snapshotRecord(_ relation: PgRelation, row: [PgColumnValue], transaction: ChangeTransaction, lsn: LSN, last: Bool,
                               nowMs: Int64) -> ChangeRecord {
        let value = envelope(relation, op: "r", before: nil, after: row, transaction: transaction, lsn: lsn,
                             snapshot: last ? "last" : "true", nowMs: nowMs)
        return ChangeRecord(topic: topic(relation), key: key(relation, row)?.json, value: value.json, lsn: lsn)
    }

    private func record(_ relation: PgRelation, op: String, before: [PgColumnValue]?, after: [PgColumnValue]?, keyFrom: [PgColumnValue],
                        transaction: ChangeTransaction, lsn: LSN, nowMs: Int64) -> ChangeRecord {
        let value = envelope(relation, op: op, before: before, after: after, transaction: transaction, lsn: lsn, snapshot: "false", nowMs: nowMs)
        return ChangeRecord(topic: topic(relation), key: key(relation, keyFrom)?.json, value: value.json, lsn: lsn)
    }

    /// The key columns of `row` as an object, or nil when the table has no key columns.
    public func key(_ relation: PgRelation, _ row: [PgColumnValue]) -> DebeziumValue? {
        let fields = zip(relation.columns, row).filter { $0.0.isKey }.map { column, value in
            (column.name, mapper.map(value, typeOID: column.typeOID, typeModifier: column.typeModifier))
        }
        return fields.isEmpty ? nil : .object(fields)
    }

    func row(_ relation: PgRelation, _ values: [PgColumnValue]) -> DebeziumValue {
        .object(zip(relation.columns, values).map { column, value in
            (column.name, mapper.map(value, typeOID: column.typeOID, typeModifier: column.typeModifier))
        })
    }

    /// A key-only old tuple (pgoutput's `K`) with the other columns as NULL, as Debezium shows it.
    func keyColumnsOnly(_ relation: PgRelation, _ values: [PgColumnValue]) -> [PgColumnValue] {
        zip(relation.columns, values).map { column, value in column.isKey ? value : .null }
    }

    func envelope(_ relation: PgRelation, op: String, before: [PgColumnValue]?, after: [PgColumnValue]?, transaction: ChangeTransaction,
                  lsn: LSN, snapshot: String, nowMs: Int64) -> DebeziumValue {
        let source: DebeziumValue = .object([
            ("version", .string("fjord")), ("connector", .string("postgresql")), ("name", .string(prefix)),
            ("ts_ms", .int(transaction.commitTimeMicros / 1000 + 946_684_800_000)), ("snapshot", .string(snapshot)),
            ("db", .string(database)), ("sequence", .string("[\"\(transaction.commitLSN.value)\",\"\(lsn.value)\"]")),
            ("schema", .string(relation.namespace)), ("table", .string(relation.name)), ("txId", .int(Int64(transaction.xid))),
            ("lsn", .int(Int64(bitPattern: lsn.value))), ("xmin", .null),
        ])
        return .object([
            ("before", before.map { row(relation, $0) } ?? .null), ("after", after.map { row(relation, $0) } ?? .null),
            ("source", source), ("op", .string(op)), ("ts_ms", .int(nowMs)), ("transaction", .null),
        ])
    }
}
