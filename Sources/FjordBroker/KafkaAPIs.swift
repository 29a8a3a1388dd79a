public import FjordMetadata
import FjordProtocol
import FjordStorage
public import Logging
public import NIOCore
import Synchronization

/// The broker's request handlers (Kafka's `KafkaApis`): decoded requests in, encoded responses
/// out. No sockets: the server hands in a frame and writes back the reply's parts.
///
/// Requests on one connection are handled one at a time by the server (Kafka's per-connection
/// ordering); handlers for different connections run concurrently and share state only through
/// the thread-safe `ReplicaManager`, `MetadataStore` and `LogManager`.
public final class KafkaAPIs: Sendable {
    let metadata: any MetadataStore
    let replicaManager: ReplicaManager
    let logger: Logger
    let clock: @Sendable () -> Int64
    let fetchSessions = FetchSessionCache()
    /// Request, topic and replication metrics (no-ops unless the process bootstrapped a backend).
    public let metrics = BrokerMetrics()
    let groupCoordinator: GroupCoordinator
    /// Whether this broker is one of a cluster's (its metadata on etcd) rather than the single
    /// node; fixed at start (`fjord.cluster`).
    let clustered: Bool
    /// Leadership changes of `__consumer_offsets` partitions, handed to the coordinator in order.
    let coordinatorLeadership: AsyncStream<(Int32, Bool)>.Continuation
    /// Client quotas' rates and throttles.
    let quotas: ClientQuotaManager
    /// Whether requests are checked against the ACLs (`authorizer.class.name`); fixed at start.
    let authorizerEnabled: Bool
    /// The authorizer built from the last image it was asked for.
    let authorizerCache = Mutex(AuthorizerCache())
    /// One image applied at a time, never an older after a newer (`metadataChanged`).
    private let applyingImage = Mutex<Int64>(-1)
    private let state: Mutex<State>

    struct State {
        var config: BrokerConfig
        var producerIDs: ClosedRange<Int64>? = nil
        var nextProducerID: Int64 = 0
        /// The config inputs (topic overrides, dynamic broker configs) last applied to each
        /// topic's logs, in a cluster.
        var appliedConfigs: [String: [String: String]] = [:]
        var appliedBrokerConfigs: [String: String] = [:]
    }

    /// The followers' fetchers, in a cluster whose broker was given a way to reach leaders.
    let replicaFetchers: ReplicaFetcherManager?

    public init(config: BrokerConfig, metadata: any MetadataStore, replicaManager: ReplicaManager, logger: Logger,
                clock: @escaping @Sendable () -> Int64, leaderEndpoints: LeaderEndpointFactory? = nil) {
        self.metadata = metadata
        self.replicaManager = replicaManager
        self.logger = logger
        self.clock = clock
        self.state = Mutex(State(config: config))
        self.clustered = config.cluster != nil
        self.authorizerEnabled = config.authorizerEnabled
        self.quotas = ClientQuotaManager(settings: .init(windowCount: config.quotaWindowCount, windowMs: config.quotaWindowMs))
        self.groupCoordinator = GroupCoordinator(
            settings: .init(partitions: config.offsetsTopicPartitions, initialRebalanceDelayMs: config.groupInitialRebalanceDelayMs,
                            minSessionTimeoutMs: config.groupMinSessionTimeoutMs, maxSessionTimeoutMs: config.groupMaxSessionTimeoutMs,
                            maxMetadataBytes: config.offsetMetadataMaxBytes, maxGroupSize: config.groupMaxSize,
                            offsetsRetentionMs: config.offsetsRetentionMs,
                            consumerHeartbeatIntervalMs: config.groupConsumerHeartbeatIntervalMs,
                            consumerSessionTimeoutMs: config.groupConsumerSessionTimeoutMs),
            replicaManager: replicaManager, logger: logger, clock: clock, metadataImage: { [metadata] in metadata.image })
        LogManager.observeFlushes { [metrics] duration in metrics.logFlushed(duration) }
        let (leadership, continuation) = AsyncStream.makeStream(of: (Int32, Bool).self)
        self.coordinatorLeadership = continuation
        if clustered, let leaderEndpoints {
            let settings = ReplicaFetcherManager.Settings(
                maxWaitMs: config.replicaFetchWaitMaxMs, minBytes: 1, responseMaxBytes: config.replicaFetchResponseMaxBytes,
                partitionMaxBytes: config.replicaFetchMaxBytes, backoffMs: config.replicaFetchBackoffMs)
            self.replicaFetchers = ReplicaFetcherManager(nodeID: config.nodeID, settings: settings, connect: leaderEndpoints,
                                                         broker: { [metadata] in metadata.image.broker($0) }, logger: logger, clock: clock)
        } else {
            self.replicaFetchers = nil
        }
        Task { [groupCoordinator] in
            for await (index, isLeader) in leadership {
                await groupCoordinator.partitionLeadershipChanged(index, isLeader: isLeader)
            }
        }
    }

