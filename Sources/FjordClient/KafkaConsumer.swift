public import FjordProtocol
import CoreMetrics
import Logging
public import NIOCore
public import NIOPosix

/// A consumed record.
public struct ConsumerRecord: Sendable, Equatable {
    public var topic: String
    public var partition: Int32
    public var offset: Offset
    public var timestamp: Int64
    public var key: ByteBuffer?
    public var value: ByteBuffer?
    public var headers: [RecordHeader]

    public var topicPartition: TopicPartition { TopicPartition(topic, partition) }
}

/// Called when a group rebalance changes this member's partitions (Kafka's
/// `ConsumerRebalanceListener`). Runs inside `poll`, so it may call back into the consumer
/// (`commit`, `seek`, `position`).
public protocol ConsumerRebalanceListener: Sendable {
    /// Partitions this member now owns (new ones only, under the cooperative protocol).
    func partitionsAssigned(_ partitions: [TopicPartition], consumer: KafkaConsumer) async
    /// Partitions this member gives up in an orderly rebalance; with auto-commit their
    /// positions were committed just before.
    func partitionsRevoked(_ partitions: [TopicPartition], consumer: KafkaConsumer) async
    /// Partitions this member lost without a chance to commit (its session expired, it was
    /// fenced): another member may already be reading them.
    func partitionsLost(_ partitions: [TopicPartition], consumer: KafkaConsumer) async
}

extension ConsumerRebalanceListener {
    public func partitionsAssigned(_ partitions: [TopicPartition], consumer: KafkaConsumer) async {}
    public func partitionsRevoked(_ partitions: [TopicPartition], consumer: KafkaConsumer) async {}
    public func partitionsLost(_ partitions: [TopicPartition], consumer: KafkaConsumer) async {}
}

