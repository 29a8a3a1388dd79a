public import NIOCore

/// One message of PostgreSQL's `pgoutput` logical decoding plugin (protocol version 1; the
/// PostgreSQL docs' "Logical Replication Message Formats"), decoded as a value. Column values
/// stay PostgreSQL's text form; mapping them to types is the consumer's concern.
public enum PgOutputMessage: Sendable, Equatable {
    /// A transaction starts: its commit's LSN, commit time (µs since 2000-01-01) and xid.
    case begin(finalLSN: LSN, commitTimeMicros: Int64, xid: UInt32)
    /// The transaction committed: its commit LSN and the end of its WAL.
    case commit(commitLSN: LSN, endLSN: LSN, commitTimeMicros: Int64)
    case origin(lsn: LSN, name: String)
    /// A table's current shape, sent before its first change and after every schema change.
    case relation(PgRelation)
    case type(oid: UInt32, namespace: String, name: String)
    case insert(relationID: UInt32, new: [PgColumnValue])
    /// `old` is the replica identity's key columns (`K`) or the whole old row (`O`, REPLICA
    /// IDENTITY FULL), when the server sent one.
    case update(relationID: UInt32, old: [PgColumnValue]?, oldIsKeyOnly: Bool, new: [PgColumnValue])
    case delete(relationID: UInt32, old: [PgColumnValue], oldIsKeyOnly: Bool)
    /// TRUNCATE of the listed relations; options bit 1 CASCADE, bit 2 RESTART IDENTITY.
    case truncate(relationIDs: [UInt32], options: UInt8)
    /// `pg_logical_emit_message`: transactional or not, at `lsn`, with a prefix and content.
    case message(transactional: Bool, lsn: LSN, prefix: String, content: ByteBuffer)

    /// Decodes one XLogData payload.
    public init(decoding payload: ByteBuffer) throws(PostgresReplicationError) {
        var buffer = payload
        guard let kind = buffer.readInteger(as: UInt8.self) else { throw .protocolViolation("empty pgoutput message") }
        func need<T>(_ value: T?, _ what: String) throws(PostgresReplicationError) -> T {
            guard let value else { throw .protocolViolation("pgoutput \(Character(UnicodeScalar(kind))): short \(what)") }
            return value
        }
        switch kind {
        case UInt8(ascii: "B"):
            let lsn = try need(buffer.readInteger(as: UInt64.self), "final LSN")
            let time = try need(buffer.readInteger(as: Int64.self), "commit time")
            let xid = try need(buffer.readInteger(as: UInt32.self), "xid")
            self = .begin(finalLSN: LSN(lsn), commitTimeMicros: time, xid: xid)
        case UInt8(ascii: "C"):
            _ = try need(buffer.readInteger(as: UInt8.self), "flags")
            let commit = try need(buffer.readInteger(as: UInt64.self), "commit LSN")
            let end = try need(buffer.readInteger(as: UInt64.self), "end LSN")
            let time = try need(buffer.readInteger(as: Int64.self), "commit time")
            self = .commit(commitLSN: LSN(commit), endLSN: LSN(end), commitTimeMicros: time)
        case UInt8(ascii: "O"):
            let lsn = try need(buffer.readInteger(as: UInt64.self), "LSN")
            self = .origin(lsn: LSN(lsn), name: try need(buffer.readNullTerminatedString(), "name"))
        case UInt8(ascii: "R"):
            let id = try need(buffer.readInteger(as: UInt32.self), "relation id")
            let namespace = try need(buffer.readNullTerminatedString(), "namespace")
            let name = try need(buffer.readNullTerminatedString(), "name")
            let identity = try need(buffer.readInteger(as: UInt8.self), "replica identity")
            let count = try need(buffer.readInteger(as: Int16.self), "column count")
            var columns: [PgRelation.Column] = []
            for _ in 0..<Swift.max(0, count) {
                let flags = try need(buffer.readInteger(as: UInt8.self), "column flags")
                let column = try need(buffer.readNullTerminatedString(), "column name")
                let type = try need(buffer.readInteger(as: UInt32.self), "column type")
                let modifier = try need(buffer.readInteger(as: Int32.self), "type modifier")
                columns.append(PgRelation.Column(name: column, typeOID: type, typeModifier: modifier, isKey: flags & 1 != 0))
            }
            self = .relation(PgRelation(id: id, namespace: namespace, name: name, replicaIdentity: identity, columns: columns))
        case UInt8(ascii: "Y"):
            let oid = try need(buffer.readInteger(as: UInt32.self), "type oid")
            let namespace = try need(buffer.readNullTerminatedString(), "namespace")
            self = .type(oid: oid, namespace: namespace, name: try need(buffer.readNullTerminatedString(), "name"))
        case UInt8(ascii: "I"):
            let id = try need(buffer.readInteger(as: UInt32.self), "relation id")
            guard try need(buffer.readInteger(as: UInt8.self), "N") == UInt8(ascii: "N") else { throw .protocolViolation("Insert without N") }
            self = .insert(relationID: id, new: try Self.tuple(&buffer))
        case UInt8(ascii: "U"):
            let id = try need(buffer.readInteger(as: UInt32.self), "relation id")
            var marker = try need(buffer.readInteger(as: UInt8.self), "tuple marker")
            var old: [PgColumnValue]? = nil
            let keyOnly = marker == UInt8(ascii: "K")
            if marker == UInt8(ascii: "K") || marker == UInt8(ascii: "O") {
                old = try Self.tuple(&buffer)
                marker = try need(buffer.readInteger(as: UInt8.self), "N")
            }
            guard marker == UInt8(ascii: "N") else { throw .protocolViolation("Update without N") }
            self = .update(relationID: id, old: old, oldIsKeyOnly: keyOnly, new: try Self.tuple(&buffer))
        case UInt8(ascii: "D"):
            let id = try need(buffer.readInteger(as: UInt32.self), "relation id")
            let marker = try need(buffer.readInteger(as: UInt8.self), "tuple marker")
            guard marker == UInt8(ascii: "K") || marker == UInt8(ascii: "O") else { throw .protocolViolation("Delete without K or O") }
            self = .delete(relationID: id, old: try Self.tuple(&buffer), oldIsKeyOnly: marker == UInt8(ascii: "K"))
        case UInt8(ascii: "T"):
            let count = try need(buffer.readInteger(as: UInt32.self), "relation count")
            let options = try need(buffer.readInteger(as: UInt8.self), "options")
            var ids: [UInt32] = []
            for _ in 0..<count { ids.append(try need(buffer.readInteger(as: UInt32.self), "relation id")) }
            self = .truncate(relationIDs: ids, options: options)
        case UInt8(ascii: "M"):
            let flags = try need(buffer.readInteger(as: UInt8.self), "flags")
            let lsn = try need(buffer.readInteger(as: UInt64.self), "LSN")
            let prefix = try need(buffer.readNullTerminatedString(), "prefix")
            let length = try need(buffer.readInteger(as: UInt32.self), "length")
            let content = try need(buffer.readSlice(length: Int(length)), "content")
            self = .message(transactional: flags & 1 != 0, lsn: LSN(lsn), prefix: prefix, content: content)
        default:
            throw .protocolViolation("unknown pgoutput message \(Character(UnicodeScalar(kind)))")
        }
    }

