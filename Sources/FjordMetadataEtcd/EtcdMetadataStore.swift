import FjordEtcd
public import FjordMetadata
import FjordProtocol
import Foundation
public import Logging
import Synchronization

/// A topic as stored under `topics/<name>`; its partitions live under their own keys so the
/// controller can change one partition with a compare on that key alone.
///
/// `assignment` holds each partition's replicas as created: a partition without its own key is
/// in its initial state (leader the first replica, ISR all replicas, epochs 0), so creating a
/// topic of any size is one key in one transaction, within etcd's operations-per-transaction limit.
struct TopicRecord: Codable, Equatable {
    var name: String
    var topicID: String
    var partitionCount: Int32
    var replicationFactor: Int16
    var configs: [String: String]
    var assignment: [[Int32]]
    /// The epoch of the controller that wrote this record.
    var controllerEpoch: Int64

    func initialRegistration(_ index: Int32) -> PartitionRegistration {
        let replicas = Int(index) < assignment.count ? assignment[Int(index)] : []
        return PartitionRegistration(replicas: replicas, isr: replicas, leader: replicas.first ?? -1, controllerEpoch: controllerEpoch)
    }
}

/// A broker's request that the controller create a topic (Metadata's auto-creation, the first
/// FindCoordinator's `__consumer_offsets`).
struct TopicRequest: Codable, Equatable {
    var partitions: Int32
    var replicationFactor: Int16
    var configs: [String: String]
}

/// A leader's AlterPartition, under `requests/isr/<topic>/<index>`: valid while the partition
/// is still at these epochs with this leader.
struct ISRRequest: Codable, Equatable {
    var leader: Int32
    var leaderEpoch: Int32
    var partitionEpoch: Int32
    var isr: [Int32]
}

struct ControllerRecord: Codable, Equatable {
    var nodeID: Int32
}

/// Cluster metadata on etcd, behind the same `MetadataStore` protocol as the single node's.
///
/// Each broker registers under `brokers/<id>` with a lease it keeps alive (a broker whose lease
/// expires is dead), reads every key under the prefix once, then follows one watch from the
/// revision after that read, so its `MetadataImage` is etcd's state at some revision, never a
/// mix; the image's `epoch` is that revision. Changes only the controller makes (topics,
/// partitions, configs) are refused with NOT_CONTROLLER on other brokers; on the controller
/// they are fenced transactions (`EtcdKeyLayout`) and return once the watch has delivered them,
/// so a change is visible through `image` when its call returns. While etcd is unreachable the
/// image stays as it was (brokers keep serving what they lead) and changes fail with
/// `MetadataError.unavailable`; the watch and the keepalive resume by themselves.
public final class EtcdMetadataStore: MetadataStore {
    public struct Settings: Sendable {
        public var registration: BrokerRegistration
        /// The broker lease's TTL (`broker.session.timeout.ms`, rounded up to seconds).
        public var sessionTimeoutMs: Int64
        /// The cluster default of `unclean.leader.election.enable`.
        public var uncleanLeaderElection: Bool

        public init(registration: BrokerRegistration, sessionTimeoutMs: Int64, uncleanLeaderElection: Bool) {
            self.registration = registration
            self.sessionTimeoutMs = sessionTimeoutMs
            self.uncleanLeaderElection = uncleanLeaderElection
        }

        var ttlSeconds: Int64 { Swift.max(2, (sessionTimeoutMs + 999) / 1000) }
    }

    struct State {
        var kvs: [String: EtcdKeyValue] = [:]
        var image: MetadataImage
        var callbacks: [@Sendable (MetadataImage) -> Void] = []
        var lease: Int64 = 0
        var registration: BrokerRegistration
        /// This broker's controller epoch while it is the controller.
        var controllerEpoch: Int64? = nil
        var imageWaiters: [Int: (until: @Sendable (MetadataImage) -> Bool, continuation: CheckedContinuation<Void, Never>)] = [:]
        var nextWaiterID = 0
        var tasks: [Task<Void, Never>] = []
        var closed = false
    }

    let client: EtcdClient
    let keeper: EtcdLeaseKeeper
    let watcher: EtcdWatcher
    public let keys: EtcdKeyLayout
    let settings: Settings
    let logger: Logger
    let state: Mutex<State>
    /// One reconcile at a time (`scheduleReconcile`).
    let reconcileState = Mutex<(running: Bool, again: Bool)>((false, false))
    var nodeID: Int32 { settings.registration.nodeID }