/// A Kafka consumer: explicit `assign`, or `subscribe` with group membership (classic protocol
/// with range / round-robin / cooperative-sticky assignors and static membership, or KIP-848);
/// positions, `seek`, `pause`/`resume`, fetch sessions (KIP-227), commits, auto-commit.
///
/// Guarantees:
/// - **Order.** Records of a partition come in offset order, each once, unless the
///   application seeks back or a rebalance hands the partition to a member that starts from an
///   older committed offset (at-least-once, as in Kafka).
/// - **What "consumed" means.** `poll` advances the position past the records it returns;
///   commits (manual or auto) write positions. Auto-commit happens inside `poll`, so only
///   records the application already took from an earlier `poll` are committed; with the
///   `records()` sequence that means records it finished with.
/// - **Bounded prefetch.** After a `poll`, one fetch for the next records is started; no
///   more is fetched until the application polls again, so a slow application holds at most
///   one fetch response (`fetch.max.bytes`) in memory.
/// - **Rebalances happen inside `poll`.** A background heartbeat notices a rebalance; the next
///   `poll` commits (with auto-commit), calls the listener, rejoins and resumes.
public actor KafkaConsumer {
    public nonisolated let configuration: ConsumerConfiguration
    nonisolated let cluster: KafkaCluster
    let metrics: ConsumerMetrics
    var logger: Logger { configuration.client.logger }

    // Assignment and positions.
    /// Partitions this consumer reads, in assignment order.
    var assignment: [TopicPartition] = []
    /// The next offset to hand to the application, per assigned partition (nil: to resolve).
    var positions: [TopicPartition: Int64] = [:]
    var paused: Set<TopicPartition> = []
    /// Records fetched but not returned yet (when `max.poll.records` cut a poll short).
    var buffered: [FetchedPartition] = []
    var prefetch: Task<[FetchedPartition], any Error>? = nil
    /// A prefetch whose data is no longer wanted (after a seek or rebalance) but that may still
    /// be on the wire: the next fetch waits for it, so a broker's fetch session sees one request
    /// at a time.
    var abandonedFetch: Task<[FetchedPartition], any Error>? = nil
    var sessions: [Int32: FetchSession] = [:]
    var closed = false

    // Group membership (see KafkaConsumer+Group.swift).
    var subscription: [String]? = nil
    var listener: (any ConsumerRebalanceListener)? = nil
    var memberID = ""
    var generation: Int32 = -1
    var protocolName: String? = nil
    var needsJoin = false
    var partitionsLost = false
    var joining = false
    var heartbeatTask: Task<Void, Never>? = nil
    var lastAutoCommit = ContinuousClock.now
    var rebalances = 0
    /// KIP-848: the broker's heartbeat interval, and an assignment not yet applied by `poll`.
    var consumerHeartbeatIntervalMs: Int? = nil
    var pendingAssignment: Set<TopicPartition>? = nil
    var pendingTopicIDs: [(KafkaUUID, [Int32])]? = nil
    /// Classic protocol, as leader: the partition counts the last assignment used; a change
    /// (partitions added) makes the leader rejoin so the new ones get assigned.
    var leaderPartitionCounts: [String: Int32]? = nil

    init(configuration: ConsumerConfiguration, cluster: KafkaCluster) {
        self.configuration = configuration
        self.cluster = cluster
        self.metrics = ConsumerMetrics(clientID: configuration.client.clientID)
    }

    /// Connects to the cluster (no group is joined until `subscribe`).
    public static func connect(_ configuration: ConsumerConfiguration,
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> KafkaConsumer {
        try configuration.validate()
        let cluster = try await KafkaCluster.connect(configuration.client, group: group)
        return KafkaConsumer(configuration: configuration, cluster: cluster)
    }

    /// Where an assigned partition starts.
    public enum StartPosition: Sendable, Equatable {
        /// The group's committed offset, else `auto.offset.reset`.
        case committed
        case earliest
        case latest
        case offset(Offset)
        /// The first offset whose timestamp is at or after this one (ms since the epoch), else
        /// the log end.
        case timestamp(Int64)
    }

    // MARK: Assignment without a group

    /// Assigns `partitions` of `topic`, replacing earlier assignments of that topic (manual
    /// assignment: no group membership; commits, if any, go to `group.id` outside the protocol).
    public func assign(topic: String, partitions: [Int32], from start: StartPosition = .committed) async throws {
        guard subscription == nil else { throw ClientError.invalidConfiguration("assign() after subscribe(): unsubscribe first") }
        let keys = partitions.map { TopicPartition(topic, $0) }
        try await assign(keys.map { ($0, start) }, replacingTopic: topic)
    }

    /// Assigns partitions with a start position each.
    public func assign(_ partitions: [(TopicPartition, StartPosition)]) async throws {
        guard subscription == nil else { throw ClientError.invalidConfiguration("assign() after subscribe(): unsubscribe first") }
        try await assign(partitions, replacingTopic: nil)
    }

    private func assign(_ partitions: [(TopicPartition, StartPosition)], replacingTopic topic: String?) async throws {
        if let topic {
            assignment.removeAll { $0.topic == topic }
            for key in positions.keys where key.topic == topic { positions[key] = nil }
        }
        dropPrefetch()
        for (tp, _) in partitions where !assignment.contains(tp) { assignment.append(tp) }
        try await resolve(partitions)
    }

    /// Stops reading every partition (and leaves the group, if subscribed).
    public func unassign() async {
        if subscription != nil { await unsubscribe() }
        assignment = []
        positions = [:]
        paused = []
        dropPrefetch()
    }

    /// The partitions this consumer reads now.
    public func assignedPartitions() -> [TopicPartition] { assignment }

    // MARK: Positions

    /// Moves a partition's position.
    public func seek(topic: String, partition: Int32, to start: StartPosition) async throws {
        let tp = TopicPartition(topic, partition)
        guard assignment.contains(tp) else { throw ClientError.kafka(.unknownTopicOrPartition, "\(tp) is not assigned") }
        dropPrefetch()
        try await resolve([(tp, start)])
    }

    /// The next offset `poll` returns from a partition (nil when not assigned or not yet known).
    public func position(topic: String, partition: Int32) -> Offset? {
        positions[TopicPartition(topic, partition)].map { Offset($0) }
    }

    /// Stops fetching these partitions until `resume`; the position and assignment stay.
    public func pause(_ partitions: [TopicPartition]) {
        paused.formUnion(partitions.filter { assignment.contains($0) })
        buffered.removeAll { paused.contains($0.tp) }
        dropPrefetch()
    }

    public func resume(_ partitions: [TopicPartition]) {
        paused.subtract(partitions)
    }

    public func pausedPartitions() -> [TopicPartition] { paused.sorted() }

    /// Resolves start positions, batching ListOffsets and OffsetFetch lookups.
    func resolve(_ starts: [(TopicPartition, StartPosition)]) async throws {
        var committedWanted: [TopicPartition] = []
        var listWanted: [(TopicPartition, Int64)] = []
        for (tp, start) in starts {
            switch start {
            case .offset(let offset): positions[tp] = offset.rawValue
            case .earliest: listWanted.append((tp, -2))
            case .latest: listWanted.append((tp, -1))
            case .timestamp(let ms): listWanted.append((tp, ms))
            case .committed: committedWanted.append(tp)
            }
        }
        if !committedWanted.isEmpty {
            let committed = try await committedOffsetValues(committedWanted)
            for tp in committedWanted {
                if let offset = committed[tp], offset >= 0 {
                    positions[tp] = offset
                } else {
                    switch configuration.autoOffsetReset {
                    case .earliest: listWanted.append((tp, -2))
                    case .latest: listWanted.append((tp, -1))
                    case .none:
                        throw ClientError.kafka(.offsetOutOfRange, "\(tp): no committed offset and auto.offset.reset=none")
                    }
                }
            }
        }
        if !listWanted.isEmpty {
            for (tp, offset) in try await listOffsets(listWanted) { positions[tp] = offset }
        }
    }

    /// The log end offset of each partition (the last stable offset with read_committed).
    /// Retriable errors (a partition of a topic just created has no leader yet, a leader moved)
    /// are retried with backoff for up to `request.timeout.ms`, as Java's consumer retries
    /// them within its API timeout.
    public func endOffsets(_ partitions: [TopicPartition]) async throws -> [TopicPartition: Offset] {
        try await retryingListOffsets(partitions.map { ($0, -1) }).mapValues { Offset($0) }
    }

    /// The log start offset of each partition (retried as `endOffsets` is).
    public func beginningOffsets(_ partitions: [TopicPartition]) async throws -> [TopicPartition: Offset] {
        try await retryingListOffsets(partitions.map { ($0, -2) }).mapValues { Offset($0) }
    }

    private func retryingListOffsets(_ wanted: [(TopicPartition, Int64)]) async throws -> [TopicPartition: Int64] {
        let deadline = ContinuousClock.now + .milliseconds(configuration.client.requestTimeoutMs)
        var backoff = configuration.client.retryBackoffMs
        while true {
            do {
                return try await listOffsets(wanted)
            } catch let error as ClientError where error.isRetriable && ContinuousClock.now + .milliseconds(backoff) < deadline {
                try await Task.sleep(for: .milliseconds(backoff))
                backoff = Swift.min(backoff * 2, configuration.client.retryBackoffMaxMs)
            }
        }
    }

    /// The partitions of a topic (from cluster metadata).
    public func partitions(of topic: String) async throws -> [Int32] {
        try await cluster.topic(topic).partitions.map(\.partition)
    }

    /// ListOffsets for each partition at its leader (-2 earliest, -1 latest, else a timestamp;
    /// a timestamp past the last record resolves to the log end).
    func listOffsets(_ wanted: [(TopicPartition, Int64)]) async throws -> [TopicPartition: Int64] {
        var byLeader: [Int32: [(TopicPartition, Int64)]] = [:]
        for entry in wanted {
            let leader = try await cluster.leader(topic: entry.0.topic, partition: entry.0.partition).node
            byLeader[leader, default: []].append(entry)
        }
        var result: [TopicPartition: Int64] = [:]
        var needLatest: [(TopicPartition, Int64)] = []
        for (node, entries) in byLeader {
            var request = ListOffsetsRequest()
            request.replicaId = -1
            request.isolationLevel = configuration.readCommitted ? 1 : 0
            var topics: [String: [ListOffsetsRequest.ListOffsetsPartition]] = [:]
            for (tp, timestamp) in entries {
                var partition = ListOffsetsRequest.ListOffsetsPartition()
                partition.partitionIndex = tp.partition
                partition.timestamp = timestamp
                partition.currentLeaderEpoch = -1
                topics[tp.topic, default: []].append(partition)
            }
            request.topics = topics.sorted { $0.key < $1.key }.map { name, partitions in
                var topic = ListOffsetsRequest.ListOffsetsTopic()
                topic.name = name
                topic.partitions = partitions
                return topic
            }
            let response = try await cluster.connection(to: node).send(request)
            for topic in response.topics {
                for partition in topic.partitions {
                    let tp = TopicPartition(topic.name, partition.partitionIndex)
                    let error = KafkaError(code: partition.errorCode)
                    guard error == .noError else {
                        if error.isRetriable { await cluster.invalidate(topic: tp.topic) }
                        throw ClientError.kafka(error, "ListOffsets \(tp)")
                    }
                    if partition.offset < 0 {
                        needLatest.append((tp, -1))  // no record at or after the timestamp
                    } else {
                        result[tp] = partition.offset
                    }
                }
            }
        }
        if !needLatest.isEmpty {
            for (tp, offset) in try await listOffsets(needLatest) { result[tp] = offset }
        }
        return result
    }

    /// The group's committed offsets for `partitions` (-1 where none).
    public func committedOffsets(_ partitions: [TopicPartition]) async throws -> [TopicPartition: Offset] {
        try await committedOffsetValues(partitions).mapValues { Offset($0) }
    }

    func committedOffsetValues(_ partitions: [TopicPartition]) async throws -> [TopicPartition: Int64] {
        guard let group = configuration.groupID else { return [:] }
        var request = OffsetFetchRequest()
        request.groupId = group
        var topics: [String: [Int32]] = [:]
        for tp in partitions { topics[tp.topic, default: []].append(tp.partition) }
        request.topics = topics.sorted { $0.key < $1.key }.map { name, indexes in
            var topic = OffsetFetchRequest.OffsetFetchRequestTopic()
            topic.name = name
            topic.partitionIndexes = indexes
            return topic
        }
        let response = try await coordinatorRequest { connection in
            let version = try connection.version(of: .offsetFetch, max: 7)
            var request = request
            request.requireStable = version >= 7
            return try await connection.send(request, version: version)
        } errorCode: { $0.errorCode }
        var result: [TopicPartition: Int64] = [:]
        for topic in response.topics {
            for partition in topic.partitions {
                let error = KafkaError(code: partition.errorCode)
                if error != .noError { throw ClientError.kafka(error, "OffsetFetch \(topic.name)-\(partition.partitionIndex)") }
                result[TopicPartition(topic.name, partition.partitionIndex)] = partition.committedOffset
            }
        }
        return result
    }

    /// Sends a request to the group coordinator, finding it again and retrying (within
    /// `request.timeout.ms`) on NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE and load in progress.
    func coordinatorRequest<Response>(_ send: (BrokerConnection) async throws -> Response,
                                      errorCode: (Response) -> Int16) async throws -> Response {
        guard let group = configuration.groupID else { throw ClientError.invalidConfiguration("group.id is not set") }
        var backoff = ExponentialBackoff(baseMs: configuration.client.retryBackoffMs, maxMs: configuration.client.retryBackoffMaxMs)
        let deadline = ContinuousClock.now + .milliseconds(configuration.client.requestTimeoutMs)
        while true {
            var failure: any Error
            do {
                let connection = try await cluster.coordinator(group: group).connection
                let response = try await send(connection)
                let error = KafkaError(code: errorCode(response))
                switch error {
                case .notCoordinator, .coordinatorNotAvailable, .coordinatorLoadInProgress:
                    await cluster.invalidateCoordinator(group: group)
                    failure = ClientError.kafka(error, group)
                default:
                    return response
                }
            } catch let error as ClientError where error.isRetriable {
                await cluster.invalidateCoordinator(group: group)
                failure = error
            }
            backoff.recordFailure()
            guard ContinuousClock.now + .milliseconds(backoff.delayMs()) < deadline, !closed else { throw failure }
            try await Task.sleep(for: .milliseconds(backoff.delayMs()))
        }
    }

    // MARK: Polling

    /// Returns the next records (at most `max.poll.records`), fetching with a long poll of up
    /// to `fetch.max.wait.ms` when none are buffered; empty when nothing arrived in that time.
    /// With a subscription, this is also where the group is joined and rebalances happen.
    public func poll() async throws -> [ConsumerRecord] {
        if closed { throw ClientError.closed }
        if subscription != nil { try await maintainGroup() }
        try await resolveMissingPositions()
        if buffered.isEmpty {
            let fetched: [FetchedPartition]
            if let running = prefetch {
                prefetch = nil
                fetched = try await running.value
            } else {
                if let abandoned = abandonedFetch {
                    abandonedFetch = nil
                    _ = try? await abandoned.value
                }
                fetched = try await fetch()
            }
            // Keep only data fetched at the current position (a seek or rebalance may have moved it).
            buffered = fetched.filter { positions[$0.tp] == $0.fetchOffset && assignment.contains($0.tp) && !paused.contains($0.tp) }
            try await handleFetchErrors()
        }
        let records = takeBuffered()
        // The next fetch flies while these records (and any still buffered) are processed:
        // at most one fetch's worth beyond the buffer, so memory stays bounded.
        if !closed { startPrefetch() }
        if !records.isEmpty {
            metrics.records.increment(by: Int64(records.count))
            var bytes = 0
            for record in records { bytes += (record.key?.readableBytes ?? 0) + (record.value?.readableBytes ?? 0) }
            metrics.bytes.increment(by: Int64(bytes))
        }
        return records
    }

    /// Assigned partitions without a position (their lookup failed, e.g. a coordinator moved)
    /// are looked up again before each fetch, as Java's `updateFetchPositions` does; a
    /// retriable failure waits for the next poll.
    private func resolveMissingPositions() async throws {
        let missing = assignment.filter { positions[$0] == nil }
        guard !missing.isEmpty else { return }
        do {
            try await resolve(missing.map { ($0, .committed) })
        } catch let error as ClientError where error.isRetriable {
            logger.debug("cannot resolve positions yet", metadata: ["partitions": "\(missing)", "error": "\(error)"])
        }
    }

    /// Hands out up to `max.poll.records` buffered records, advancing positions.
    private func takeBuffered() -> [ConsumerRecord] {
        var out: [ConsumerRecord] = []
        var budget = configuration.maxPollRecords
        while budget > 0, !buffered.isEmpty {
            var chunk = buffered[0]
            if chunk.error != nil { break }
            let available = chunk.records.count - chunk.index
            let take = Swift.min(available, budget)
            if take > 0 && out.isEmpty && chunk.index == 0 && take == available {
                // The whole chunk fits: hand its array over without copying the records.
                out = chunk.records
                chunk.index = take
                budget -= take
            } else if take > 0 {
                out.append(contentsOf: chunk.records[chunk.index..<(chunk.index + take)])
                chunk.index += take
                budget -= take
            }
            if chunk.index == chunk.records.count {
                positions[chunk.tp] = chunk.nextOffset
                buffered.removeFirst()
            } else {
                positions[chunk.tp] = chunk.records[chunk.index].offset.rawValue
                buffered[0] = chunk
            }
        }
        return out
    }

    /// Partition errors of the last fetch: out of range resets by `auto.offset.reset`; routing
    /// errors refresh metadata (the next fetch goes to the new leader); others are thrown.
    private func handleFetchErrors() async throws {
        let failed = buffered.filter { $0.error != nil }
        buffered.removeAll { $0.error != nil }
        var resets: [(TopicPartition, StartPosition)] = []
        for chunk in failed {
            guard let error = chunk.error else { continue }
            switch error {
            case .offsetOutOfRange:
                logger.info("offset out of range, resetting", metadata: ["partition": "\(chunk.tp)", "offset": "\(chunk.fetchOffset)"])
                switch configuration.autoOffsetReset {
                case .earliest: resets.append((chunk.tp, .earliest))
                case .latest: resets.append((chunk.tp, .latest))
                case .none: throw ClientError.kafka(.offsetOutOfRange, "\(chunk.tp) at \(chunk.fetchOffset)")
                }
            case let error where error.isRetriable:
                await cluster.invalidate(topic: chunk.tp.topic)
            default:
                throw ClientError.kafka(error, "Fetch \(chunk.tp)")
            }
        }
        if !resets.isEmpty { try await resolve(resets) }
    }

    func dropPrefetch() {
        if let running = prefetch { abandonedFetch = running }
        prefetch = nil
        buffered = []
    }

    private func startPrefetch() {
        guard prefetch == nil, !fetchablePartitions().isEmpty else { return }
        prefetch = Task { try await self.fetch() }
    }

    /// The partitions to fetch and from where: the position, or, for a partition whose records
    /// are still buffered, where those records end (the prefetch runs while they are handed out).
    func fetchablePartitions() -> [(TopicPartition, Int64)] {
        var bufferedEnd: [TopicPartition: Int64] = [:]
        for chunk in buffered where chunk.error == nil { bufferedEnd[chunk.tp] = chunk.nextOffset }
        return assignment.compactMap { tp in
            guard !paused.contains(tp), let position = positions[tp] else { return nil }
            return (tp, bufferedEnd[tp] ?? position)
        }
    }

    /// Records as they arrive, one at a time, until the task is cancelled or an error occurs.
    /// The sequence polls only when the application asks for the next record, so auto-commit
    /// covers only records the application finished with.
    public nonisolated func records() -> ConsumerRecords {
        ConsumerRecords(consumer: self)
    }

    /// Records as they arrive, a poll's worth at a time (for throughput).
    public nonisolated func batches() -> ConsumerBatches {
        ConsumerBatches(consumer: self)
    }

    // MARK: Commits

    /// Commits the current positions of the assigned partitions (or `offsets`) to `group.id`,
    /// and waits for the coordinator's answer.
    public func commit(_ offsets: [TopicPartition: Offset]? = nil) async throws {
        let entries = offsets?.mapValues(\.rawValue) ?? Dictionary(uniqueKeysWithValues: assignment.compactMap { tp in positions[tp].map { (tp, $0) } })
        guard !entries.isEmpty else { return }
        try await commitOffsets(entries)
    }

    /// The tuple form kept for callers of the first client version.
    public func commit(_ offsets: [(topic: String, partition: Int32, offset: Offset)]) async throws {
        try await commit(Dictionary(offsets.map { (TopicPartition($0.topic, $0.partition), $0.offset) }, uniquingKeysWith: { $1 }))
    }

    /// Commits in the background; `completion` (if given) gets the outcome.
    public func commitAsync(_ offsets: [TopicPartition: Offset]? = nil,
                            completion: (@Sendable (Result<Void, any Error>) -> Void)? = nil) {
        let entries = offsets?.mapValues(\.rawValue) ?? Dictionary(uniqueKeysWithValues: assignment.compactMap { tp in positions[tp].map { (tp, $0) } })
        Task {
            do {
                try await self.commitOffsets(entries)
                completion?(.success(()))
            } catch {
                completion?(.failure(error))
            }
        }
    }

    /// Commits `entries`. Under KIP-848 a commit refused with STALE_MEMBER_EPOCH (one of our
    /// heartbeats moved the member to a new epoch while the commit was on its way) is sent again
    /// once that heartbeat's answer has given us the new epoch, as Kafka's consumer does; at most
    /// three times. It does not heartbeat itself: a second heartbeat with the old epoch would be
    /// fenced.
    func commitOffsets(_ entries: [TopicPartition: Int64]) async throws {
        guard let group = configuration.groupID else { throw ClientError.kafka(.invalidGroupId, "group.id is not set") }
        guard !entries.isEmpty else { return }
        var request = OffsetCommitRequest()
        request.groupId = group
        var byTopic: [String: [OffsetCommitRequest.OffsetCommitRequestPartition]] = [:]
        for (tp, offset) in entries {
            var entry = OffsetCommitRequest.OffsetCommitRequestPartition()
            entry.partitionIndex = tp.partition
            entry.committedOffset = offset
            entry.committedLeaderEpoch = -1
            byTopic[tp.topic, default: []].append(entry)
        }
        request.topics = byTopic.sorted { $0.key < $1.key }.map { name, partitions in
            var topic = OffsetCommitRequest.OffsetCommitRequestTopic()
            topic.name = name
            topic.partitions = partitions.sorted { $0.partitionIndex < $1.partitionIndex }
            return topic
        }
        var staleRetries = 0
        while true {
            let epoch = generation
            if subscription != nil && epoch >= 0 {
                request.generationIdOrMemberEpoch = epoch
                request.memberId = memberID
                request.groupInstanceId = configuration.groupInstanceID
            } else {
                request.generationIdOrMemberEpoch = -1
                request.memberId = ""
                request.groupInstanceId = nil
            }
            let response = try await coordinatorRequest { connection in
                try await connection.send(request, version: try connection.version(of: .offsetCommit, max: 9))
            } errorCode: { response in
                response.topics.lazy.flatMap(\.partitions).map(\.errorCode).first { $0 != 0 } ?? 0
            }
            let errors = response.topics.flatMap { topic in
                topic.partitions.filter { $0.errorCode != 0 }.map { (topic.name, $0.partitionIndex, KafkaError(code: $0.errorCode)) }
            }
            if configuration.groupProtocol == .consumer, staleRetries < 3, errors.contains(where: { $0.2 == .staleMemberEpoch }) {
                staleRetries += 1
                // The heartbeat that bumped the epoch is normally answered within milliseconds.
                let deadline = ContinuousClock.now + .milliseconds(Swift.min(configuration.client.requestTimeoutMs, 5_000))
                while generation == epoch && ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(10))
                }
                if generation != epoch && generation >= 0 { continue }
            }
            if let (topic, partition, error) = errors.first {
                if error == .rebalanceInProgress || error == .illegalGeneration || error == .unknownMemberId {
                    needsJoin = true
                }
                throw ClientError.kafka(error, "OffsetCommit \(topic)-\(partition)")
            }
            return
        }
    }

    // MARK: Closing

    /// Commits (with auto-commit), leaves the group (dynamic members; a static member stays
    /// until its session times out, so a restart gets its partitions back) and closes.
    public func close() async {
        guard !closed else { return }
        if subscription != nil {
            await leaveGroup(commit: configuration.enableAutoCommit)
        }
        closed = true
        dropPrefetch()
        heartbeatTask?.cancel()
        heartbeatTask = nil
        await cluster.close()
    }
}