    // MARK: ISR changes

    /// Asks the controller for an ISR change this leader decided on (Kafka's AlterPartition),
    /// conditional on the epochs it was decided at; the partition may propose again once the
    /// image shows the answer or the request timed out.
    func alterISR(_ partition: Partition, _ change: Partition.ISRChange, removed: [Int32] = []) {
        let tp = partition.topicPartition
        let before = partition.inSyncReplicas
        metrics.isrChanged(expanded: removed.isEmpty)
        logger.info(removed.isEmpty ? "ISR expand" : "ISR shrink", metadata: [
            "partition": "\(tp)", "from": "\(before)", "to": "\(change.isr)", "leader_epoch": "\(change.leaderEpoch)",
            "partition_epoch": "\(change.partitionEpoch)",
        ])
        let timeoutMs = Int64(config.replicaLagTimeMaxMs)
        Task { [metadata, logger] in
            do {
                try await metadata.alterPartition(topic: tp.topic, partition: tp.partition, leaderEpoch: change.leaderEpoch,
                                                  partitionEpoch: change.partitionEpoch, isr: change.isr,
                                                  timeout: .milliseconds(Swift.max(timeoutMs, 1000)))
            } catch {
                logger.warning("AlterPartition was not applied", metadata: ["partition": "\(tp)", "isr": "\(change.isr)", "error": "\(error)"])
                // As Kafka's AlterPartitionManager: a refused or failed change is retried after a
                // backoff, not on the next follower fetch (which comes at once and would spin).
                try? await Task.sleep(for: .milliseconds(500))
            }
            partition.isrChangeFinished(change)
        }
    }

    /// Samples the replica manager's gauges every 2 s (and once at once) until cancelled.
    func sampleMetrics() async {
        while !Task.isCancelled {
            metrics.sample(replicaManager.allPartitions)
            // Consumer lag as this coordinator sees it: the partition's high watermark (when a
            // replica is here) minus the group's committed offset.
            var lags: [(group: String, partition: TopicPartition, lag: Int64)] = []
            for entry in await groupCoordinator.allCommittedOffsets() {
                guard let hosted = replicaManager.partition(entry.partition) else { continue }
                lags.append((entry.group, entry.partition, Swift.max(0, hosted.log.highWatermark.offset.rawValue - entry.offset)))
            }
            metrics.consumerLag(lags)
            metrics.sampleLogs(replicaManager.allPartitions)
            let (groups, rebalances) = await groupCoordinator.groupStats()
            metrics.sampleGroups(groups, rebalances: rebalances)
            try? await Task.sleep(for: .seconds(2))
        }
    }

