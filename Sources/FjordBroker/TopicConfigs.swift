public import FjordStorage

/// Kafka's topic-level configs that Fjord knows: their broker-level default key and how to
/// show the effective value. DescribeConfigs lists these; Create/Alter validate against them.
public enum TopicConfigs {
    public struct Definition: Sendable {
        public var name: String
        /// The broker key that sets the cluster default (`log.retention.ms` for `retention.ms`).
        public var brokerKey: String?
        public var sensitive = false
        /// The value's type, as DescribeConfigs reports it (Kafka's `LogConfig` types).
        public var type: ConfigType
        /// One sentence, for DescribeConfigs' `include_documentation`.
        public var documentation: String
        /// The effective value when the topic does not override it.
        public var defaultValue: @Sendable (LogConfig) -> String
    }

    public static let definitions: [Definition] = [
        Definition(name: "cleanup.policy", brokerKey: "log.cleanup.policy", type: .list, documentation: "Whether old segments are deleted (delete), compacted to the latest value per key (compact), or both.") { c in
            [c.compactEnabled ? "compact" : nil, c.deleteEnabled ? "delete" : nil].compactMap { $0 }.joined(separator: ",")
        },
        Definition(name: "compression.type", brokerKey: "compression.type", type: .string, documentation: "How batches are stored; Fjord keeps them as producers compressed them (producer).") { _ in "producer" },
        Definition(name: "delete.retention.ms", brokerKey: "log.cleaner.delete.retention.ms", type: .long, documentation: "How long a compacted topic keeps tombstones, so consumers can see deletions.") { "\($0.deleteRetentionMs)" },
        Definition(name: "file.delete.delay.ms", brokerKey: "log.segment.delete.delay.ms", type: .long, documentation: "How long a deleted segment's files stay on disk before removal.") { "\($0.fileDeleteDelayMs)" },
        Definition(name: "flush.messages", brokerKey: "log.flush.interval.messages", type: .long, documentation: "Appended messages after which the log is fsynced.") { "\($0.flushMessages)" },
        Definition(name: "flush.ms", brokerKey: "log.flush.interval.ms", type: .long, documentation: "Milliseconds after which unflushed appends are fsynced.") { "\($0.flushMs)" },
        Definition(name: "fjord.flush.on.ack", brokerKey: "log.flush.on.ack", type: .boolean, documentation: "Fjord: acknowledge produce requests only once their records are fsynced (group commit).") { "\($0.flushOnAck)" },
        Definition(name: "fjord.stream.versioning", brokerKey: nil, type: .boolean, documentation: "Fjord: index records by key as event streams and enforce expected versions on append.") { "\($0.streamVersioning)" },
        Definition(name: "index.interval.bytes", brokerKey: "log.index.interval.bytes", type: .int, documentation: "Bytes of records between two offset index entries.") { "\($0.indexIntervalBytes)" },
        Definition(name: "max.message.bytes", brokerKey: "message.max.bytes", type: .int, documentation: "The largest record batch the topic accepts.") { "\($0.maxMessageBytes)" },
        Definition(name: "message.timestamp.type", brokerKey: "log.message.timestamp.type", type: .string, documentation: "CreateTime (the producer's timestamps) or LogAppendTime (the broker's).") { $0.logAppendTime ? "LogAppendTime" : "CreateTime" },
        Definition(name: "min.cleanable.dirty.ratio", brokerKey: "log.cleaner.min.cleanable.ratio", type: .double, documentation: "The share of a compacted log that must be dirty before it is cleaned.") { "\($0.minCleanableDirtyRatio)" },
        Definition(name: "min.compaction.lag.ms", brokerKey: "log.cleaner.min.compaction.lag.ms", type: .long, documentation: "The minimum age of a record before compaction may remove it.") { "\($0.minCompactionLagMs)" },
        Definition(name: "min.insync.replicas", brokerKey: "min.insync.replicas", type: .int, documentation: "The in-sync replicas an acks=all produce needs.") { _ in "1" },
        Definition(name: "preallocate", brokerKey: "log.preallocate", type: .boolean, documentation: "Whether new segment files are preallocated.") { "\($0.preallocate)" },
        Definition(name: "retention.bytes", brokerKey: "log.retention.bytes", type: .long, documentation: "The largest size a partition's log may reach before old segments are deleted (-1: no limit).") { "\($0.retentionBytes)" },
        Definition(name: "retention.ms", brokerKey: "log.retention.ms", type: .long, documentation: "How long records are kept before their segment is deleted (-1: forever).") { "\($0.retentionMs)" },
        Definition(name: "segment.bytes", brokerKey: "log.segment.bytes", type: .int, documentation: "The size at which the active segment rolls.") { "\($0.segmentBytes)" },
        Definition(name: "segment.index.bytes", brokerKey: "log.index.size.max.bytes", type: .int, documentation: "The size of each segment's offset and time index files.") { "\($0.segmentIndexBytes)" },
        Definition(name: "segment.ms", brokerKey: "log.roll.ms", type: .long, documentation: "The age at which the active segment rolls even if not full.") { "\($0.segmentMs)" },
        Definition(name: "unclean.leader.election.enable", brokerKey: "unclean.leader.election.enable", type: .boolean, documentation: "Whether a replica outside the ISR may become leader, losing records.") { _ in "false" },
    ]

    static let byName: [String: Definition] = Dictionary(uniqueKeysWithValues: definitions.map { ($0.name, $0) })

    /// Broker key → topic key, for dynamic broker defaults.
    static let brokerKeyToTopicKey: [String: String] = {
        var map: [String: String] = [:]
        for definition in definitions {
            if let key = definition.brokerKey { map[key] = definition.name }
        }
        return map
    }()

    /// Checks topic config overrides; returns an error message naming the first bad one.
    public static func validate(_ configs: [String: String]) -> String? {
        for (key, value) in configs.sorted(by: { $0.key < $1.key }) {
            guard byName[key] != nil else { return "Unknown topic config name: \(key)" }
            switch key {
            case "compression.type":
                if value != "producer" {
                    return "compression.type=\(value): Fjord stores batches as producers compress them; only 'producer' is supported"
                }
            case "min.insync.replicas":
                guard let n = Int(value), n >= 1 else { return "min.insync.replicas=\(value): expected an integer ≥ 1" }
            case "unclean.leader.election.enable":
                guard Bool(value) != nil else { return "\(key)=\(value): expected true or false" }
            default:
                var scratch = LogConfig()
                do {
                    try scratch.apply([key: value])
                } catch {
                    return "\(error)"
                }
            }
        }
        // Then together: some combinations are invalid (stream versioning with compaction).
        var combined = LogConfig()
        let storageKeys = configs.filter { !["compression.type", "min.insync.replicas", "unclean.leader.election.enable"].contains($0.key) }
        do {
            try combined.apply(storageKeys)
        } catch {
            return "\(error)"
        }
        return nil
    }
}