    /// TupleData: Int16 column count, then per column `n` (null), `u` (unchanged TOAST),
    /// `t` (text) or `b` (binary) with an Int32 length and the bytes.
    static func tuple(_ buffer: inout ByteBuffer) throws(PostgresReplicationError) -> [PgColumnValue] {
        guard let count = buffer.readInteger(as: Int16.self), count >= 0 else { throw .protocolViolation("short TupleData") }
        var values: [PgColumnValue] = []
        values.reserveCapacity(Int(count))
        for _ in 0..<count {
            guard let kind = buffer.readInteger(as: UInt8.self) else { throw .protocolViolation("short TupleData column") }
            switch kind {
            case UInt8(ascii: "n"): values.append(.null)
            case UInt8(ascii: "u"): values.append(.unchangedToast)
            case UInt8(ascii: "t"), UInt8(ascii: "b"):
                guard let length = buffer.readInteger(as: Int32.self), length >= 0, let bytes = buffer.readSlice(length: Int(length)) else {
                    throw .protocolViolation("TupleData value past its end")
                }
                values.append(kind == UInt8(ascii: "t") ? .text(String(buffer: bytes)) : .binary(bytes))
            default:
                throw .protocolViolation("unknown TupleData kind \(kind)")
            }
        }
        return values
    }
}

/// A column value as pgoutput sends it.
public enum PgColumnValue: Sendable, Equatable {
    case null
    /// A TOASTed value the change did not touch: pgoutput does not send it again.
    case unchangedToast
    case text(String)
    case binary(ByteBuffer)
}

/// A table as pgoutput describes it (its Relation message).
public struct PgRelation: Sendable, Equatable {
    public struct Column: Sendable, Equatable {
        public var name: String
        public var typeOID: UInt32
        public var typeModifier: Int32
        /// Part of the replica identity (the primary key, unless REPLICA IDENTITY says otherwise).
        public var isKey: Bool

        public init(name: String, typeOID: UInt32, typeModifier: Int32, isKey: Bool) {
            self.name = name
            self.typeOID = typeOID
            self.typeModifier = typeModifier
            self.isKey = isKey
        }
    }

    public var id: UInt32
    public var namespace: String
    public var name: String
    /// `d` default (primary key), `n` nothing, `f` full, `i` index.
    public var replicaIdentity: UInt8
    public var columns: [Column]

    public init(id: UInt32, namespace: String, name: String, replicaIdentity: UInt8, columns: [Column]) {
        self.id = id
        self.namespace = namespace
        self.name = name
        self.replicaIdentity = replicaIdentity
        self.columns = columns
    }
}
