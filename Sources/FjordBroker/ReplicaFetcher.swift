public import FjordMetadata
public import FjordProtocol
import FjordStorage
import Logging
import NIOCore
import Synchronization

/// A connection to the broker a follower replicates from: the seam between replication and
/// sockets (FjordBroker opens none). `fjord serve` supplies one over the native client's
/// `BrokerConnection`, as Kafka's replica fetcher uses its clients' `NetworkClient`.
///
/// Requests are sent at the versions given; an endpoint throws when the connection fails, and
/// the fetcher then opens a new one.
public protocol LeaderEndpoint: Sendable {
    func fetch(_ request: FetchRequest, version: Int16) async throws -> FetchResponse
    func offsetsForLeaderEpoch(_ request: OffsetForLeaderEpochRequest, version: Int16) async throws -> OffsetForLeaderEpochResponse
    func close() async
}

/// Opens a `LeaderEndpoint` to a broker of the cluster.
public typealias LeaderEndpointFactory = @Sendable (BrokerRegistration) async throws -> any LeaderEndpoint

/// The followers' side of replication (Kafka's `ReplicaFetcherManager`): one `ReplicaFetcher`
/// per leader broker, each fetching all the partitions this broker follows from that leader in
/// one Fetch request at a time.
final class ReplicaFetcherManager: Sendable {
    struct Settings: Sendable {
        /// `replica.fetch.wait.max.ms`
        var maxWaitMs: Int32 = 500
        /// `replica.fetch.min.bytes`
        var minBytes: Int32 = 1
        /// `replica.fetch.response.max.bytes`
        var responseMaxBytes: Int32 = 10 * 1024 * 1024
        /// `replica.fetch.max.bytes`
        var partitionMaxBytes: Int32 = 1024 * 1024
        /// `replica.fetch.backoff.ms`
        var backoffMs: Int64 = 1000
    }

    let nodeID: Int32
    let settings: Settings
    let connect: LeaderEndpointFactory
    let broker: @Sendable (Int32) -> BrokerRegistration?
    let logger: Logger
    let clock: @Sendable () -> Int64
    private let fetchers = Mutex<[Int32: ReplicaFetcher]>([:])

    init(nodeID: Int32, settings: Settings, connect: @escaping LeaderEndpointFactory,
         broker: @escaping @Sendable (Int32) -> BrokerRegistration?, logger: Logger, clock: @escaping @Sendable () -> Int64) {
        self.nodeID = nodeID
        self.settings = settings
        self.connect = connect
        self.broker = broker
        self.logger = logger
        self.clock = clock
    }

    /// Makes `partition` (a follower now, of `leader` at `epoch`) fetch from its leader, starting
    /// with truncation to the leader's epoch end (KIP-101/279); it leaves any other fetcher. A
    /// leader of -1 (offline partition) stops it fetching.
    func follow(_ partition: Partition, leader: Int32, epoch: LeaderEpoch) {
        let tp = partition.topicPartition
        let (target, emptied) = fetchers.withLock { map -> (ReplicaFetcher?, [ReplicaFetcher]) in
            var emptied: [ReplicaFetcher] = []
            for (id, fetcher) in map where id != leader && fetcher.remove(tp) {
                map[id] = nil
                emptied.append(fetcher)
            }
            guard leader >= 0 && leader != nodeID else { return (nil, emptied) }
            if let existing = map[leader] { return (existing, emptied) }
            let created = ReplicaFetcher(leaderID: leader, manager: self)
            map[leader] = created
            return (created, emptied)
        }
        for fetcher in emptied { fetcher.stop() }
        target?.add(partition, epoch: epoch)
    }

    /// Stops replicating `tp` (this broker leads it now, or no longer hosts it).
    func unfollow(_ tp: TopicPartition) {
        let emptied = fetchers.withLock { map -> [ReplicaFetcher] in
            var emptied: [ReplicaFetcher] = []
            for (id, fetcher) in map where fetcher.remove(tp) {
                map[id] = nil
                emptied.append(fetcher)
            }
            return emptied
        }
        for fetcher in emptied { fetcher.stop() }
    }

    /// The partitions being replicated, by leader (for the operator view and tests).
    var followed: [Int32: [TopicPartition]] {
        fetchers.withLock { map in map.mapValues { $0.partitionNames } }
    }

    /// Stops every fetcher and waits until none is appending (the logs close next).
    func shutdown() async {
        let all = fetchers.withLock { map -> [ReplicaFetcher] in
            defer { map = [:] }
            return Array(map.values)
        }
        for fetcher in all { await fetcher.stop()?.value }
    }
}

