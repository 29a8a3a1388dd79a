public import FjordStorage

/// Kafka's topic-level configs that Fjord knows: their broker-level default key and how to
/// show the effective value. DescribeConfigs lists these; Create/Alter validate against them.
public enum TopicConfigs {
    public struct Definition: Sendable {
        public var name: String
        /// The broker key that sets the cluster default (`log.retention.ms` for `retention.ms`).
        public var brokerKey: String?
        public var sensitive = false
        /// The effective value when the topic does not override it.
        public var defaultValue: @Sendable (LogConfig) -> String
    }

    public static let definitions: [Definition] = [
        Definition(name: "cleanup.policy", brokerKey: "log.cleanup.policy") { c in
            [c.compactEnabled ? "compact" : nil, c.deleteEnabled ? "delete" : nil].compactMap { $0 }.joined(separator: ",")
        },
        Definition(name: "compression.type", brokerKey: "compression.type") { _ in "producer" },
        Definition(name: "delete.retention.ms", brokerKey: "log.cleaner.delete.retention.ms") { "\($0.deleteRetentionMs)" },
        Definition(name: "file.delete.delay.ms", brokerKey: "log.segment.delete.delay.ms") { "\($0.fileDeleteDelayMs)" },
        Definition(name: "flush.messages", brokerKey: "log.flush.interval.messages") { "\($0.flushMessages)" },
        Definition(name: "flush.ms", brokerKey: "log.flush.interval.ms") { "\($0.flushMs)" },
        Definition(name: "fjord.flush.on.ack", brokerKey: "log.flush.on.ack") { "\($0.flushOnAck)" },
        Definition(name: "fjord.stream.versioning", brokerKey: nil) { "\($0.streamVersioning)" },
        Definition(name: "index.interval.bytes", brokerKey: "log.index.interval.bytes") { "\($0.indexIntervalBytes)" },
        Definition(name: "max.message.bytes", brokerKey: "message.max.bytes") { "\($0.maxMessageBytes)" },
        Definition(name: "message.timestamp.type", brokerKey: "log.message.timestamp.type") { $0.logAppendTime ? "LogAppendTime" : "CreateTime" },
        Definition(name: "min.cleanable.dirty.ratio", brokerKey: "log.cleaner.min.cleanable.ratio") { "\($0.minCleanableDirtyRatio)" },
        Definition(name: "min.compaction.lag.ms", brokerKey: "log.cleaner.min.compaction.lag.ms") { "\($0.minCompactionLagMs)" },
        Definition(name: "min.insync.replicas", brokerKey: "min.insync.replicas") { _ in "1" },
        Definition(name: "preallocate", brokerKey: "log.preallocate") { "\($0.preallocate)" },
        Definition(name: "retention.bytes", brokerKey: "log.retention.bytes") { "\($0.retentionBytes)" },
        Definition(name: "retention.ms", brokerKey: "log.retention.ms") { "\($0.retentionMs)" },
        Definition(name: "segment.bytes", brokerKey: "log.segment.bytes") { "\($0.segmentBytes)" },
        Definition(name: "segment.index.bytes", brokerKey: "log.index.size.max.bytes") { "\($0.segmentIndexBytes)" },
        Definition(name: "segment.ms", brokerKey: "log.roll.ms") { "\($0.segmentMs)" },
        Definition(name: "unclean.leader.election.enable", brokerKey: "unclean.leader.election.enable") { _ in "false" },
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