    init(client: EtcdClient, keys: EtcdKeyLayout, settings: Settings, logger: Logger) {
        self.client = client
        self.keeper = EtcdLeaseKeeper(client: client, logger: logger)
        self.watcher = EtcdWatcher(client: client, logger: logger)
        self.keys = keys
        self.settings = settings
        self.logger = logger
        self.state = Mutex(State(image: MetadataImage(clusterID: "", controllerID: -1), registration: settings.registration))
    }

    /// Joins the cluster at `address`: waits for etcd (logging while it cannot reach it), takes
    /// or creates the cluster id, registers this broker under a lease, reads the metadata and
    /// starts following it and campaigning for controller.
    public static func join(_ address: EtcdClusterAddress, settings: Settings, logger: Logger) async throws -> EtcdMetadataStore {
        let client = try EtcdClient(host: address.host, port: address.port)
        let store = EtcdMetadataStore(client: client, keys: address.layout, settings: settings, logger: logger)
        var backoff = Duration.milliseconds(200)
        var lastLog = ContinuousClock.now - .seconds(10)
        while true {
            do {
                try await store.bootstrap()
                break
            } catch let error as EtcdError where error.isRetriable {
                if ContinuousClock.now - lastLog > .seconds(5) {
                    logger.warning("waiting for etcd", metadata: ["etcd": "\(address)", "error": "\(error)"])
                    lastLog = .now
                }
                try await Task.sleep(for: backoff)
                backoff = Swift.min(backoff * 2, .seconds(2))
            }
        }
        logger.info("registered with the cluster", metadata: [
            "etcd": "\(address)", "cluster.id": "\(store.image.clusterID)", "node.id": "\(settings.registration.nodeID)",
        ])
        return store
    }

    private func bootstrap() async throws {
        let proposed = KafkaUUID.random().description
        _ = try await client.txn(if: [.absent(keys.clusterID)], then: [.put(key: keys.clusterID, value: Array(proposed.utf8))])
        // A bootstrap retried after a later step failed keeps the registration it already has.
        if state.withLock({ $0.lease == 0 }) { try await register() }
        let (kvs, revision) = try await client.get(prefix: keys.all)
        publish(replacingWith: kvs, revision: revision)
        let follow = Task<Void, Never> { [weak self] in await self?.follow(from: revision + 1) }
        let campaign = Task<Void, Never> { [weak self] in await self?.campaign() }
        state.withLock { $0.tasks += [follow, campaign] }
    }

    // MARK: Registration

    /// Registers `brokers/<id>` under a new lease. A registration of the same id still alive
    /// (this broker's previous life, SIGKILLed less than a TTL ago, or another process) is
    /// waited out for up to two TTLs; after that the id is taken and the start fails.
    private func register() async throws {
        let ttl = settings.ttlSeconds
        let lease = try await client.grantLease(ttlSeconds: ttl)
        let value = try JSONEncoder().encode(state.withLock { $0.registration })
        let deadline = ContinuousClock.now + .seconds(2 * ttl + 1)
        var warned = false
        while true {
            let result = try await client.txn(if: [.absent(keys.broker(nodeID))],
                                              then: [.put(key: keys.broker(nodeID), value: Array(value), lease: lease)])
            if result.succeeded { break }
            guard ContinuousClock.now < deadline else {
                try? await client.revokeLease(lease)
                throw MetadataError.invalidConfig("node id \(nodeID) is registered by another live broker")
            }
            if !warned {
                logger.info("node id still registered (an earlier run of this broker?): waiting for its lease to expire",
                            metadata: ["node.id": "\(nodeID)"])
                warned = true
            }
            try await Task.sleep(for: .milliseconds(500))
        }
        state.withLock { $0.lease = lease }
        keeper.keepAlive(lease, ttlSeconds: ttl) { [weak self] lost in
            guard let self else { return }
            let task = Task { await self.reregister(after: lost) }
            self.state.withLock { $0.tasks.append(task) }
        }
    }