/// Replicates every partition this broker follows from one leader (Kafka's
/// `ReplicaFetcherThread`): truncate first, then fetch at the log end, append the leader's
/// batches byte for byte (their offsets, epochs and producer state), and take the leader's
/// high watermark. Runs as one task until its last partition leaves.
final class ReplicaFetcher: Sendable {
    /// Fetch v12: topics by name, `replica_id` in the body (v15 moved it into `ReplicaState`).
    static let fetchVersion: Int16 = 12
    static let offsetsForLeaderEpochVersion: Int16 = 4

    enum Phase: Sendable, Equatable {
        /// Must ask the leader where this replica's last epoch ends before fetching.
        case truncating
        case fetching
    }

    struct PartitionState: Sendable {
        var partition: Partition
        var epoch: LeaderEpoch
        var phase: Phase = .truncating
        /// Skipped by fetches until then (after an error), ms.
        var delayedUntilMs: Int64 = 0
        /// The leader's refusals in a row (see `refused`).
        var refusals = 0
    }

    /// The first wait after the leader refuses a partition; each further refusal in a row
    /// doubles it, up to `replica.fetch.backoff.ms`.
    static let firstRefusalBackoffMs: Int64 = 20

    let leaderID: Int32
    private let manager: ReplicaFetcherManager
    private struct State {
        var partitions: [TopicPartition: PartitionState] = [:]
        var stopped = false
        var task: Task<Void, Never>? = nil
        /// Counts `add` calls, so the loop sees a partition added while it decided to sleep.
        var additions = 0
        /// The loop's wait while every partition is delayed; `add` ends it early.
        var sleeper: Task<Void, Never>? = nil
    }

    private let state = Mutex(State())

    init(leaderID: Int32, manager: ReplicaFetcherManager) {
        self.leaderID = leaderID
        self.manager = manager
    }

    var partitionNames: [TopicPartition] { state.withLock { Array($0.partitions.keys).sorted() } }

    func add(_ partition: Partition, epoch: LeaderEpoch) {
        let start = state.withLock { s -> Bool in
            guard !s.stopped else { return false }
            s.partitions[partition.topicPartition] = PartitionState(partition: partition, epoch: epoch)
            s.additions += 1
            // A loop waiting out other partitions' delays fetches the new one at once.
            s.sleeper?.cancel()
            return s.task == nil
        }
        guard start else { return }
        let task = Task { [self] in await self.run() }
        state.withLock { $0.task = task }
    }

    /// Removes `tp`; returns true when that left this fetcher without partitions.
    func remove(_ tp: TopicPartition) -> Bool {
        state.withLock { s in
            guard s.partitions.removeValue(forKey: tp) != nil else { return false }
            return s.partitions.isEmpty
        }
    }

    /// Cancels the fetch loop; returns its task, to wait for.
    @discardableResult
    func stop() -> Task<Void, Never>? {
        let task = state.withLock { s -> Task<Void, Never>? in
            s.stopped = true
            return s.task
        }
        task?.cancel()
        return task
    }

    private var logger: Logger { manager.logger }

    private func run() async {
        var endpoint: (any LeaderEndpoint)? = nil
        defer { if let endpoint { Task { await endpoint.close() } } }
        while !Task.isCancelled {
            let now = manager.clock()
            let (partitions, additions) = state.withLock { s in (s.stopped ? [:] : s.partitions, s.additions) }
            if partitions.isEmpty { return }
            let ready = partitions.filter { $0.value.delayedUntilMs <= now }
            if ready.isEmpty {
                let wake = partitions.values.map(\.delayedUntilMs).min() ?? now + 100
                await sleep(milliseconds: Swift.max(10, Swift.min(wake - now, manager.settings.backoffMs)), unless: additions)
                continue
            }
            if endpoint == nil {
                guard let registration = manager.broker(leaderID) else {
                    try? await Task.sleep(for: .milliseconds(manager.settings.backoffMs))
                    continue
                }
                do {
                    endpoint = try await manager.connect(registration)
                } catch {
                    logger.debug("cannot connect to the leader", metadata: ["leader": "\(leaderID)", "error": "\(error)"])
                    try? await Task.sleep(for: .milliseconds(manager.settings.backoffMs))
                    continue
                }
            }
            guard let connected = endpoint else { continue }
            do {
                // Cancelled (the partitions moved, or shutdown) while a request is out: closing
                // the connection fails it at once instead of after the request timeout (a
                // frozen leader never answers).
                try await withTaskCancellationHandler {
                    let truncating = ready.filter { $0.value.phase == .truncating }
                    if !truncating.isEmpty {
                        try await truncate(truncating, via: connected)
                    } else {
                        try await fetch(ready, via: connected)
                    }
                } onCancel: {
                    Task { await connected.close() }
                }
            } catch _ where Task.isCancelled {
                return
            } catch is CancellationError {
                return
            } catch {
                logger.info("replica fetch failed; reconnecting", metadata: ["leader": "\(leaderID)", "error": "\(error)"])
                await connected.close()
                endpoint = nil
                try? await Task.sleep(for: .milliseconds(manager.settings.backoffMs))
            }
        }
    }