    /// Every `replica.lag.time.max.ms / 2`, the partitions this broker leads drop the followers
    /// that have not caught up within `replica.lag.time.max.ms` (Kafka's `isr-expiration` task).
    /// Runs until the task is cancelled.
    func expireLaggingReplicas() async {
        while !Task.isCancelled {
            let lagMaxMs = Int64(config.replicaLagTimeMaxMs)
            try? await Task.sleep(for: .milliseconds(Swift.max(lagMaxMs / 2, 50)))
            let now = clock()
            for partition in replicaManager.allPartitions where partition.isLeader {
                guard let (change, removed) = partition.shrinkOutOfSyncReplicas(nowMs: now, lagMaxMs: lagMaxMs) else { continue }
                alterISR(partition, change, removed: removed)
            }
        }
    }

    var config: BrokerConfig { state.withLock { $0.config } }

    /// Whether the broker serves what it should (`/ready`): its logs are loaded (true once this
    /// object exists); in a cluster, it is registered, and it hosts and leads every partition
    /// the metadata names it leader of. On a single node it leads every hosted partition.
    public var isReady: Bool {
        guard clustered else { return true }
        let image = metadata.image
        let nodeID = config.nodeID
        guard image.broker(nodeID) != nil else { return false }
        for topic in image.topics.values {
            for index in 0..<topic.partitionCount {
                guard let registration = image.partition(topic.name, index), registration.leader == nodeID else { continue }
                guard let hosted = replicaManager.partition(TopicPartition(topic: topic.name, partition: index)), hosted.isLeader else {
                    return false
                }
            }
        }
        return true
    }

    /// Records the ports the server bound: a listener configured with port 0 advertises the port
    /// the OS chose (clients must be told a port they can connect to).
    public func listenersBound(_ ports: [Int]) {
        state.withLock { s in
            for (index, port) in ports.enumerated() where index < s.config.listeners.count && s.config.listeners[index].port == 0 {
                s.config.listeners[index].port = port
            }
        }
    }

    /// Takes the next id of the reserved producer-id block, if any is left.
    func takeProducerID() -> Int64? {
        state.withLock { s in
            guard let block = s.producerIDs, s.nextProducerID <= block.upperBound else { return nil }
            defer { s.nextProducerID += 1 }
            return s.nextProducerID
        }
    }

    func installProducerIDs(_ block: ClosedRange<Int64>) {
        state.withLock { s in
            s.producerIDs = block
            s.nextProducerID = block.lowerBound
        }
    }

    // MARK: Dispatch

    /// Handles one request frame (the bytes after the size prefix) of a connection on the
    /// first listener (tests and in-process callers).
    public func handle(_ frame: ByteBuffer) async -> BrokerReply {
        await handle(frame, connection: ClientConnection(listener: config.listeners[0], clientHost: ""))
    }

    /// Whether the request in `frame` may start while earlier requests of its connection that
    /// admitted it early (see `handle`) still wait for their answers: only a Produce does, so
    /// produce requests pipeline with each other and every other request sees what came before.
    public static func joinsProducePipeline(_ frame: ByteBuffer) -> Bool {
        frame.getInteger(at: frame.readerIndex, as: Int16.self) == APIKey.produce.rawValue
    }

    /// Handles one request frame (the bytes after the size prefix) of `connection`, read at
    /// `receivedAt` (for the request-queue-time metric). `admitNext`, when given, is called
    /// once the connection may start its next request before this one is answered: a Produce
    /// calls it when its records are appended, before waiting for replication or an fsync.
    public func handle(_ frame: ByteBuffer, connection: ClientConnection, receivedAt: ContinuousClock.Instant? = nil,
                       admitNext: (@Sendable () -> Void)? = nil) async -> BrokerReply {
        if connection.securityProtocol.usesSASL, case .reply(let reply) = await saslGate(frame, connection) {
            return reply
        }
        let request: RequestFrame
        do {
            request = try RequestFrame(parsing: frame)
        } catch {
            return .closeConnection(reason: "cannot parse request header: \(error)")
        }
        let version = request.apiVersion
        guard let handler = Self.handlers[request.apiKey] else {
            return unsupported(request, why: "API \(request.apiKey.name) (\(request.apiKey.rawValue)) is not supported")
        }
        guard handler.versions.contains(version) else {
            if request.apiKey == .apiVersions {
                // KIP-511: answer a too-new ApiVersions with a v0 body listing our versions.
                return encode(apiVersionsResponse(error: .unsupportedVersion), version: 0, request: request)
            }
            return unsupported(request, why: "\(request.apiKey.name) v\(version) is not supported (supported: \(handler.versions))")
        }
        let started = ContinuousClock.now
        let context = RequestContext(frame: request, connection: connection, access: access(connection), admitNext: admitNext)
        let reply = await withQuotas(context) { await handler.handle(self, context) }
        let elapsed = started.duration(to: .now).components
        let queued = receivedAt.map { $0.duration(to: started).components }
        metrics.handled(request.apiKey, version: version, nanoseconds: elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000,
                        queuedNanoseconds: queued.map { $0.seconds * 1_000_000_000 + $0.attoseconds / 1_000_000_000 })
        return reply
    }

