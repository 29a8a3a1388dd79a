import Foundation

/// One key as etcd stores it, with the revisions etcd keeps for it.
public struct EtcdKeyValue: Sendable, Equatable {
    public var key: String
    public var value: [UInt8]
    /// The revision of the last creation of this key: a key deleted and put again gets a new one.
    public var createRevision: Int64
    /// The revision of the last change of this key.
    public var modRevision: Int64
    /// How many times the key was put since its creation (1 after the first put).
    public var version: Int64
    /// The lease the key is attached to, or 0.
    public var lease: Int64

    public init(key: String, value: [UInt8], createRevision: Int64, modRevision: Int64, version: Int64, lease: Int64) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
        self.lease = lease
    }

    init(_ kv: Mvccpb_KeyValue) {
        self.init(key: String(decoding: kv.key, as: UTF8.self), value: [UInt8](kv.value), createRevision: kv.createRevision,
                  modRevision: kv.modRevision, version: kv.version, lease: kv.lease)
    }
}

/// A condition of a transaction (etcd's `Compare`) on one key.
public struct EtcdCompare: Sendable {
    public enum Target: Sendable {
        /// The key's create revision; 0 means the key does not exist.
        case createRevision(Int64)
        case modRevision(Int64)
        case version(Int64)
        case value([UInt8])
    }

    public enum Relation: Sendable { case equal, notEqual, greater, less }

    public var key: String
    public var target: Target
    public var relation: Relation

    public init(key: String, _ target: Target, _ relation: Relation = .equal) {
        self.key = key
        self.target = target
        self.relation = relation
    }

    /// The key does not exist.
    public static func absent(_ key: String) -> EtcdCompare { EtcdCompare(key: key, .createRevision(0)) }
    /// The key was last written at `revision` (a compare-and-swap on a value read before).
    public static func unchanged(_ key: String, since revision: Int64) -> EtcdCompare {
        EtcdCompare(key: key, .modRevision(revision))
    }

    var proto: Etcdserverpb_Compare {
        var compare = Etcdserverpb_Compare()
        compare.key = Data(key.utf8)
        switch target {
        case .createRevision(let r):
            compare.target = .create
            compare.targetUnion = .createRevision(r)
        case .modRevision(let r):
            compare.target = .mod
            compare.targetUnion = .modRevision(r)
        case .version(let v):
            compare.target = .version
            compare.targetUnion = .version(v)
        case .value(let v):
            compare.target = .value
            compare.targetUnion = .value(Data(v))
        }
        switch relation {
        case .equal: compare.result = .equal
        case .notEqual: compare.result = .notEqual
        case .greater: compare.result = .greater
        case .less: compare.result = .less
        }
        return compare
    }
}

/// One operation of a transaction branch.
public enum EtcdOperation: Sendable {
    case put(key: String, value: [UInt8], lease: Int64 = 0)
    case delete(key: String)
    /// Deletes every key starting with `prefix`.
    case deletePrefix(String)
    case get(key: String)

    var proto: Etcdserverpb_RequestOp {
        var op = Etcdserverpb_RequestOp()
        switch self {
        case .put(let key, let value, let lease):
            var put = Etcdserverpb_PutRequest()
            put.key = Data(key.utf8)
            put.value = Data(value)
            put.lease = lease
            op.request = .requestPut(put)
        case .delete(let key):
            var delete = Etcdserverpb_DeleteRangeRequest()
            delete.key = Data(key.utf8)
            op.request = .requestDeleteRange(delete)
        case .deletePrefix(let prefix):
            var delete = Etcdserverpb_DeleteRangeRequest()
            delete.key = Data(prefix.utf8)
            delete.rangeEnd = EtcdClient.prefixEnd(prefix)
            op.request = .requestDeleteRange(delete)
        case .get(let key):
            var range = Etcdserverpb_RangeRequest()
            range.key = Data(key.utf8)
            op.request = .requestRange(range)
        }
        return op
    }
}

/// What a transaction did: which branch ran, at which revision, and what its gets read.
public struct EtcdTxnResult: Sendable {
    /// Whether every compare held (the success branch ran).
    public var succeeded: Bool
    /// The store's revision after the transaction.
    public var revision: Int64
    /// The keys read by `.get` operations of the branch that ran, in order.
    public var reads: [[EtcdKeyValue]]
}