    /// Waits `milliseconds`, or less when a partition is added (or was, since `additions`) or
    /// the loop is cancelled.
    private func sleep(milliseconds: Int64, unless additions: Int) async {
        let sleeper = Task<Void, Never> { try? await Task.sleep(for: .milliseconds(milliseconds)) }
        let armed = state.withLock { s -> Bool in
            guard s.additions == additions else { return false }
            s.sleeper = sleeper
            return true
        }
        guard armed else {
            sleeper.cancel()
            return
        }
        await withTaskCancellationHandler { await sleeper.value } onCancel: { sleeper.cancel() }
        state.withLock { s in if s.sleeper == sleeper { s.sleeper = nil } }
    }

    /// Updates one partition's fetch state if it is still the one the request was built from.
    private func update(_ tp: TopicPartition, epoch: LeaderEpoch, _ body: (inout PartitionState) -> Void) {
        state.withLock { s in
            guard var current = s.partitions[tp], current.epoch == epoch else { return }
            body(&current)
            s.partitions[tp] = current
        }
    }

    private func delay(_ tp: TopicPartition, epoch: LeaderEpoch) {
        let until = manager.clock() + manager.settings.backoffMs
        update(tp, epoch: epoch) { $0.delayedUntilMs = until }
    }

    /// The leader refused the partition (NOT_LEADER_OR_FOLLOWER, UNKNOWN_LEADER_EPOCH,
    /// UNKNOWN_TOPIC_OR_PARTITION, …). Mostly that is a leader which has not applied the metadata
    /// this follower acts on yet (a new topic, a new epoch): it will in milliseconds, so the wait
    /// starts at `firstRefusalBackoffMs` and doubles up to `replica.fetch.backoff.ms`, where
    /// Kafka waits the whole backoff at once. Every acks=all produce waits for this follower
    /// meanwhile, so a second's wait was a second's stall right after a topic was created.
    private func refused(_ tp: TopicPartition, epoch: LeaderEpoch) {
        let now = manager.clock()
        let ceiling = manager.settings.backoffMs
        update(tp, epoch: epoch) { entry in
            let wait = Swift.min(ceiling, Self.firstRefusalBackoffMs << Swift.min(entry.refusals, 16))
            entry.refusals += 1
            entry.delayedUntilMs = now + wait
        }
    }

    // MARK: Truncation (KIP-101, KIP-279)

