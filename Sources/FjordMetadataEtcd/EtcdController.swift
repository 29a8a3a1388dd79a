import FjordEtcd
public import FjordMetadata
public import FjordProtocol
import Foundation
import Logging
import Synchronization

/// The controller (Kafka's `QuorumController`, with etcd as the quorum): one broker at a time,
/// elected by creating the `controller` key under its own lease.
///
/// Every broker campaigns: while no controller key exists it tries to create one (a transaction
/// "create if absent"), and the one that succeeds is the controller until its lease ends. The
/// key's create revision is its epoch, compared on every write it makes (`fencedTxn`), so a
/// controller that lost its lease (SIGSTOPped, cut off from etcd) can write nothing after a
/// successor is elected. The controller reconciles after every image: it creates requested
/// topics, and gives every partition whose leader is dead or shutting down a new leader from the
/// ISR (bumping the leader and partition epochs), removes dead brokers from ISRs (never the last
/// member), and elects outside the ISR only with `unclean.leader.election.enable`.
extension EtcdMetadataStore {
    /// Campaigns until the store closes.
    func campaign() async {
        while !Task.isCancelled && !state.withLock({ $0.closed }) {
            let (lease, image, mine) = state.withLock { ($0.lease, $0.image, $0.controllerEpoch) }
            if lease != 0 && mine == nil && image.controllerEpoch == nil
                && state.withLock({ $0.registration.inControlledShutdown != true })
            {
                do {
                    let result = try await client.txn(if: [.absent(keys.controller)],
                                                      then: [.put(key: keys.controller, value: encode(ControllerRecord(nodeID: nodeID)), lease: lease)])
                    if result.succeeded {
                        state.withLock { $0.controllerEpoch = result.revision }
                        logger.info("became the controller", metadata: ["node.id": "\(nodeID)", "controller.epoch": "\(result.revision)"])
                        _ = await awaitRevision(result.revision)
                        scheduleReconcile()
                    }
                } catch {
                    logger.debug("controller campaign failed", metadata: ["error": "\(error)"])
                }
            }
            if isController {
                // Periodic reconcile too: a failed write (etcd briefly unreachable) is retried.
                scheduleReconcile()
                try? await Task.sleep(for: .seconds(1))
            } else {
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    /// Runs one reconcile now unless one is running; a request during a run runs another after it.
    func scheduleReconcile() {
        let start = reconcileState.withLock { s -> Bool in
            if s.running { s.again = true; return false }
            s.running = true
            return true
        }
        guard start else { return }
        Task { [weak self] in
            guard let self else { return }
            while !self.state.withLock({ $0.closed }) {
                await self.reconcile()
                let again = self.reconcileState.withLock { s -> Bool in
                    if s.again { s.again = false; return true }
                    s.running = false
                    return false
                }
                if !again { return }
            }
            self.reconcileState.withLock { $0.running = false }
        }
    }

    private func reconcile() async {
        guard let epoch = try? requireController() else { return }
        await createRequestedTopics(self.image)
        // Every decision below and every compare it is written with come from this one snapshot:
        // a write computed from an older state can never pass a compare on a newer revision.
        let (image, kvs) = snapshot()
        var writes: [(key: String, modRevision: Int64, topicKey: String, topicRevision: Int64, registration: PartitionRegistration,
                      request: (key: String, modRevision: Int64)?)] = []
        let isrRequests = Self.isrRequests(kvs, keys: keys)
        var staleRequests = Set(isrRequests.keys)
        for topic in image.topics.values.sorted(by: { $0.name < $1.name }) {
            guard let topicRevision = kvs[keys.topic(topic.name)]?.createRevision else { continue }
            let unclean = (topic.configs["unclean.leader.election.enable"] ?? image.brokerConfigs["unclean.leader.election.enable"])
                .map { $0 == "true" } ?? settings.uncleanLeaderElection
            for (index, registered) in (topic.partitions ?? []).enumerated() {
                var current = registered
                var changed = false
                let requestKey = keys.isrRequest(topic.name, Int32(index))
                if let request = isrRequests[requestKey]?.request, let altered = Self.altered(current, by: request) {
                    current = altered
                    changed = true
                    staleRequests.remove(requestKey)
                }
                guard var next = Self.nextRegistration(current, image: image, unclean: unclean) ?? (changed ? current : nil) else { continue }
                next.controllerEpoch = epoch
                let key = keys.partition(topic.name, Int32(index))
                writes.append((key, kvs[key]?.modRevision ?? 0, keys.topic(topic.name), topicRevision, next,
                               changed ? (requestKey, isrRequests[requestKey]!.modRevision) : nil))
                if next.leader != current.leader {
                    logger.info("elected leader", metadata: [
                        "partition": "\(topic.name)-\(index)", "leader": "\(next.leader)", "previous": "\(current.leader)",
                        "leader_epoch": "\(next.leaderEpoch)", "isr": "\(next.isr)", "unclean": "\(!current.isr.contains(next.leader) && next.leader >= 0)",
                    ])
                }
            }
        }
        // Stale requests (another leader or epoch since) are answered by the image already; one
        // rewritten since this snapshot is kept.
        for key in staleRequests {
            _ = try? await client.txn(if: [.unchanged(key, since: isrRequests[key]!.modRevision)], then: [.delete(key: key)])
        }
        // etcd limits operations per transaction (128 by default); partitions are independent.
        for chunk in stride(from: 0, to: writes.count, by: 40).map({ Array(writes[$0..<Swift.min($0 + 40, writes.count)]) }) {
            do {
                let compares = chunk.flatMap { write in
                    [EtcdCompare.unchanged(write.key, since: write.modRevision),
                     EtcdCompare(key: write.topicKey, .createRevision(write.topicRevision))]
                        + (write.request.map { [EtcdCompare.unchanged($0.key, since: $0.modRevision)] } ?? [])
                }
                let ops = chunk.flatMap { write in
                    [EtcdOperation.put(key: write.key, value: encode(write.registration))] + (write.request.map { [.delete(key: $0.key)] } ?? [])
                }
                if try await !fencedTxn(epoch: epoch, compares, ops) {
                    // Something changed since the snapshot (fencedTxn waited for the image to
                    // show it): decide again from the newer state.
                    scheduleReconcile()
                    return
                }
            } catch {
                logger.warning("controller cannot write partition registrations yet", metadata: ["error": "\(error)"])
                return
            }
        }
    }

    /// Pending AlterPartition requests with the revision each was read at (nil request: does not decode).
    static func isrRequests(_ kvs: [String: EtcdKeyValue], keys: EtcdKeyLayout) -> [String: (request: ISRRequest?, modRevision: Int64)] {
        var result: [String: (request: ISRRequest?, modRevision: Int64)] = [:]
        for (key, kv) in kvs where key.hasPrefix(keys.isrRequests) {
            result[key] = (try? JSONDecoder().decode(ISRRequest.self, from: Data(kv.value)), kv.modRevision)
        }
        return result
    }

    /// A leader's AlterPartition applied to its partition, or nil when stale (another leader,
    /// epoch or partition epoch since) or invalid (the ISR must keep the leader and name only
    /// replicas). Bumps the partition epoch.
    static func altered(_ current: PartitionRegistration, by request: ISRRequest) -> PartitionRegistration? {
        guard request.leader == current.leader, request.leaderEpoch == current.leaderEpoch,
            request.partitionEpoch == current.partitionEpoch, request.isr.contains(current.leader),
            request.isr.allSatisfy(current.replicas.contains), request.isr != current.isr
        else { return nil }
        var next = current
        next.isr = current.replicas.filter(request.isr.contains)
        next.partitionEpoch += 1
        return next
    }

    /// What a partition's registration becomes in `image`, or nil when it stays: a
    /// reassignment completes, then a leader is elected if needed.
    static func nextRegistration(_ current: PartitionRegistration, image: MetadataImage, unclean: Bool) -> PartitionRegistration? {
        guard let completed = completedReassignment(current, image: image) else {
            return electedRegistration(current, image: image, unclean: unclean)
        }
        return electedRegistration(completed, image: image, unclean: unclean) ?? completed
    }

    /// A reassignment whose target replicas are all in the ISR ends: the removed replicas leave,
    /// and leadership moves into the target if it was outside (KIP-455).
    static func completedReassignment(_ current: PartitionRegistration, image: MetadataImage) -> PartitionRegistration? {
        guard current.addingReplicas != nil || current.removingReplicas != nil else { return nil }
        let target = current.targetReplicas
        guard !target.isEmpty, target.allSatisfy(current.isr.contains) else { return nil }
        let eligible = Set(eligibleBrokers(image).map(\.nodeID))
        var next = current
        next.replicas = target
        next.isr = target.filter(current.isr.contains)
        next.addingReplicas = nil
        next.removingReplicas = nil
        next.partitionEpoch += 1
        if !target.contains(current.leader) {
            next.leader = target.first { next.isr.contains($0) && eligible.contains($0) } ?? -1
            next.leaderEpoch += 1
        }
        return next
    }

    /// Elections: a dead or stopping leader replaced from the ISR, dead followers out of the ISR.
    static func electedRegistration(_ current: PartitionRegistration, image: MetadataImage, unclean: Bool) -> PartitionRegistration? {
        let alive = Set(image.brokers.map(\.nodeID))
        let eligible = Set(eligibleBrokers(image).map(\.nodeID))
        var next = current
        if current.leader >= 0 && eligible.contains(current.leader) {
            // The leader stays; dead or stopping followers leave the ISR.
            next.isr = current.isr.filter { $0 == current.leader || eligible.contains($0) }
            if next.isr == current.isr { return nil }
            next.partitionEpoch += 1
            return next
        }
        let liveISR = current.replicas.filter { current.isr.contains($0) && eligible.contains($0) }
        if let leader = liveISR.first {
            next.leader = leader
            next.isr = current.isr.filter { eligible.contains($0) }
        } else if unclean, let leader = current.replicas.first(where: eligible.contains) {
            next.leader = leader
            next.isr = [leader]
        } else if current.leader >= 0 && alive.contains(current.leader) {
            // Shutting down, but no other ISR member could take over: it keeps leading.
            return nil
        } else if current.leader >= 0 {
            // Offline: no ISR member is alive. The ISR keeps its last members (never empty), so
            // one of them coming back takes leadership again cleanly.
            next.leader = -1
            let kept = current.isr.filter { alive.contains($0) }
            next.isr = kept.isEmpty ? current.isr : kept
        } else {
            return nil
        }
        next.leaderEpoch += 1
        next.partitionEpoch += 1
        return next
    }

    private func createRequestedTopics(_ image: MetadataImage) async {
        let requests = state.withLock { s in s.kvs.filter { $0.key.hasPrefix(keys.topicRequests) } }
        for (key, kv) in requests.sorted(by: { $0.key < $1.key }) {
            let name = String(key.dropFirst(keys.topicRequests.count))
            guard let request = try? JSONDecoder().decode(TopicRequest.self, from: Data(kv.value)) else {
                _ = try? await client.delete(key)
                continue
            }
            do {
                _ = try await createTopic(name: name, partitions: request.partitions, replicationFactor: request.replicationFactor,
                                          configs: request.configs)
            } catch .invalidReplicationFactor(let why) {
                // Not enough brokers yet: kept until enough join.
                logger.debug("topic request waits for brokers", metadata: ["topic": "\(name)", "why": "\(why)"])
            } catch .notController, .unavailable {
                return
            } catch {
                logger.warning("topic request refused", metadata: ["topic": "\(name)", "error": "\(error)"])
                _ = try? await client.delete(key)
            }
        }
    }
}

// MARK: ElectLeaders and reassignments

extension EtcdMetadataStore {
    public func electLeaders(_ partitions: [TopicPartition]?, type: LeaderElectionType) async throws(MetadataError)
        -> [TopicPartition: (KafkaError, String?)]
    {
        // A partition the controller changed meanwhile (its reconcile) is decided again from the
        // newer state, a few times, before the client is told to retry.
        var results: [TopicPartition: (KafkaError, String?)] = [:]
        var pending = partitions
        for _ in 0..<3 {
            let round = try await electLeadersOnce(pending, type: type)
            results.merge(round.results) { _, new in new }
            if round.conflicted.isEmpty { break }
            pending = round.conflicted
        }
        return results
    }

    private func electLeadersOnce(_ partitions: [TopicPartition]?, type: LeaderElectionType) async throws(MetadataError)
        -> (results: [TopicPartition: (KafkaError, String?)], conflicted: [TopicPartition])
    {
        var conflicted: [TopicPartition] = []
        let epoch = try requireController()
        let (image, kvs) = snapshot()
        let eligible = Set(Self.eligibleBrokers(image).map(\.nodeID))
        let targets = partitions ?? image.topics.values.flatMap { topic in
            (0..<topic.partitionCount).map { TopicPartition(topic: topic.name, partition: $0) }
        }
        var results: [TopicPartition: (KafkaError, String?)] = [:]
        var writes: [(TopicPartition, PartitionRegistration)] = []
        for tp in targets {
            guard let current = image.partition(tp.topic, tp.partition) else {
                results[tp] = (.unknownTopicOrPartition, nil)
                continue
            }
            var next = current
            switch type {
            case .preferred:
                guard let preferred = current.targetReplicas.first else {
                    results[tp] = (.preferredLeaderNotAvailable, "the partition has no replicas")
                    continue
                }
                if current.leader == preferred {
                    results[tp] = (.electionNotNeeded, "the preferred replica \(preferred) leads already")
                    continue
                }
                guard eligible.contains(preferred), current.isr.contains(preferred) else {
                    results[tp] = (.preferredLeaderNotAvailable, "the preferred replica \(preferred) is not alive and in the ISR \(current.isr)")
                    continue
                }
                next.leader = preferred
            case .unclean:
                if current.leader >= 0 && eligible.contains(current.leader) {
                    results[tp] = (.electionNotNeeded, "broker \(current.leader) leads already")
                    continue
                }
                if let leader = current.replicas.first(where: { current.isr.contains($0) && eligible.contains($0) }) {
                    next.leader = leader
                    next.isr = current.isr.filter(eligible.contains)
                } else if let leader = current.replicas.first(where: eligible.contains) {
                    logger.warning("unclean leader election", metadata: ["partition": "\(tp)", "leader": "\(leader)", "isr": "\(current.isr)"])
                    next.leader = leader
                    next.isr = [leader]
                } else {
                    results[tp] = (.eligibleLeadersNotAvailable, "no replica of \(current.replicas) is alive")
                    continue
                }
            }
            next.leaderEpoch += 1
            next.partitionEpoch += 1
            next.controllerEpoch = epoch
            writes.append((tp, next))
        }
        for chunk in stride(from: 0, to: writes.count, by: 60).map({ Array(writes[$0..<Swift.min($0 + 60, writes.count)]) }) {
            let compares = chunk.flatMap { write in
                [EtcdCompare.unchanged(keys.partition(write.0.topic, write.0.partition), since: kvs[keys.partition(write.0.topic, write.0.partition)]?.modRevision ?? 0),
                 EtcdCompare(key: keys.topic(write.0.topic), .createRevision(kvs[keys.topic(write.0.topic)]?.createRevision ?? 0))]
            }
            let ops = chunk.map { EtcdOperation.put(key: keys.partition($0.0.topic, $0.0.partition), value: encode($0.1)) }
            let written = try await fencedTxn(epoch: epoch, compares, ops)
            for (tp, next) in chunk {
                if written {
                    results[tp] = (.noError, nil)
                    logger.info("elected leader on request", metadata: ["partition": "\(tp)", "leader": "\(next.leader)", "type": "\(type)"])
                } else {
                    results[tp] = (.electionNotNeeded, "the partition changed meanwhile; try again")
                    conflicted.append(tp)
                }
            }
        }
        return (results, conflicted)
    }

    public func reassign(_ tp: TopicPartition, to replicas: [Int32]?) async throws(MetadataError) {
        let epoch = try requireController()
        let (image, kvs) = snapshot()
        guard let current = image.partition(tp.topic, tp.partition), let topicKV = kvs[keys.topic(tp.topic)] else {
            throw MetadataError.unknownTopic("partition \(tp) does not exist")
        }
        let original = current.replicas.filter { !(current.addingReplicas ?? []).contains($0) }
        var next = current
        if let target = replicas {
            guard !target.isEmpty, Set(target).count == target.count else {
                throw MetadataError.invalidReplicaAssignment("the replicas \(target) are empty or name a broker twice")
            }
            let registered = Set(image.brokers.map(\.nodeID))
            guard target.allSatisfy(registered.contains) else {
                throw MetadataError.invalidReplicaAssignment("the replicas \(target) name brokers that are not registered (live: \(registered.sorted()))")
            }
            if target == original {
                next.replicas = original
                next.addingReplicas = nil
                next.removingReplicas = nil
            } else {
                let removing = original.filter { !target.contains($0) }
                let adding = target.filter { !original.contains($0) }
                next.replicas = target + removing
                // A reorder of the same replicas is done at once: nothing to add or remove.
                next.addingReplicas = adding.isEmpty && removing.isEmpty ? nil : adding
                next.removingReplicas = adding.isEmpty && removing.isEmpty ? nil : removing
            }
        } else {
            guard current.addingReplicas != nil || current.removingReplicas != nil else {
                throw MetadataError.noReassignmentInProgress("partition \(tp) has no reassignment in progress")
            }
            next.replicas = original
            next.isr = current.isr.filter(original.contains)
            next.addingReplicas = nil
            next.removingReplicas = nil
            if !original.contains(current.leader) {
                next.leader = original.first(where: next.isr.contains) ?? -1
                next.leaderEpoch += 1
            }
        }
        guard next != current else { return }
        next.partitionEpoch += 1
        next.controllerEpoch = epoch
        let key = keys.partition(tp.topic, tp.partition)
        guard try await fencedTxn(epoch: epoch, [.unchanged(key, since: kvs[key]?.modRevision ?? 0),
                                                 EtcdCompare(key: keys.topic(tp.topic), .createRevision(topicKV.createRevision))],
                                  [.put(key: key, value: encode(next))]) else {
            throw MetadataError.invalidReplicaAssignment("partition \(tp) changed meanwhile; try again")
        }
        logger.info("reassignment", metadata: [
            "partition": "\(tp)", "replicas": "\(next.replicas)", "adding": "\(next.addingReplicas ?? [])",
            "removing": "\(next.removingReplicas ?? [])",
        ])
        scheduleReconcile()
    }
}