    /// The lease expired (etcd was unreachable longer than the TTL): this broker counted as dead
    /// meanwhile; it registers again, as a broker joining.
    private func reregister(after lost: Int64) async {
        state.withLock { s in
            if s.lease == lost { s.lease = 0 }
            if s.controllerEpoch != nil { s.controllerEpoch = nil }
        }
        var backoff = Duration.milliseconds(200)
        while !state.withLock({ $0.closed }) {
            do {
                try await register()
                logger.info("registered again after the lease was lost", metadata: ["node.id": "\(nodeID)"])
                return
            } catch {
                logger.warning("cannot register with etcd yet", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: backoff)
                backoff = Swift.min(backoff * 2, .seconds(2))
            }
        }
    }

    /// Controlled shutdown (SIGTERM): tells the controller this broker is stopping, waits until
    /// no partition it leads could move to another ISR member (or `maxWait`), resigns as
    /// controller, then revokes the lease, so the others see it gone at once instead of a TTL
    /// later.
    public func controlledShutdown(maxWait: Duration) async {
        let (lease, registration) = state.withLock { s -> (Int64, BrokerRegistration) in
            s.registration.inControlledShutdown = true
            return (s.lease, s.registration)
        }
        guard lease != 0, let value = try? JSONEncoder().encode(registration) else { return }
        do {
            try await client.put(keys.broker(nodeID), Array(value), lease: lease)
        } catch {
            logger.warning("controlled shutdown: cannot tell the controller", metadata: ["error": "\(error)"])
            return
        }
        let deadline = ContinuousClock.now + maxWait
        while ContinuousClock.now < deadline {
            if movableLeaderships(image).isEmpty { break }
            try? await Task.sleep(for: .milliseconds(100))
        }
        let left = movableLeaderships(image)
        logger.info("controlled shutdown", metadata: [
            "moved": "\(left.isEmpty)", "still_leading_movable": "\(left.count)",
        ])
        state.withLock { $0.controllerEpoch = nil }
        try? await client.revokeLease(lease)
    }

    /// Partitions this broker leads that have another live ISR member to move to.
    private func movableLeaderships(_ image: MetadataImage) -> [String] {
        let others = Set(image.brokers.filter { $0.nodeID != nodeID && $0.inControlledShutdown != true }.map(\.nodeID))
        var result: [String] = []
        for topic in image.topics.values {
            for (index, partition) in (topic.partitions ?? []).enumerated()
            where partition.leader == nodeID && partition.isr.contains(where: others.contains) {
                result.append("\(topic.name)-\(index)")
            }
        }
        return result
    }

    /// Stops following and campaigning, and closes the connection (the lease is left to expire
    /// unless `controlledShutdown` revoked it).
    public func close() async {
        let tasks = state.withLock { s in
            s.closed = true
            defer { s.tasks = [] }
            return s.tasks
        }
        for task in tasks { task.cancel() }
        let imageWaiters = state.withLock { s in
            defer { s.imageWaiters = [:] }
            return Array(s.imageWaiters.values)
        }
        for waiter in imageWaiters { waiter.continuation.resume() }
        keeper.close()
        watcher.close()
        await client.close()
    }

    // MARK: Following

    public var image: MetadataImage { state.withLock { $0.image } }

    public func onChange(_ callback: @escaping @Sendable (MetadataImage) -> Void) {
        state.withLock { $0.callbacks.append(callback) }
    }

    /// Applies the watch until the store closes; a compacted watch re-reads and resumes.
    private func follow(from revision: Int64) async {
        var next = revision
        while !Task.isCancelled {
            for await update in watcher.watch(prefix: keys.all, fromRevision: next) {
                switch update {
                case .events(let events, let revision):
                    apply(events, revision: revision)
                    next = revision + 1
                case .compacted(let revision):
                    logger.info("etcd watch compacted; reading the metadata again", metadata: ["revision": "\(revision)"])
                }
            }
            if Task.isCancelled || state.withLock({ $0.closed }) { return }
            // Compacted (or the stream finished): read everything again, then watch from there.
            while !Task.isCancelled {
                do {
                    let (kvs, revision) = try await client.get(prefix: keys.all)
                    publish(replacingWith: kvs, revision: revision)
                    next = revision + 1
                    break
                } catch {
                    try? await Task.sleep(for: .milliseconds(500))
                }
            }
        }
    }

