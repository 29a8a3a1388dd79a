public import FjordProtocol

/// One topic as the cluster knows it.
public struct TopicMetadata: Sendable, Equatable, Codable {
    public var name: String
    /// Kafka's topic id, in its base64 text form.
    public var topicIDText: String
    public var partitionCount: Int32
    public var replicationFactor: Int16
    /// Topic-level config overrides (Kafka key names), e.g. `retention.ms`.
    public var configs: [String: String]

    public var topicID: KafkaUUID { KafkaUUID(topicIDText) ?? .zero }

    public init(name: String, topicID: KafkaUUID, partitionCount: Int32, replicationFactor: Int16, configs: [String: String]) {
        self.name = name
        self.topicIDText = topicID.description
        self.partitionCount = partitionCount
        self.replicationFactor = replicationFactor
        self.configs = configs
    }
}

/// A broker's advertised endpoint.
public struct BrokerRegistration: Sendable, Equatable, Codable {
    public var nodeID: Int32
    public var host: String
    public var port: Int32
    public var rack: String?

    public init(nodeID: Int32, host: String, port: Int32, rack: String? = nil) {
        self.nodeID = nodeID
        self.host = host
        self.port = port
        self.rack = rack
    }
}

/// An immutable snapshot of cluster metadata: what Kafka calls the metadata image.
///
/// Every change produces a new image with a higher `epoch`. The broker reads images; only a
/// `MetadataStore` writes them. Invariants: topic names are unique; topic ids are unique and
/// never zero; partition counts only grow.
public struct MetadataImage: Sendable, Equatable, Codable {
    public var clusterID: String
    public var controllerID: Int32
    public var epoch: Int64
    public var brokers: [BrokerRegistration]
    public var topics: [String: TopicMetadata]
    /// Dynamic broker-level config overrides (`AlterConfigs` on the broker resource).
    public var brokerConfigs: [String: String]
    /// The first producer id not yet handed out (Kafka's producer-id block allocation).
    public var nextProducerID: Int64?

    public init(clusterID: String, controllerID: Int32, epoch: Int64 = 0, brokers: [BrokerRegistration] = [],
                topics: [String: TopicMetadata] = [:], brokerConfigs: [String: String] = [:]) {
        self.clusterID = clusterID
        self.controllerID = controllerID
        self.epoch = epoch
        self.brokers = brokers
        self.topics = topics
        self.brokerConfigs = brokerConfigs
    }

    public func topic(id: KafkaUUID) -> TopicMetadata? {
        topics.values.first { $0.topicID == id }
    }
}
