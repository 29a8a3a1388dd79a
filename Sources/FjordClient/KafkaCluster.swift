import FjordProtocol
import Logging
public import NIOCore
public import NIOPosix

/// The client's view of a Kafka cluster and its connections: Kafka's `Metadata` plus
/// `NetworkClient`, shared by a producer, a consumer and an admin client.
///
/// - One `BrokerConnection` per broker node, opened on first use and reopened after it closes,
///   with exponential backoff and jitter per node (`reconnect.backoff.ms` / `.max.ms`).
///   Concurrent callers that need the same node share one connection attempt.
/// - Cluster metadata is refreshed on demand (`invalidate`, an unknown topic, a retriable
///   routing error reported by the owner) and when older than `metadata.max.age.ms`.
///   Concurrent refreshes are coalesced into one Metadata request.
/// - Group coordinators (FindCoordinator) are cached per group until invalidated.
///
/// Lifecycle: `connect` reaches one bootstrap server and loads metadata; `close` closes every
/// connection, after which every call throws `ClientError.closed`.
public actor KafkaCluster {
    public nonisolated let configuration: ClientConfiguration
    nonisolated let eventLoopGroup: any EventLoopGroup
    private var logger: Logger { configuration.logger }

    private var metadata = ClusterMetadata()
    private var metadataFetchedAt: ContinuousClock.Instant? = nil
    private var staleTopics: Set<String> = []
    /// Topics the owners asked about: every refresh asks for all of them.
    private var interestingTopics: Set<String> = []
    private var refreshing: Task<Void, any Error>? = nil
    /// Metadata requests sent, and the newest whose response was applied.
    private var metadataRequests = 0
    private var appliedMetadataRequest = 0

    private var connections: [Int32: BrokerConnection] = [:]
    private var connecting: [Int32: Task<BrokerConnection, any Error>] = [:]
    private var backoffs: [Int32: (backoff: ExponentialBackoff, failedAt: ContinuousClock.Instant)] = [:]
    private var coordinators: [String: Int32] = [:]
    private var closed = false

    /// Bootstrap servers get node ids -1, -2, … (as in Kafka's client) until metadata names them.
    private func bootstrapNodeID(_ index: Int) -> Int32 { Int32(-1 - index) }

    init(configuration: ClientConfiguration, group: any EventLoopGroup) {
        self.configuration = configuration
        self.eventLoopGroup = group
    }

    /// Connects to the first reachable bootstrap server and loads the broker list.
    public static func connect(_ configuration: ClientConfiguration,
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> KafkaCluster {
        try configuration.validate()
        let cluster = KafkaCluster(configuration: configuration, group: group)
        try await cluster.refreshMetadata()
        return cluster
    }

    public func close() async {
        closed = true
        refreshing?.cancel()
        for task in connecting.values { task.cancel() }
        let open = connections.values
        connections = [:]
        for connection in open { await connection.close() }
    }

    // MARK: Connections

    /// A live connection to broker `node`, opening one (after the node's backoff) if needed.
    public func connection(to node: Int32) async throws -> BrokerConnection {
        if closed { throw ClientError.closed }
        if let live = connections[node], live.isActive { return live }
        connections[node] = nil
        if let pending = connecting[node] { return try await pending.value }
        let address: (String, Int)
        if node < 0 {
            let index = Int(-1 - node)
            guard configuration.bootstrapServers.indices.contains(index) else {
                throw ClientError.connection("no bootstrap server \(node)")
            }
            address = try parseHostPort(configuration.bootstrapServers[index])
        } else {
            guard let broker = metadata.brokers[node] else {
                throw ClientError.connection("broker \(node) is not in the cluster metadata")
            }
            address = (broker.host, broker.port)
        }
        let wait = backoffs[node].map { entry -> Duration in
            let ready = entry.failedAt + .milliseconds(entry.backoff.delayMs())
            return ready - ContinuousClock.now
        } ?? .zero
        let configuration = self.configuration
        let group = eventLoopGroup
        let task = Task<BrokerConnection, any Error> {
            if wait > .zero { try await Task.sleep(for: wait) }
            return try await BrokerConnection.connect(
                host: address.0, port: address.1, clientID: configuration.clientID, group: group,
                connectTimeout: .milliseconds(Int64(configuration.connectTimeoutMs)),
                requestTimeout: .milliseconds(Int64(configuration.requestTimeoutMs)), security: configuration.security)
        }
        connecting[node] = task
        do {
            let connection = try await task.value
            connecting[node] = nil
            if closed {
                await connection.close()
                throw ClientError.closed
            }
            backoffs[node] = nil
            connections[node] = connection
            logger.debug("connected", metadata: ["node": "\(node)", "address": "\(address.0):\(address.1)"])
            return connection
        } catch {
            connecting[node] = nil
            var backoff = backoffs[node]?.backoff
                ?? ExponentialBackoff(baseMs: configuration.reconnectBackoffMs, maxMs: configuration.reconnectBackoffMaxMs)
            backoff.recordFailure()
            backoffs[node] = (backoff, ContinuousClock.now)
            logger.debug("connection failed", metadata: ["node": "\(node)", "error": "\(error)"])
            throw error
        }
    }

    /// A connection to any broker: a live one if there is one, else the known brokers and then
    /// the bootstrap servers in turn. Throws the last connection error when none answers.
    public func anyConnection() async throws -> BrokerConnection {
        if closed { throw ClientError.closed }
        if let live = connections.values.first(where: { $0.isActive }) { return live }
        var candidates = metadata.brokers.keys.sorted()
        candidates += configuration.bootstrapServers.indices.map(bootstrapNodeID)
        var lastError: any Error = ClientError.connection("no broker address known")
        for node in candidates {
            do {
                return try await connection(to: node)
            } catch ClientError.closed {
                throw ClientError.closed
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    // MARK: Metadata

    /// The current metadata, refreshed first if older than `metadata.max.age.ms`.
    public func currentMetadata() async throws -> ClusterMetadata {
        if isStale { try await refreshMetadata() }
        return metadata
    }

    private var isStale: Bool {
        guard let fetchedAt = metadataFetchedAt else { return true }
        return ContinuousClock.now - fetchedAt > .milliseconds(configuration.metadataMaxAgeMs)
    }

    /// Marks a topic's metadata stale (after NOT_LEADER_OR_FOLLOWER and the like): the next
    /// `topic(_:)` refreshes it.
    public func invalidate(topic: String) {
        staleTopics.insert(topic)
    }

    /// A topic's metadata, refreshing when it is unknown, stale, or has no leader everywhere;
    /// waits (with retry backoff, up to `request.timeout.ms`) while the topic is being created.
    public func topic(_ name: String) async throws -> ClusterMetadata.Topic {
        interestingTopics.insert(name)
        let deadline = ContinuousClock.now + .milliseconds(configuration.requestTimeoutMs)
        var backoff = ExponentialBackoff(baseMs: configuration.retryBackoffMs, maxMs: configuration.retryBackoffMaxMs)
        while true {
            if let topic = metadata.topics[name], !staleTopics.contains(name), !isStale,
               topic.error == .noError, !topic.partitions.isEmpty {
                return topic
            }
            try await refreshMetadata()
            if let topic = metadata.topics[name] {
                switch topic.error {
                case .noError where !topic.partitions.isEmpty:
                    return topic
                case .noError, .leaderNotAvailable:
                    break  // being created: wait for it
                case .unknownTopicOrPartition where configuration.allowAutoCreateTopics:
                    break
                default:
                    throw ClientError.kafka(topic.error, name)
                }
            }
            backoff.recordFailure()
            guard ContinuousClock.now + .milliseconds(backoff.delayMs()) < deadline else {
                throw ClientError.kafka(metadata.topics[name]?.error ?? .unknownTopicOrPartition, name)
            }
            try await Task.sleep(for: .milliseconds(backoff.delayMs()))
            staleTopics.insert(name)
        }
    }

    /// The leader of a partition and a connection to it.
    public func leader(topic: String, partition: Int32) async throws -> (node: Int32, connection: BrokerConnection) {
        let info = try await self.topic(topic)
        guard info.partitions.indices.contains(Int(partition)) else {
            throw ClientError.kafka(.unknownTopicOrPartition, "\(topic)-\(partition)")
        }
        let leader = info.partitions[Int(partition)].leader
        guard leader >= 0 else {
            staleTopics.insert(topic)
            throw ClientError.kafka(.leaderNotAvailable, "\(topic)-\(partition)")
        }
        return (leader, try await connection(to: leader))
    }

    /// Refreshes metadata for every topic of interest (and `topics`), coalescing concurrent
    /// refreshes into one request.
    public func refreshMetadata(topics extra: Set<String> = []) async throws {
        if closed { throw ClientError.closed }
        interestingTopics.formUnion(extra)
        if let running = refreshing {
            try await running.value
            if extra.isSubset(of: Set(metadata.topics.keys)) { return }
        }
        let wanted = interestingTopics
        let task = Task { try await self.fetchMetadata(topics: wanted) }
        refreshing = task
        defer { if refreshing == task { refreshing = nil } }
        try await task.value
    }

    private func fetchMetadata(topics: Set<String>) async throws {
        metadataRequests += 1
        let sequence = metadataRequests
        // Only what was stale when the request left is fresh once it returns.
        let staleAtSend = staleTopics.intersection(topics)
        var request = MetadataRequest()
        request.topics = topics.sorted().map { name in
            var topic = MetadataRequest.MetadataRequestTopic()
            topic.name = name
            return topic
        }
        request.allowAutoTopicCreation = configuration.allowAutoCreateTopics
        let connection = try await anyConnection()
        let response: MetadataResponse
        do {
            response = try await connection.send(request)
        } catch {
            await connection.close()
            throw error
        }
        guard sequence > appliedMetadataRequest else { return }  // a newer response was applied already
        appliedMetadataRequest = sequence
        var fresh = ClusterMetadata(response)
        // Keep topics this response did not ask about (their staleness is tracked apart).
        for (name, topic) in metadata.topics where fresh.topics[name] == nil && !topics.contains(name) {
            fresh.topics[name] = topic
        }
        if fresh.brokers != metadata.brokers {
            // A broker that moved or left: its connection points at the wrong place.
            for (id, old) in metadata.brokers where fresh.brokers[id] != old {
                if let stale = connections.removeValue(forKey: id) { await stale.close() }
            }
        }
        metadata = fresh
        metadataFetchedAt = ContinuousClock.now
        staleTopics.subtract(staleAtSend)
    }

    // MARK: Coordinators

    /// The coordinator of a consumer group and a connection to it (FindCoordinator, cached).
    public func coordinator(group: String) async throws -> (node: Int32, connection: BrokerConnection) {
        let deadline = ContinuousClock.now + .milliseconds(configuration.requestTimeoutMs)
        var backoff = ExponentialBackoff(baseMs: configuration.retryBackoffMs, maxMs: configuration.retryBackoffMaxMs)
        while true {
            if let node = coordinators[group] {
                do {
                    return (node, try await connection(to: node))
                } catch {
                    coordinators[group] = nil
                    throw error
                }
            }
            let connection = try await anyConnection()
            var request = FindCoordinatorRequest()
            request.keyType = 0
            let version = try connection.version(of: .findCoordinator)
            if version >= 4 { request.coordinatorKeys = [group] } else { request.key = group }
            let response = try await connection.send(request, version: version)
            var error = KafkaError(code: response.errorCode)
            var node = response.nodeId
            var host = response.host
            var port = Int(response.port)
            if let entry = response.coordinators.first {
                error = KafkaError(code: entry.errorCode)
                node = entry.nodeId
                host = entry.host
                port = Int(entry.port)
            }
            if error == .noError {
                if metadata.brokers[node] == nil {
                    metadata.brokers[node] = ClusterMetadata.Broker(id: node, host: host, port: port, rack: nil)
                }
                coordinators[group] = node
                continue
            }
            guard error.isRetriable else { throw ClientError.kafka(error, "FindCoordinator(\(group))") }
            backoff.recordFailure()
            guard ContinuousClock.now + .milliseconds(backoff.delayMs()) < deadline else {
                throw ClientError.kafka(error, "FindCoordinator(\(group))")
            }
            try await Task.sleep(for: .milliseconds(backoff.delayMs()))
        }
    }

    /// Forgets a group's coordinator (after NOT_COORDINATOR or COORDINATOR_NOT_AVAILABLE).
    public func invalidateCoordinator(group: String) {
        coordinators[group] = nil
    }
}