    /// The image is at the revision of the last event applied, not the response header's: while
    /// catching up, etcd sends the current revision with batches that do not reach it yet.
    private func apply(_ events: [EtcdWatchEvent], revision: Int64) {
        guard let last = events.last?.kv.modRevision else { return }
        rebuild(revision: last) { kvs in
            for event in events {
                switch event.kind {
                case .put: kvs[event.kv.key] = event.kv
                case .delete: kvs[event.kv.key] = nil
                }
            }
        }
    }

    private func publish(replacingWith kvs: [EtcdKeyValue], revision: Int64) {
        rebuild(revision: revision) { current in
            current = Dictionary(kvs.map { ($0.key, $0) }, uniquingKeysWith: { _, last in last })
        }
    }

    /// The image and the keys it was built from, taken together: a change computed from the
    /// image compares against exactly the revisions it saw.
    func snapshot() -> (image: MetadataImage, kvs: [String: EtcdKeyValue]) {
        state.withLock { ($0.image, $0.kvs) }
    }

    /// Applies `change` to the keys and builds the image from them in one critical section,
    /// publishes it, wakes changes waiting for this revision and lets the controller act on it.
    private func rebuild(revision: Int64, _ change: (inout [String: EtcdKeyValue]) -> Void) {
        let (image, callbacks, ready) = state.withLock { s in
            change(&s.kvs)
            let image = buildImage(s.kvs, revision: revision, previous: s.image)
            s.image = image
            // Only an image at or past this broker's election can say another key holds the role.
            if let mine = s.controllerEpoch, image.epoch >= mine, image.controllerEpoch != mine { s.controllerEpoch = nil }
            var ready: [CheckedContinuation<Void, Never>] = []
            for (id, waiter) in s.imageWaiters where waiter.until(image) {
                ready.append(waiter.continuation)
                s.imageWaiters[id] = nil
            }
            return (image, s.callbacks, ready)
        }
        // The broker applies the image first, so a change returns with its logs in place.
        for callback in callbacks { callback(image) }
        for continuation in ready { continuation.resume() }
        if isController { scheduleReconcile() }
    }