/// Records of one partition from one fetch.
struct FetchedPartition: Sendable {
    var tp: TopicPartition
    var fetchOffset: Int64
    var records: [ConsumerRecord]
    var index = 0
    /// Where the position goes once every record was taken (past control batches too).
    var nextOffset: Int64
    var error: KafkaError? = nil
}

/// The records of a consumer, one at a time: an `AsyncSequence` that polls on demand.
public struct ConsumerRecords: AsyncSequence, Sendable {
    public typealias Element = ConsumerRecord
    let consumer: KafkaConsumer

    public struct AsyncIterator: AsyncIteratorProtocol {
        let consumer: KafkaConsumer
        var batch: [ConsumerRecord] = []
        var index = 0

        public mutating func next() async throws -> ConsumerRecord? {
            while index == batch.count {
                if Task.isCancelled { return nil }
                batch = try await consumer.poll()
                index = 0
            }
            defer { index += 1 }
            return batch[index]
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(consumer: consumer) }
}

/// The records of a consumer, a poll's worth at a time (never empty).
public struct ConsumerBatches: AsyncSequence, Sendable {
    public typealias Element = [ConsumerRecord]
    let consumer: KafkaConsumer

    public struct AsyncIterator: AsyncIteratorProtocol {
        let consumer: KafkaConsumer

        public mutating func next() async throws -> [ConsumerRecord]? {
            while true {
                if Task.isCancelled { return nil }
                let batch = try await consumer.poll()
                if !batch.isEmpty { return batch }
            }
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(consumer: consumer) }
}
