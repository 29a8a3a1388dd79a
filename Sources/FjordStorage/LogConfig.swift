/// The storage-relevant topic configuration, with Kafka's names and defaults.
///
/// The broker builds one from broker defaults (`log.*`) overlaid with topic overrides and hands
/// it to the log; a changed config is applied with `UnifiedLog.updateConfig(_:)` without a restart.
public struct LogConfig: Sendable, Equatable {
    /// `segment.bytes`: roll the active segment when an append would pass this size.
    public var segmentBytes: Int = 1 << 30
    /// `segment.ms`: roll the active segment when it is older than this (by its first timestamp).
    public var segmentMs: Int64 = 7 * 24 * 3600 * 1000
    /// `segment.index.bytes`: preallocated size of each index file.
    public var segmentIndexBytes: Int = 10 * 1024 * 1024
    /// `index.interval.bytes`: bytes appended between two offset-index entries.
    public var indexIntervalBytes: Int = 4096
    /// `max.message.bytes`: the largest record batch accepted.
    public var maxMessageBytes: Int = 1_048_588
    /// `retention.ms`: delete closed segments whose newest timestamp is older; -1 keeps forever.
    public var retentionMs: Int64 = 7 * 24 * 3600 * 1000
    /// `retention.bytes`: delete the oldest closed segments while the log is larger; -1 is unbounded.
    public var retentionBytes: Int64 = -1
    /// `cleanup.policy` contains `delete`.
    public var deleteEnabled: Bool = true
    /// `cleanup.policy` contains `compact`.
    public var compactEnabled: Bool = false
    /// `delete.retention.ms`: how long tombstones survive compaction.
    public var deleteRetentionMs: Int64 = 24 * 3600 * 1000
    /// `min.compaction.lag.ms`: records younger than this are never compacted.
    public var minCompactionLagMs: Int64 = 0
    /// `min.cleanable.dirty.ratio`: compact when the dirty share of the log exceeds this.
    public var minCleanableDirtyRatio: Double = 0.5
    /// `flush.messages`: fsync after this many messages (Int64.max: leave it to the OS).
    public var flushMessages: Int64 = Int64.max
    /// `flush.ms`: fsync when the last flush is older than this.
    public var flushMs: Int64 = Int64.max
    /// `log.flush.on.ack` (Fjord): acknowledge appends only once fsynced, with group commit.
    public var flushOnAck: Bool = false
    /// `message.timestamp.type` is LogAppendTime (else CreateTime).
    public var logAppendTime: Bool = false
    /// `file.delete.delay.ms`: how long `.deleted` files wait before removal.
    public var fileDeleteDelayMs: Int64 = 60_000
    /// `fjord.stream.versioning`: each record key is a stream with versions 0, 1, 2, …; appends
    /// may carry an expected version (`fjord-expected-version` header) that the log enforces.
    public var streamVersioning: Bool = false
    /// `preallocate`: preallocate segment files (not used on Linux page-cache writes; kept for parity).
    public var preallocate: Bool = false

    public init() {}

    /// Applies Kafka topic-config keys; returns the keys it did not understand.
    ///
    /// Throws `StorageError.invalidConfig` with a message naming the key when a value does not parse.
    @discardableResult
    public mutating func apply(_ configs: [String: String]) throws(StorageError) -> [String] {
        var unknown: [String] = []
        for (key, value) in configs.sorted(by: { $0.key < $1.key }) {
            switch key {
            case "segment.bytes": segmentBytes = try Self.int(key, value, min: 14, max: Int(Int32.max))
            case "segment.ms": segmentMs = Int64(try Self.int(key, value, min: 1))
            case "segment.index.bytes": segmentIndexBytes = try Self.int(key, value, min: 8, max: Int(Int32.max))
            case "index.interval.bytes": indexIntervalBytes = try Self.int(key, value, min: 0, max: Int(Int32.max))
            case "max.message.bytes": maxMessageBytes = try Self.int(key, value, min: 0, max: Int(Int32.max))
            case "retention.ms": retentionMs = Int64(try Self.int(key, value, min: -1))
            case "retention.bytes": retentionBytes = Int64(try Self.int(key, value, min: -1))
            case "delete.retention.ms": deleteRetentionMs = Int64(try Self.int(key, value, min: 0))
            case "min.compaction.lag.ms": minCompactionLagMs = Int64(try Self.int(key, value, min: 0))
            case "flush.messages": flushMessages = Int64(try Self.int(key, value, min: 1))
            case "flush.ms": flushMs = Int64(try Self.int(key, value, min: 0))
            case "file.delete.delay.ms": fileDeleteDelayMs = Int64(try Self.int(key, value, min: 0))
            case "min.cleanable.dirty.ratio":
                guard let ratio = Double(value), ratio >= 0, ratio <= 1 else {
                    throw StorageError.invalidConfig("\(key)=\(value): expected a number between 0 and 1")
                }
                minCleanableDirtyRatio = ratio
            case "cleanup.policy":
                let parts = Set(value.split(separator: ",").map { $0.trimmingCharacters() })
                guard !parts.isEmpty, parts.isSubset(of: ["delete", "compact"]) else {
                    throw StorageError.invalidConfig("\(key)=\(value): expected delete, compact or compact,delete")
                }
                deleteEnabled = parts.contains("delete")
                compactEnabled = parts.contains("compact")
            case "message.timestamp.type":
                switch value {
                case "CreateTime": logAppendTime = false
                case "LogAppendTime": logAppendTime = true
                default: throw StorageError.invalidConfig("\(key)=\(value): expected CreateTime or LogAppendTime")
                }
            case "log.flush.on.ack", "fjord.flush.on.ack":
                guard let flag = Bool(value) else { throw StorageError.invalidConfig("\(key)=\(value): expected true or false") }
                flushOnAck = flag
            case "fjord.stream.versioning":
                guard let flag = Bool(value) else { throw StorageError.invalidConfig("\(key)=\(value): expected true or false") }
                streamVersioning = flag
            case "preallocate":
                guard let flag = Bool(value) else { throw StorageError.invalidConfig("\(key)=\(value): expected true or false") }
                preallocate = flag
            default:
                unknown.append(key)
            }
        }
        if streamVersioning && compactEnabled {
            throw StorageError.invalidConfig(
                "fjord.stream.versioning=true cannot be combined with cleanup.policy=compact: compaction would remove events of a stream")
        }
        return unknown
    }

    /// `max` bounds keys Kafka types as int (sizes), so that sums with them cannot overflow.
    private static func int(_ key: String, _ value: String, min: Int, max: Int = Int.max) throws(StorageError) -> Int {
        guard let number = Int(value.trimmingCharacters()), number >= min, number <= max else {
            throw StorageError.invalidConfig(max == Int.max ? "\(key)=\(value): expected an integer ≥ \(min)"
                                                            : "\(key)=\(value): expected an integer between \(min) and \(max)")
        }
        return number
    }
}

extension StringProtocol {
    func trimmingCharacters() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first == " " || first == "\t" { scalars.removeFirst() }
        while let last = scalars.last, last == " " || last == "\t" { scalars.removeLast() }
        return String(scalars)
    }
}
