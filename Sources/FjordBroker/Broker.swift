public import FjordMetadata
public import FjordProtocol
public import FjordStorage
import Foundation
public import Logging
import SystemPackage

/// One broker: storage, metadata and request handlers wired together, without any socket.
///
/// `start` opens (and recovers) the data directory, loads the metadata image from
/// `fjord-metadata.json` (created with a new cluster id on first start), makes this broker the
/// leader of every partition, and starts retention/compaction in the background. `shutdown`
/// closes every log and writes the clean-shutdown marker. The server feeds `apis` frames.
public final class Broker: Sendable {
    public static let metadataFileName = "fjord-metadata.json"
    public let config: BrokerConfig
    public let apis: KafkaAPIs
    public let logManager: LogManager
    public let replicaManager: ReplicaManager
    let metadata: any MetadataStore
    let logger: Logger
    /// Periodic work cancelled at shutdown: the metrics sample and, in a cluster, the leader's
    /// ISR shrink check.
    let backgroundTasks: [Task<Void, Never>]

    /// Milliseconds since the epoch.
    public static let systemClock: @Sendable () -> Int64 = {
        Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
    }

    init(config: BrokerConfig, apis: KafkaAPIs, logManager: LogManager, replicaManager: ReplicaManager,
         metadata: any MetadataStore, logger: Logger, backgroundTasks: [Task<Void, Never>] = []) {
        self.backgroundTasks = backgroundTasks + [Task { [apis] in await apis.sampleMetrics() }]
        self.config = config
        self.apis = apis
        self.logManager = logManager
        self.replicaManager = replicaManager
        self.metadata = metadata
        self.logger = logger
    }

    public static func start(config: BrokerConfig, logger: Logger, clock: @escaping @Sendable () -> Int64 = systemClock) async throws -> Broker {
        let directory = FilePath(config.logDirs[0])
        if config.logDirs.count > 1 {
            logger.warning("several log.dirs given; Fjord uses the first", metadata: ["log.dirs": "\(config.logDirs)"])
        }
        return try await startSingleNode(config: config, directory: directory, logger: logger, clock: clock)
    }

    /// Starts a broker of a cluster whose metadata lives in `store` (etcd, already registered
    /// and following): the data directory is opened and recovered, partitions of topics the
    /// cluster deleted are removed, and from then on every image the store publishes decides
    /// which partitions this broker hosts and which of them it leads. Partitions it follows
    /// replicate from their leaders through `leaderEndpoints`.
    public static func start(config: BrokerConfig, cluster store: any MetadataStore, leaderEndpoints: @escaping LeaderEndpointFactory,
                             logger: Logger, clock: @escaping @Sendable () -> Int64 = systemClock) async throws -> Broker {
        let directory = FilePath(config.logDirs[0])
        let now = clock()
        let image = store.image
        let (logManager, loaded) = try LogManager.open(directory: directory, nowMs: now,
                                                       cleanerDedupeBufferBytes: config.cleanerDedupeBufferBytes,
                                                       producerIDExpirationMs: config.producerIDExpirationMs) { topic in
            config.logConfig(dynamicBrokerConfigs: image.brokerConfigs, topicConfigs: image.topics[topic]?.configs ?? [:])
        }
        do {
            try claimDataDirectory(directory, clusterID: image.clusterID, nodeID: config.nodeID)
        } catch {
            try? logManager.shutdown(nowMs: now)
            throw error
        }
        for log in loaded {
            for problem in log.report.problems {
                logger.warning("log recovery", metadata: ["partition": "\(log.topicPartition)", "problem": "\(problem)"])
            }
            let topic = image.topics[log.topicPartition.topic]
            if topic == nil || log.topicPartition.partition >= topic!.partitionCount || (log.topicID != nil && log.topicID != topic!.topicID) {
                logger.info("removing partition of a deleted topic", metadata: ["partition": "\(log.topicPartition)"])
                try logManager.deleteLog(log.topicPartition, nowMs: now)
            }
        }
        let replicaManager = ReplicaManager(logManager: logManager, nodeID: config.nodeID)
        let apis = KafkaAPIs(config: config, metadata: store, replicaManager: replicaManager, logger: logger, clock: clock,
                             leaderEndpoints: leaderEndpoints)
        for topic in image.topics.values.sorted(by: { $0.name < $1.name }) {
            try apis.applyPartitionRegistrations(of: topic)
        }
        await apis.groupCoordinator.load()
        await apis.groupCoordinator.startExpiryChecks()
        store.onChange { [weak apis] image in apis?.metadataChanged(image) }
        // An image published between the first apply and the registration above.
        apis.metadataChanged(store.image)
        startMaintenance(logManager, config: config, logger: logger, clock: clock)
        logger.info("joined the cluster", metadata: [
            "brokers": "\(store.image.brokers.map(\.nodeID).sorted())", "controller": "\(store.image.controllerID)",
            "partitions": "\(replicaManager.allPartitions.count)",
        ])
        let isrExpiration = Task { [apis] in await apis.expireLaggingReplicas() }
        return Broker(config: config, apis: apis, logManager: logManager, replicaManager: replicaManager, metadata: store, logger: logger,
                      backgroundTasks: [isrExpiration])
    }