    /// The image at the revision the keys were read at. A value that does not decode is logged
    /// and left out (its topic keeps its last known state), never taken for a deletion.
    private func buildImage(_ kvs: [String: EtcdKeyValue], revision: Int64, previous: MetadataImage) -> MetadataImage {
        let decoder = JSONDecoder()
        var image = MetadataImage(clusterID: kvs[keys.clusterID].map { String(decoding: $0.value, as: UTF8.self) } ?? previous.clusterID,
                                  controllerID: -1, epoch: revision)
        var partitions: [String: [Int32: PartitionRegistration]] = [:]
        var records: [String: TopicRecord] = [:]
        var undecodable: Set<String> = []
        var topicConfigs: [String: [String: String]] = [:]
        var acls: [AclBinding] = []
        var quotas: [ClientQuotaEntry] = []
        for (key, kv) in kvs {
            do {
                if key.hasPrefix(keys.brokers) {
                    image.brokers.append(try decoder.decode(BrokerRegistration.self, from: Data(kv.value)))
                } else if key == keys.controller {
                    image.controllerID = try decoder.decode(ControllerRecord.self, from: Data(kv.value)).nodeID
                    image.controllerEpoch = kv.createRevision
                } else if key.hasPrefix(keys.topics) {
                    let record = try decoder.decode(TopicRecord.self, from: Data(kv.value))
                    records[record.name] = record
                    image.topics[record.name] = TopicMetadata(name: record.name, topicID: KafkaUUID(record.topicID) ?? .zero,
                                                              partitionCount: record.partitionCount,
                                                              replicationFactor: record.replicationFactor, configs: record.configs)
                } else if key.hasPrefix(keys.partitions) {
                    let rest = key.dropFirst(keys.partitions.count)
                    guard let slash = rest.lastIndex(of: "/"), let index = Int32(rest[rest.index(after: slash)...]) else { continue }
                    partitions[String(rest[..<slash]), default: [:]][index] = try decoder.decode(PartitionRegistration.self, from: Data(kv.value))
                } else if key.hasPrefix(keys.topicConfigs) {
                    topicConfigs[String(key.dropFirst(keys.topicConfigs.count))] = try decoder.decode([String: String].self, from: Data(kv.value))
                } else if key == keys.brokerConfigs {
                    image.brokerConfigs = try decoder.decode([String: String].self, from: Data(kv.value))
                } else if key == keys.producerIDs {
                    image.nextProducerID = Int64(String(decoding: kv.value, as: UTF8.self))
                } else if key.hasPrefix(keys.scramCredentials) {
                    let user = String(key.dropFirst(keys.scramCredentials.count))
                    let list = try decoder.decode([ScramCredentialRecord].self, from: Data(kv.value))
                    image.scramCredentials = (image.scramCredentials ?? [:]).merging([user: list]) { $1 }
                } else if key.hasPrefix(keys.acls) {
                    acls.append(try decoder.decode(AclBinding.self, from: Data(kv.value)))
                } else if key.hasPrefix(keys.clientQuotas) {
                    quotas.append(try decoder.decode(ClientQuotaEntry.self, from: Data(kv.value)))
                }
            } catch {
                logger.error("cannot decode a metadata key; ignored", metadata: ["key": "\(key)", "error": "\(error)"])
                undecodable.insert(key)
                if key.hasPrefix(keys.topics), let old = previous.topics[String(key.dropFirst(keys.topics.count))] {
                    image.topics[old.name] = old
                }
                // An undecodable credential keeps its last known value: never taken for a deletion.
                if key.hasPrefix(keys.scramCredentials),
                    let old = previous.scramCredentials?[String(key.dropFirst(keys.scramCredentials.count))] {
                    image.scramCredentials = (image.scramCredentials ?? [:]).merging([String(key.dropFirst(keys.scramCredentials.count)): old]) { $1 }
                }
            }
        }
        for name in Array(image.topics.keys) {
            var topic = image.topics[name]!
            if let configs = topicConfigs[name] { topic.configs = configs }
            let known = partitions[name] ?? [:]
            topic.partitions = (0..<topic.partitionCount).map { index in
                // A key that does not decode keeps its last known state (never the initial one, which
                // would put followers without the records back in the ISR).
                known[index] ?? (undecodable.contains(keys.partition(name, index)) ? previous.partition(name, index) : nil)
                    ?? records[name]?.initialRegistration(index) ?? PartitionRegistration(replicas: [], isr: [], leader: -1)
            }
            image.topics[name] = topic
        }
        image.brokers.sort { $0.nodeID < $1.nodeID }
        // An undecodable ACL key keeps the bindings of the previous image that it named: never
        // taken for a deletion (which could open access a DENY closed).
        for binding in previous.acls ?? [] where undecodable.contains(keys.acl(binding)) { acls.append(binding) }
        image.acls = acls.isEmpty ? nil : MetadataImage.adding(acls.sorted { keys.acl($0) < keys.acl($1) }, to: [])
        // An undecodable quota key keeps its entity's last known quotas (a quota is never lifted by a bad read).
        for entry in previous.clientQuotas ?? [] where undecodable.contains(keys.clientQuota(entry.entity)) { quotas.append(entry) }
        quotas.sort { keys.clientQuota($0.entity) < keys.clientQuota($1.entity) }
        image.clientQuotas = quotas.isEmpty ? nil : quotas
        return image
    }

    /// Suspends until the image has reached `revision` (or `timeout`); returns whether it did.
    func awaitRevision(_ revision: Int64, timeout: Duration = .seconds(10)) async -> Bool {
        await awaitImage(timeout: timeout) { $0.epoch >= revision }
    }

    /// Suspends until an image satisfies `until` (or `timeout`); returns whether one did.
    func awaitImage(timeout: Duration, until: @escaping @Sendable (MetadataImage) -> Bool) async -> Bool {
        if until(image) { return true }
        let id = state.withLock { s in
            s.nextWaiterID += 1
            return s.nextWaiterID
        }
        var timer: Task<Void, Never>? = nil
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { s -> Bool in
                if until(s.image) || s.closed { return true }
                s.imageWaiters[id] = (until, continuation)
                return false
            }
            if resumeNow {
                continuation.resume()
            } else {
                timer = Task { [weak self] in
                    try? await Task.sleep(for: timeout)
                    let waiter = self?.state.withLock { $0.imageWaiters.removeValue(forKey: id) }
                    waiter?.continuation.resume()
                }
            }
        }
        timer?.cancel()
        return until(image)
    }
}