    /// Encodes a response with the request's correlation id.
    func encode<Response: KafkaResponse>(_ response: Response, version: Int16, request: RequestFrame) -> BrokerReply {
        var response = response
        applyThrottle(&response, version: version)
        var buffer = ByteBuffer()
        do {
            try ResponseFrame.encode(response, version: version, correlationID: request.correlationID, into: &buffer)
        } catch {
            logger.error("cannot encode \(Response.apiKey.name) v\(version) response: \(error)")
            return .closeConnection(reason: "cannot encode response: \(error)")
        }
        return .response([.bytes(buffer)])
    }

    /// An API or version this broker does not serve: answered with UNSUPPORTED_VERSION when the
    /// response has a top-level error code, else the connection is closed (as Kafka does).
    func unsupported(_ request: RequestFrame, why: String) -> BrokerReply {
        logger.debug("unsupported request", metadata: ["reason": "\(why)"])
        let version = request.apiKey.validVersions.contains(request.apiVersion) ? request.apiVersion : request.apiKey.validVersions.lowerBound
        if let type = request.apiKey.responseType as? any KafkaTopLevelErrorResponse.Type {
            let body = type.init(topLevelError: KafkaError.unsupportedVersion.code)
            var buffer = ByteBuffer()
            var header = ResponseHeader()
            header.correlationId = request.correlationID
            do {
                try header.write(to: &buffer, version: request.apiKey.responseHeaderVersion(apiVersion: version))
                try body.write(to: &buffer, version: version)
                return .response([.bytes(buffer)])
            } catch {
                logger.debug("cannot encode an error response", metadata: ["error": "\(error)"])
            }
        }
        return .closeConnection(reason: why)
    }

    // MARK: ApiVersions