    /// The data directory's `meta.properties` (Kafka's name and keys) ties it to one cluster and
    /// node: a directory of another cluster (a wrong `--cluster` prefix, or an etcd that lost its
    /// data) is refused before anything in it is deleted as "a topic the cluster does not know".
    static func claimDataDirectory(_ directory: FilePath, clusterID: String, nodeID: Int32) throws {
        let path = directory.appending("meta.properties")
        if let text = try? CheckpointFile.read(path) {
            var values: [String: String] = [:]
            for line in text.split(separator: "\n") where !line.hasPrefix("#") {
                let parts = line.split(separator: "=", maxSplits: 1).map(String.init)
                if parts.count == 2 { values[parts[0]] = parts[1] }
            }
            if let theirs = values["cluster.id"], theirs != clusterID {
                throw ConfigError("\(directory) belongs to cluster \(theirs), but etcd holds cluster \(clusterID): refusing to start "
                                  + "(a wrong --cluster prefix, or an etcd that lost its data?)")
            }
            if let theirs = values["node.id"], theirs != String(nodeID) {
                throw ConfigError("\(directory) belongs to node \(theirs), not \(nodeID): refusing to start")
            }
            return
        }
        try CheckpointFile.writeAtomically("version=1\ncluster.id=\(clusterID)\nnode.id=\(nodeID)\n", to: path)
    }

