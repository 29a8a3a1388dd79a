/// The type of a config value as DescribeConfigs v3+ reports it (KIP-569; Kafka's
/// `ConfigEntry.ConfigType`, the schema's `ConfigType` field), so tools can show and validate
/// values without knowing every key.
public enum ConfigType: Int8, Sendable {
    case unknown = 0
    case boolean = 1
    case string = 2
    case int = 3
    case short = 4
    case long = 5
    case double = 6
    case list = 7
    case `class` = 8
    case password = 9
}

/// The broker-level keys DescribeConfigs lists besides the topic defaults, with their types and
/// documentation (types as Kafka 4.1's `KafkaConfig` defines them).
enum BrokerConfigCatalog {
    static let entries: [String: (type: ConfigType, documentation: String)] = [
        "node.id": (.int, "The id of this broker (node.id; broker.id is its older name)."),
        "broker.id": (.int, "The id of this broker (an alias of node.id)."),
        "listeners": (.list, "The listeners the broker binds, as NAME://host:port, comma-separated."),
        "advertised.listeners": (.list, "The listeners the broker tells clients to connect to."),
        "log.dirs": (.list, "The directories where the broker keeps its partition logs."),
        "num.partitions": (.int, "The partition count of a topic created without one (auto-creation, CreateTopics with -1)."),
        "default.replication.factor": (.int, "The replication factor of a topic created without one."),
        "auto.create.topics.enable": (.boolean, "Whether Metadata and Produce for an unknown topic create it."),
        "socket.request.max.bytes": (.int, "The largest request frame the broker reads; larger ones close the connection."),
    ]

    /// The type and documentation of a broker key: a catalogued one, or the broker default of a
    /// topic config.
    static func describe(_ key: String) -> (type: ConfigType, documentation: String) {
        if let entry = entries[key] { return entry }
        if let topicKey = TopicConfigs.brokerKeyToTopicKey[key], let definition = TopicConfigs.byName[topicKey] {
            return (definition.type, "The broker default of the topic config \(topicKey): \(definition.documentation)")
        }
        return (.unknown, "")
    }
}