    func apiVersionsResponse(error: KafkaError) -> ApiVersionsResponse {
        var response = ApiVersionsResponse()
        response.errorCode = error.code
        for (key, range) in Self.supportedVersions.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            var entry = ApiVersionsResponse.ApiVersion()
            entry.apiKey = key.rawValue
            entry.minVersion = range.lowerBound
            entry.maxVersion = range.upperBound
            response.apiKeys.append(entry)
        }
        return response
    }

    // MARK: Metadata

    /// Metadata. With an authorizer, a listing of every topic shows only those the principal may
    /// DESCRIBE, a named one it may not is answered TOPIC_AUTHORIZATION_FAILED, and
    /// auto-creation needs CREATE on the cluster or the topic (as Kafka).
    func handleMetadata(_ request: MetadataRequest, version: Int16, listener: String, access: Access = .unrestricted) async -> MetadataResponse {
        let config = self.config
        var image = metadata.image
        var response = MetadataResponse()
        response.brokers = liveBrokers(image, listener: listener).map(MetadataResponse.MetadataResponseBroker.init)
        response.clusterId = image.clusterID
        response.controllerId = clustered ? image.controllerID : config.nodeID
        response.clusterAuthorizedOperations = Int32.min
        if request.includeClusterAuthorizedOperations && version >= 8 && version <= 10 {
            response.clusterAuthorizedOperations = access.allowsCluster(.describe)
                ? access.authorizedOperations(.cluster, AclResourceType.clusterName, among: Self.clusterOperations) : 0
        }

        // Which topics: null (or empty in v0) means all.
        var wanted: [(name: String?, id: KafkaUUID)] = []
        let all = request.topics == nil || (version == 0 && request.topics?.isEmpty == true)
        if all {
            wanted = image.topics.keys.sorted().filter { access.allows(.describe, topic: $0) }.map { ($0, KafkaUUID.zero) }
        } else {
            wanted = (request.topics ?? []).map { ($0.name, $0.topicId) }
        }
        let autoCreate = config.autoCreateTopicsEnable && (version < 4 || request.allowAutoTopicCreation)
        for (name, id) in wanted {
            var topic = MetadataResponse.MetadataResponseTopic()
            topic.topicAuthorizedOperations = Int32.min
            let known: TopicMetadata?
            if let name {
                topic.name = name
                if !access.allows(.describe, topic: name) {
                    topic.errorCode = KafkaError.topicAuthorizationFailed.code
                    response.topics.append(topic)
                    continue
                }
                if image.topics[name] == nil && autoCreate && !all
                    && !access.allowsCluster(.create) && !access.allows(.create, topic: name) {
                    topic.errorCode = KafkaError.topicAuthorizationFailed.code
                    response.topics.append(topic)
                    continue
                }
                if image.topics[name] == nil && autoCreate && !all {
                    known = await autoCreateTopic(name)
                    image = metadata.image
                    if known == nil && clustered && (try? validateTopicName(name)) != nil {
                        // The controller creates it: the client asks again, as after Kafka's auto-creation.
                        topic.errorCode = KafkaError.leaderNotAvailable.code
                        response.topics.append(topic)
                        continue
                    }
                } else {
                    known = image.topics[name]
                }
            } else {
                known = image.topic(id: id)
                topic.topicId = id
            }
            if name == nil, let found = known, !access.allows(.describe, topic: found.name) {
                topic.errorCode = KafkaError.topicAuthorizationFailed.code
                response.topics.append(topic)
                continue
            }
            guard let found = known else {
                if let name, (try? validateTopicName(name)) == nil {
                    topic.errorCode = KafkaError.invalidTopicException.code
                } else {
                    topic.errorCode = name == nil ? KafkaError.unknownTopicId.code : KafkaError.unknownTopicOrPartition.code
                }
                response.topics.append(topic)
                continue
            }
            topic.name = found.name
            topic.topicId = found.topicID
            if version >= 1 { topic.isInternal = found.name == GroupCoordinator.topic }
            if request.includeTopicAuthorizedOperations && version >= 8 {
                topic.topicAuthorizedOperations = access.authorizedOperations(.topic, found.name, among: Self.topicOperations)
            }
            let live = Set(image.brokers.map(\.nodeID))
            for index in 0..<found.partitionCount {
                var partition = MetadataResponse.MetadataResponsePartition()
                partition.partitionIndex = index
                if clustered {
                    guard let registration = image.partition(found.name, index) else { continue }
                    partition.leaderId = registration.leader
                    partition.leaderEpoch = registration.leaderEpoch
                    partition.replicaNodes = registration.replicas
                    partition.isrNodes = registration.isr
                    partition.offlineReplicas = registration.replicas.filter { !live.contains($0) }
                    if registration.leader < 0 || !live.contains(registration.leader) {
                        partition.errorCode = KafkaError.leaderNotAvailable.code
                    }
                } else if let hosted = replicaManager.partition(TopicPartition(topic: found.name, partition: index)) {
                    partition.leaderId = config.nodeID
                    partition.leaderEpoch = hosted.leaderEpoch.rawValue
                    partition.replicaNodes = [config.nodeID]
                    partition.isrNodes = [config.nodeID]
                } else {
                    partition.errorCode = KafkaError.leaderNotAvailable.code
                    partition.leaderId = -1
                    partition.leaderEpoch = -1
                    partition.replicaNodes = [config.nodeID]
                    partition.isrNodes = [config.nodeID]
                }
                topic.partitions.append(partition)
            }
            response.topics.append(topic)
        }
        return response
    }

    /// Creates a topic with the broker defaults (Metadata's auto-creation); nil when refused.
    func autoCreateTopic(_ name: String) async -> TopicMetadata? {
        let config = self.config
        do {
            guard let topic = try await metadata.autoCreateTopic(name: name, partitions: config.numPartitions,
                                                                 replicationFactor: config.defaultReplicationFactor, configs: [:])
            else { return nil }
            try createLogs(for: topic)
            logger.info("auto-created topic", metadata: ["topic": "\(name)", "partitions": "\(topic.partitionCount)"])
            return topic
        } catch {
            if case .topicAlreadyExists = error as? MetadataError { return metadata.image.topics[name] }
            logger.warning("cannot auto-create topic", metadata: ["topic": "\(name)", "error": "\(error)"])
            return nil
        }
    }

    func logConfig(for topic: TopicMetadata) -> LogConfig {
        config.logConfig(dynamicBrokerConfigs: metadata.image.brokerConfigs, topicConfigs: topic.configs)
    }

    /// Creates the logs of a topic just created or grown through this broker. In a cluster the
    /// registrations decide which of them live here and who leads them, as for every other
    /// metadata change: `metadataChanged` has applied them already.
    func createLogs(for topic: TopicMetadata) throws {
        if clustered {
            // The store's watch applied the change before the change returned (`metadataChanged`).
            return
        } else {
            try replicaManager.becomeLeader(topic: topic, config: logConfig(for: topic), nowMs: clock())
        }
    }

    /// A new cluster image: partitions this broker is a replica of take the role the controller
    /// gave them, and partitions of topics the cluster deleted are removed. Runs on the store's
    /// watch, one image at a time.
    func metadataChanged(_ image: MetadataImage) {
        applyingImage.withLock { applied in
            guard image.epoch >= applied else { return }
            applied = image.epoch
            apply(image)
        }
    }

    private func apply(_ image: MetadataImage) {
        let brokerConfigsChanged = state.withLock { s in
            defer { s.appliedBrokerConfigs = image.brokerConfigs }
            return s.appliedBrokerConfigs != image.brokerConfigs
        }
        for topic in image.topics.values.sorted(by: { $0.name < $1.name }) {
            do {
                try applyPartitionRegistrations(of: topic)
                // A config changed through another broker reaches this one's logs here.
                let changed = state.withLock { s in
                    defer { s.appliedConfigs[topic.name] = topic.configs }
                    return s.appliedConfigs[topic.name] != nil && s.appliedConfigs[topic.name] != topic.configs
                }
                if changed || brokerConfigsChanged {
                    try replicaManager.updateConfig(topic: topic.name, config: logConfig(for: topic))
                }
            } catch {
                logger.error("cannot apply partition registrations", metadata: ["topic": "\(topic.name)", "error": "\(error)"])
            }
        }
        for partition in replicaManager.allPartitions {
            let tp = partition.topicPartition
            // A completed reassignment moved this replica away: it is no longer one of the partition's.
            guard let registration = image.partition(tp.topic, tp.partition), !registration.replicas.isEmpty,
                !registration.replicas.contains(config.nodeID)
            else { continue }
            do {
                replicaFetchers?.unfollow(tp)
                try replicaManager.removePartition(tp, nowMs: clock())
                logger.info("removed a replica moved to other brokers", metadata: ["partition": "\(tp)", "replicas": "\(registration.replicas)"])
            } catch {
                logger.error("cannot remove a moved replica", metadata: ["partition": "\(tp)", "error": "\(error)"])
            }
        }
        let hostedTopics = Set(replicaManager.allPartitions.map(\.topicPartition.topic))
        for name in hostedTopics where image.topics[name] == nil {
            for partition in replicaManager.allPartitions where partition.topicPartition.topic == name {
                replicaFetchers?.unfollow(partition.topicPartition)
            }
            do {
                try replicaManager.deletePartitions(topic: name, nowMs: clock())
                logger.info("deleted partitions of a deleted topic", metadata: ["topic": "\(name)"])
            } catch {
                logger.error("cannot delete partitions of a deleted topic", metadata: ["topic": "\(name)", "error": "\(error)"])
            }
        }
    }

    /// The brokers clients on `listener` are told about: every live broker of the cluster, or
    /// this one, each with its endpoint on that listener.
    func liveBrokers(_ image: MetadataImage, listener: String) -> [BrokerRegistration] {
        if clustered { return image.brokers.sorted { $0.nodeID < $1.nodeID }.map { $0.on(listener: listener) } }
        return [config.registration.on(listener: listener)]
    }

    /// The hosted partition a produce or a consumer's read addresses, or the error to answer:
    /// UNKNOWN_TOPIC_OR_PARTITION when the cluster does not know it, NOT_LEADER_OR_FOLLOWER when
    /// another broker leads it (the client refreshes its metadata and follows), as Kafka's
    /// `ReplicaManager.getPartitionOrError`.
    func leaderPartition(_ tp: TopicPartition, _ image: MetadataImage) -> Result<Partition, KafkaError> {
        guard let topic = image.topics[tp.topic], tp.partition >= 0, tp.partition < topic.partitionCount else {
            return .failure(.unknownTopicOrPartition)
        }
        guard let partition = replicaManager.partition(tp) else {
            return .failure(clustered ? .notLeaderOrFollower : .unknownTopicOrPartition)
        }
        guard partition.isLeader else { return .failure(.notLeaderOrFollower) }
        return .success(partition)
    }

    /// Makes every partition of `topic` that has a replica here leader or follower, as the
    /// controller registered it. A partition whose leadership of `__consumer_offsets` arrives
    /// here has its groups loaded.
    func applyPartitionRegistrations(of topic: TopicMetadata) throws {
        guard let registrations = topic.partitions else { return }
        let config = logConfig(for: topic)
        let now = clock()
        for (index, registration) in registrations.enumerated() where registration.replicas.contains(self.config.nodeID) {
            let (partition, change) = try replicaManager.apply(registration, topic: topic, index: Int32(index), config: config, nowMs: now)
            // Only a change of role reloads a partition's groups (an ISR change must not replay
            // the log over live groups); in order, through one stream.
            if change == .role && topic.name == GroupCoordinator.topic {
                coordinatorLeadership.yield((Int32(index), partition.isLeader))
            }
            if change == .role {
                if partition.isLeader {
                    replicaFetchers?.unfollow(partition.topicPartition)
                } else {
                    replicaFetchers?.follow(partition, leader: registration.leader, epoch: LeaderEpoch(registration.leaderEpoch))
                }
                logger.info(partition.isLeader ? "became leader" : "became follower", metadata: [
                    "partition": "\(partition.topicPartition)", "leader_epoch": "\(registration.leaderEpoch)",
                    "isr": "\(registration.isr)",
                ])
            }
        }
    }

    // MARK: Errors

    /// The one place storage errors become Kafka error codes.
    static func kafkaError(_ error: StorageError) -> KafkaError {
        switch error {
        case .io, .logClosed, .corruptFile: return .kafkaStorageError
        case .offsetOutOfRange: return .offsetOutOfRange
        case .recordTooLarge: return .messageTooLarge
        case .corruptRecord: return .corruptMessage
        case .invalidRecord, .wrongExpectedVersion: return .invalidRecord
        case .invalidConfig: return .invalidConfig
        case .invalidProducerEpoch: return .invalidProducerEpoch
        case .outOfOrderSequence: return .outOfOrderSequenceNumber
        }
    }
}

