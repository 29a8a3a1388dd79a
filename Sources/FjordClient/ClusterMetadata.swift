public import FjordProtocol

/// One snapshot of what a Metadata response said about the cluster: its brokers, the controller,
/// and for each topic the leader, epoch, replicas and ISR of every partition.
///
/// A value: `KafkaCluster` replaces it as a whole on refresh, so a reader never sees a mix of
/// two responses. Partitions are sorted by index and `partitions[i].partition == i` for a
/// topic without error.
public struct ClusterMetadata: Sendable, Equatable {
    public struct Broker: Sendable, Equatable {
        public var id: Int32
        public var host: String
        public var port: Int
        public var rack: String?
    }

    public struct Partition: Sendable, Equatable {
        public var partition: Int32
        public var leader: Int32
        public var leaderEpoch: LeaderEpoch
        public var replicas: [Int32]
        public var isr: [Int32]
        public var error: KafkaError
    }

    public struct Topic: Sendable, Equatable {
        public var name: String
        public var topicID: KafkaUUID
        public var isInternal: Bool
        public var error: KafkaError
        public var partitions: [Partition]
    }

    public var clusterID: String?
    public var controllerID: Int32 = -1
    public var brokers: [Int32: Broker] = [:]
    public var topics: [String: Topic] = [:]

    public init() {}

    init(_ response: MetadataResponse) {
        clusterID = response.clusterId
        controllerID = response.controllerId
        for broker in response.brokers {
            brokers[broker.nodeId] = Broker(id: broker.nodeId, host: broker.host, port: Int(broker.port), rack: broker.rack)
        }
        for topic in response.topics {
            guard let name = topic.name else { continue }
            let partitions = topic.partitions.map {
                Partition(partition: $0.partitionIndex, leader: $0.leaderId, leaderEpoch: LeaderEpoch($0.leaderEpoch),
                          replicas: $0.replicaNodes, isr: $0.isrNodes, error: KafkaError(code: $0.errorCode))
            }.sorted { $0.partition < $1.partition }
            topics[name] = Topic(name: name, topicID: topic.topicId, isInternal: topic.isInternal,
                                 error: KafkaError(code: topic.errorCode), partitions: partitions)
        }
    }

    /// The topic's name for a topic id (KIP-516), as KIP-848 assignments carry ids.
    public func topicName(for id: KafkaUUID) -> String? {
        topics.values.first { $0.topicID == id }?.name
    }
}