    private func truncate(_ partitions: [TopicPartition: PartitionState], via endpoint: any LeaderEndpoint) async throws {
        var request = OffsetForLeaderEpochRequest()
        request.replicaId = manager.nodeID
        var untracked: [TopicPartition: PartitionState] = [:]
        for (tp, entry) in partitions.sorted(by: { $0.key < $1.key }) {
            guard let latest = entry.partition.log.latestLeaderEpoch else {
                untracked[tp] = entry
                continue
            }
            var query = OffsetForLeaderEpochRequest.OffsetForLeaderPartition()
            query.partition = tp.partition
            query.currentLeaderEpoch = entry.epoch.rawValue
            query.leaderEpoch = latest.rawValue
            Self.append(query, topic: tp.topic, to: &request.topics, name: \.topic, partitions: \.partitions) {
                var topic = OffsetForLeaderEpochRequest.OffsetForLeaderTopic()
                topic.topic = tp.topic
                return topic
            }
        }
        // A log without epochs (empty, or never written with one) keeps what is below its high
        // watermark, as Kafka's follower did before KIP-101.
        for (tp, entry) in untracked {
            let log = entry.partition.log
            truncateLog(entry, to: log.highWatermark.offset.rawValue, reason: "no leader epochs")
            update(tp, epoch: entry.epoch) { $0.phase = .fetching }
        }
        guard !request.topics.isEmpty else { return }
        let response = try await endpoint.offsetsForLeaderEpoch(request, version: Self.offsetsForLeaderEpochVersion)
        for topic in response.topics {
            for answer in topic.partitions {
                let tp = TopicPartition(topic: topic.topic, partition: answer.partition)
                guard let entry = partitions[tp] else { continue }
                let error = KafkaError(code: answer.errorCode)
                guard error == .noError else {
                    logger.debug("OffsetsForLeaderEpoch refused", metadata: ["partition": "\(tp)", "error": "\(error)"])
                    refused(tp, epoch: entry.epoch)
                    continue
                }
                let log = entry.partition.log
                let logEnd = log.logEndOffset.rawValue
                let target: Int64
                if answer.endOffset < 0 {
                    // The leader knows no epoch ≤ ours: keep only what was committed.
                    target = log.highWatermark.offset.rawValue
                } else if let latest = log.latestLeaderEpoch, answer.leaderEpoch == latest.rawValue {
                    target = Swift.min(answer.endOffset, logEnd)
                } else {
                    // The leader's largest epoch ≤ ours is older: cut where that epoch ends in
                    // either log (KIP-279).
                    let ours = log.endOffset(forLeaderEpoch: LeaderEpoch(answer.leaderEpoch)).endOffset.rawValue
                    target = Swift.min(answer.endOffset, ours < 0 ? logEnd : ours, logEnd)
                }
                truncateLog(entry, to: target, reason: "leader epoch \(answer.leaderEpoch) ends at \(answer.endOffset)")
                update(tp, epoch: entry.epoch) { $0.phase = .fetching; $0.refusals = 0 }
            }
        }
    }

    private func truncateLog(_ entry: PartitionState, to offset: Int64, reason: String) {
        let log = entry.partition.log
        let before = log.logEndOffset.rawValue
        guard offset < before else { return }
        do {
            _ = try entry.partition.whileFollowing(epoch: entry.epoch) { () throws(StorageError) in
                try log.truncate(to: Offset(offset))
            }
            logger.info("truncated a follower to its leader", metadata: [
                "partition": "\(log.topicPartition)", "from": "\(before)", "to": "\(log.logEndOffset)", "reason": "\(reason)",
            ])
        } catch {
            logger.error("cannot truncate a follower", metadata: ["partition": "\(log.topicPartition)", "error": "\(error)"])
            delay(log.topicPartition, epoch: entry.epoch)
        }
    }

    // MARK: Fetch

    private func fetch(_ partitions: [TopicPartition: PartitionState], via endpoint: any LeaderEndpoint) async throws {
        let settings = manager.settings
        var request = FetchRequest()
        request.replicaId = manager.nodeID
        request.maxWaitMs = settings.maxWaitMs
        request.minBytes = settings.minBytes
        request.maxBytes = settings.responseMaxBytes
        request.sessionId = 0
        request.sessionEpoch = -1
        var fetchOffsets: [TopicPartition: Int64] = [:]
        // Rotated each round, so a partition at the end of a full response is first next time.
        let ordered = partitions.keys.sorted()
        let shift = ordered.isEmpty ? 0 : Int(manager.clock() % Int64(ordered.count))
        for tp in ordered[shift...] + ordered[..<shift] {
            let entry = partitions[tp]!
            var fetch = FetchRequest.FetchPartition()
            fetch.partition = tp.partition
            fetch.currentLeaderEpoch = entry.epoch.rawValue
            fetch.fetchOffset = entry.partition.log.logEndOffset.rawValue
            fetch.lastFetchedEpoch = entry.partition.log.latestLeaderEpoch?.rawValue ?? -1
            fetch.logStartOffset = entry.partition.log.logStartOffset.rawValue
            fetch.partitionMaxBytes = settings.partitionMaxBytes
            fetchOffsets[tp] = fetch.fetchOffset
            Self.append(fetch, topic: tp.topic, to: &request.topics, name: \.topic, partitions: \.partitions) {
                var topic = FetchRequest.FetchTopic()
                topic.topic = tp.topic
                return topic
            }
        }
        let response = try await endpoint.fetch(request, version: Self.fetchVersion)
        if response.errorCode != 0 {
            throw ReplicationError("the leader refused the fetch: \(KafkaError(code: response.errorCode))")
        }
        let now = manager.clock()
        for topic in response.responses {
            for data in topic.partitions {
                let tp = TopicPartition(topic: topic.topic, partition: data.partitionIndex)
                guard let entry = partitions[tp], let fetchOffset = fetchOffsets[tp] else { continue }
                handle(data, for: entry, fetchOffset: fetchOffset, nowMs: now)
            }
        }
    }