    private static func startSingleNode(config: BrokerConfig, directory: FilePath, logger: Logger,
                                        clock: @escaping @Sendable () -> Int64) async throws -> Broker {
        let metadataPath = directory.appending(metadataFileName)
        var image: MetadataImage
        // LogManager.open creates the directory; the metadata file may not exist yet.
        if let text = try? CheckpointFile.read(metadataPath), let data = text.data(using: .utf8) {
            do {
                image = try JSONDecoder().decode(MetadataImage.self, from: data)
            } catch {
                throw ConfigError("\(metadataPath): cannot read the metadata image: \(error)")
            }
        } else {
            image = MetadataImage(clusterID: KafkaUUID.random().description, controllerID: config.nodeID)
        }
        image.brokers = [config.registration]
        image.controllerID = config.nodeID

        let now = clock()
        let snapshot = image
        let (logManager, loaded) = try LogManager.open(directory: directory, nowMs: now,
                                                       cleanerDedupeBufferBytes: config.cleanerDedupeBufferBytes,
                                                       producerIDExpirationMs: config.producerIDExpirationMs) { topic in
            config.logConfig(dynamicBrokerConfigs: snapshot.brokerConfigs, topicConfigs: snapshot.topics[topic]?.configs ?? [:])
        }
        for log in loaded where !log.report.problems.isEmpty || log.report.truncatedBytes > 0 {
            for problem in log.report.problems {
                logger.warning("log recovery", metadata: ["partition": "\(log.topicPartition)", "problem": "\(problem)"])
            }
        }
        logger.info("opened log directory", metadata: [
            "dir": "\(directory)", "partitions": "\(loaded.count)",
            "recovered_segments": "\(loaded.reduce(0) { $0 + $1.report.recoveredSegments })",
        ])

        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let store = LocalMetadataStore(image: image) { next in
            let data = try encoder.encode(next)
            try CheckpointFile.writeAtomically(String(decoding: data, as: UTF8.self), to: metadataPath)
        }
        // Persist the (possibly new) image now, so the cluster id is stable from the first start.
        try store.alterBrokerConfigs(changes: [:])

        let replicaManager = ReplicaManager(logManager: logManager, nodeID: config.nodeID)
        // Partitions of topics deleted while the broker was down are removed; the rest are led here.
        let topics = store.image.topics
        for log in loaded {
            let topic = topics[log.topicPartition.topic]
            if topic == nil || log.topicPartition.partition >= topic!.partitionCount
                || (log.topicID != nil && log.topicID != topic!.topicID)
            {
                logger.info("removing partition of a deleted topic", metadata: ["partition": "\(log.topicPartition)"])
                try logManager.deleteLog(log.topicPartition, nowMs: now)
            }
        }
        let apis = KafkaAPIs(config: config, metadata: store, replicaManager: replicaManager, logger: logger, clock: clock)
        if store.image.topics[GroupCoordinator.topic] == nil {
            // The compacted internal topic of the group coordinator, as Kafka creates it.
            _ = try store.createTopic(name: GroupCoordinator.topic, partitions: config.offsetsTopicPartitions, replicationFactor: 1,
                                      configs: ["cleanup.policy": "compact", "segment.bytes": "104857600"])
        }
        for topic in store.image.topics.values.sorted(by: { $0.name < $1.name }) {
            try replicaManager.becomeLeader(topic: topic, config: apis.logConfig(for: topic), nowMs: now)
        }
        // Groups and offsets are loaded before the server answers anything.
        await apis.groupCoordinator.load()
        await apis.groupCoordinator.startExpiryChecks()
        startMaintenance(logManager, config: config, logger: logger, clock: clock)
        return Broker(config: config, apis: apis, logManager: logManager, replicaManager: replicaManager,
                      metadata: store, logger: logger)
    }

    /// Retention and compaction in the background, with what they did logged.
    private static func startMaintenance(_ logManager: LogManager, config: BrokerConfig, logger: Logger,
                                         clock: @escaping @Sendable () -> Int64) {
        logManager.startBackgroundTasks(intervalMs: Int(config.retentionCheckIntervalMs), clock: clock) { report in
            for (partition, count) in report.deletedSegments {
                logger.info("retention deleted segments", metadata: ["partition": "\(partition)", "segments": "\(count)"])
            }
            for (partition, stats) in report.cleaned {
                logger.info("compacted", metadata: [
                    "partition": "\(partition)", "segments": "\(stats.segmentsCleaned)",
                    "bytes_before": "\(stats.bytesBefore)", "bytes_after": "\(stats.bytesAfter)",
                ])
            }
            for error in report.errors { logger.error("log maintenance failed", metadata: ["error": "\(error)"]) }
        }
    }

    /// This broker's partitions it leads, by topic (for controlled shutdown).
    public var ledPartitions: [TopicPartition] {
        replicaManager.allPartitions.filter(\.isLeader).map(\.topicPartition)
    }

    /// Closes every log (flush, trim indexes, snapshot producer state) and writes the
    /// clean-shutdown marker.
    public func shutdown() async throws {
        for task in backgroundTasks { task.cancel() }
        await apis.replicaFetchers?.shutdown()
        apis.coordinatorLeadership.finish()
        await apis.groupCoordinator.stop()
        try logManager.shutdown(nowMs: Self.systemClock())
        logger.info("log directory closed cleanly")
    }
}