    private func handle(_ data: FetchResponse.PartitionData, for entry: PartitionState, fetchOffset: Int64, nowMs: Int64) {
        let partition = entry.partition
        let tp = partition.topicPartition
        let log = partition.log
        switch KafkaError(code: data.errorCode) {
        case .noError:
            if entry.refusals > 0 { update(tp, epoch: entry.epoch) { $0.refusals = 0 } }
            guard let records = data.records, records.readableBytes > 0 else {
                partition.followerHighWatermark(data.highWatermark)
                return
            }
            guard log.logEndOffset.rawValue == fetchOffset else { return }  // truncated meanwhile: fetch again
            do {
                let (batches, cut) = try Self.batches(in: records, after: fetchOffset)
                let appended = try partition.whileFollowing(epoch: entry.epoch) { () throws(StorageError) in
                    if let cut { try log.truncate(to: Offset(cut)) }
                    if let batches { _ = try log.append(batches, leaderEpoch: entry.epoch, origin: .replication, nowMs: nowMs) }
                }
                if appended { partition.followerHighWatermark(data.highWatermark) }
            } catch {
                logger.error("cannot append replicated records; truncating before fetching again", metadata: [
                    "partition": "\(tp)", "offset": "\(fetchOffset)", "error": "\(error)",
                ])
                update(tp, epoch: entry.epoch) { $0.phase = .truncating; $0.delayedUntilMs = nowMs + self.manager.settings.backoffMs }
            }
        case .offsetOutOfRange:
            if data.logStartOffset > fetchOffset {
                // Behind the leader's log start (retention deleted what this replica lacks).
                do {
                    _ = try partition.whileFollowing(epoch: entry.epoch) { () throws(StorageError) in
                        try log.truncateFullyAndStart(at: Offset(data.logStartOffset), nowMs: nowMs)
                    }
                    logger.info("follower restarted its log at the leader's log start", metadata: [
                        "partition": "\(tp)", "offset": "\(data.logStartOffset)",
                    ])
                } catch {
                    logger.error("cannot restart a follower's log", metadata: ["partition": "\(tp)", "error": "\(error)"])
                    delay(tp, epoch: entry.epoch)
                }
            } else {
                update(tp, epoch: entry.epoch) { $0.phase = .truncating }
            }
        case let error:
            // FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH, NOT_LEADER_OR_FOLLOWER…: the metadata
            // image brings the new leader or epoch; until then, back off.
            logger.debug("replica fetch refused", metadata: ["partition": "\(tp)", "error": "\(error)"])
            refused(tp, epoch: entry.epoch)
        }
    }

    /// Adds a partition's entry under its topic: a request names each topic once, with its
    /// partitions in the order added (the caller adds them sorted by topic).
    private static func append<Topic, Entry>(_ entry: Entry, topic name: String, to topics: inout [Topic],
                                             name topicName: KeyPath<Topic, String>, partitions: WritableKeyPath<Topic, [Entry]>,
                                             new: () -> Topic) {
        if let last = topics.last, last[keyPath: topicName] == name {
            topics[topics.count - 1][keyPath: partitions].append(entry)
        } else {
            var topic = new()
            topic[keyPath: partitions] = [entry]
            topics.append(topic)
        }
    }

    /// The complete batches of a fetched record set that start at or after `logEnd` (a partial
    /// last batch, cut by the byte limit, is left for the next fetch). When the first batch
    /// straddles `logEnd` the log must first be cut back to that batch's base (`cut`).
    static func batches(in records: ByteBuffer, after logEnd: Int64) throws(ProtocolError) -> (records: ByteBuffer?, cut: Int64?) {
        var remaining = records
        var start: Int? = nil
        var end = records.readerIndex
        var cut: Int64? = nil
        while let batch = try RecordBatch.read(from: &remaining) {
            defer { end = remaining.readerIndex }
            if batch.lastOffset < logEnd { continue }
            if start == nil {
                start = end
                if batch.baseOffset < logEnd { cut = batch.baseOffset }
            }
        }
        guard let start, end > start else { return (nil, nil) }
        return (records.getSlice(at: start, length: end - start), cut)
    }
}

/// Replication could not go on with a leader (the fetcher reconnects).
struct ReplicationError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
