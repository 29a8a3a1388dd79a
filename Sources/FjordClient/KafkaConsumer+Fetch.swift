import FjordProtocol
import Logging
import NIOCore

/// The client side of one incremental fetch session with one broker (KIP-227).
///
/// The first request (id 0, epoch 0) is a full fetch that asks the broker for a session; after
/// it, each request carries only partitions whose fetch offset changed, and `forgotten` ones
/// that left the fetch. Any session error, or a failed request, drops back to a full fetch.
struct FetchSession: Sendable {
    var id: Int32 = 0
    var epoch: Int32 = 0
    /// What the broker's session holds: partition → fetch offset.
    var partitions: [TopicPartition: Int64] = [:]

    mutating func reset() { self = FetchSession() }

    var isIncremental: Bool { id != 0 && epoch > 0 }
}

extension KafkaConsumer {
    /// One fetch round: a Fetch to the leader of each fetchable partition, concurrently,
    /// each long-polling up to `fetch.max.wait.ms`.
    func fetch() async throws -> [FetchedPartition] {
        let wanted = fetchablePartitions()
        guard !wanted.isEmpty else {
            try await Task.sleep(for: .milliseconds(Int(configuration.fetchMaxWaitMs)))
            return []
        }
        var byLeader: [Int32: [(TopicPartition, Int64)]] = [:]
        for (tp, offset) in wanted {
            do {
                let leader = try await cluster.leader(topic: tp.topic, partition: tp.partition).node
                byLeader[leader, default: []].append((tp, offset))
            } catch let error as ClientError where error.isRetriable {
                logger.debug("no leader for fetch", metadata: ["partition": "\(tp)", "error": "\(error)"])
            }
        }
        if byLeader.isEmpty {
            try await Task.sleep(for: .milliseconds(configuration.client.retryBackoffMs))
            return []
        }
        if byLeader.count == 1, let (node, entries) = byLeader.first {
            return try await fetch(from: node, entries)
        }
        return try await withThrowingTaskGroup(of: [FetchedPartition].self) { group in
            for (node, entries) in byLeader {
                group.addTask { try await self.fetch(from: node, entries) }
            }
            var all: [FetchedPartition] = []
            for try await part in group { all += part }
            return all
        }
    }

    private func fetch(from node: Int32, _ entries: [(TopicPartition, Int64)]) async throws -> [FetchedPartition] {
        var session = sessions[node] ?? FetchSession()
        let wanted = Dictionary(entries, uniquingKeysWith: { $1 })
        var request = FetchRequest()
        request.replicaId = -1
        request.maxWaitMs = configuration.fetchMaxWaitMs
        request.minBytes = configuration.fetchMinBytes
        request.maxBytes = configuration.fetchMaxBytes
        request.isolationLevel = configuration.readCommitted ? 1 : 0
        request.sessionId = session.id
        request.sessionEpoch = session.epoch
        let changed = session.isIncremental ? entries.filter { session.partitions[$0.0] != $0.1 } : entries
        let forgotten = session.isIncremental ? session.partitions.keys.filter { wanted[$0] == nil } : []
        request.topics = Self.group(changed) { tp, offset in
            var partition = FetchRequest.FetchPartition()
            partition.partition = tp.partition
            partition.fetchOffset = offset
            partition.partitionMaxBytes = configuration.maxPartitionFetchBytes
            partition.currentLeaderEpoch = -1
            partition.logStartOffset = -1
            partition.lastFetchedEpoch = -1
            return partition
        }.map { name, partitions in
            var topic = FetchRequest.FetchTopic()
            topic.topic = name
            topic.partitions = partitions
            return topic
        }
        request.forgottenTopicsData = Self.group(forgotten.map { ($0, Int64(0)) }) { tp, _ in tp.partition }.map { name, partitions in
            var topic = FetchRequest.ForgottenTopic()
            topic.topic = name
            topic.partitions = partitions
            return topic
        }
        let response: FetchResponse
        do {
            let connection = try await cluster.connection(to: node)
            let version = try connection.version(of: .fetch, max: 12)
            if version < 7 {
                request.sessionId = 0
                request.sessionEpoch = -1
            }
            let wait = TimeAmount.milliseconds(Int64(configuration.fetchMaxWaitMs))
            response = try await connection.send(request, version: version, timeout: connection.requestTimeout + wait)
        } catch {
            sessions[node] = nil
            if let error = error as? ClientError, error.isRetriable {
                logger.debug("fetch failed", metadata: ["node": "\(node)", "error": "\(error)"])
                try await Task.sleep(for: .milliseconds(configuration.client.retryBackoffMs))
                return []
            }
            throw error
        }
        switch KafkaError(code: response.errorCode) {
        case .noError:
            break
        case .fetchSessionIdNotFound, .invalidFetchSessionEpoch:
            sessions[node] = nil
            return []
        case let error:
            sessions[node] = nil
            throw ClientError.kafka(error, "Fetch")
        }
        // Advance the session: it now holds exactly `wanted`.
        if response.sessionId != 0 {
            if session.id != response.sessionId {
                session.id = response.sessionId
                session.epoch = 1
            } else {
                session.epoch = session.epoch == Int32.max ? 1 : session.epoch + 1
            }
            session.partitions = wanted
        } else {
            session.reset()
        }
        sessions[node] = session

        var out: [FetchedPartition] = []
        for topic in response.responses {
            for data in topic.partitions {
                let tp = TopicPartition(topic.topic, data.partitionIndex)
                guard let fetchOffset = wanted[tp] else { continue }
                let error = KafkaError(code: data.errorCode)
                if error != .noError {
                    // The partition stays in the broker's session; a sentinel offset makes the next
                    // request name it again (or forget it, if it moved to another leader).
                    sessions[node]?.partitions[tp] = -1
                    out.append(FetchedPartition(tp: tp, fetchOffset: fetchOffset, records: [], nextOffset: fetchOffset, error: error))
                    continue
                }
                guard var bytes = data.records, bytes.readableBytes > 0 else { continue }
                // read_committed: the broker lists aborted transactions (producer, first offset);
                // a producer's transactional batches from that offset up to its abort marker are skipped.
                var pendingAborts = (configuration.readCommitted ? data.abortedTransactions ?? [] : [])
                    .sorted { $0.firstOffset < $1.firstOffset }[...]
                var aborting: Set<Int64> = []
                var records: [ConsumerRecord] = []
                var next = fetchOffset
                do {
                    while let batch = try RecordBatch.read(from: &bytes) {
                        if configuration.checkCRCs { try batch.validate() }
                        while let first = pendingAborts.first, first.firstOffset <= batch.lastOffset {
                            aborting.insert(first.producerId)
                            pendingAborts.removeFirst()
                        }
                        let isAborted = batch.attributes.isTransactional && aborting.contains(batch.producerID)
                        if batch.attributes.isControl && batch.attributes.isTransactional {
                            aborting.remove(batch.producerID)  // the marker ends the transaction
                        }
                        let skip = batch.attributes.isControl || isAborted
                        if !skip {
                            // Decoded straight into the records handed out: no intermediate array.
                            records.reserveCapacity(records.count + Int(Swift.max(0, batch.recordCount)))
                            var iterator = try batch.makeRecordIterator()
                            while let record = try iterator.next() {
                                guard record.offset >= next else { continue }  // before the fetch offset
                                records.append(ConsumerRecord(topic: tp.topic, partition: tp.partition, offset: Offset(record.offset),
                                                              timestamp: record.timestamp, key: record.key, value: record.value,
                                                              headers: record.headers))
                            }
                        }
                        next = Swift.max(next, batch.nextOffset)
                    }
                } catch {
                    throw ClientError.protocolViolation("\(tp) at \(next): \(error)")
                }
                if next > fetchOffset || !records.isEmpty {
                    out.append(FetchedPartition(tp: tp, fetchOffset: fetchOffset, records: records, nextOffset: next))
                }
            }
        }
        return out
    }

    static func group<T>(_ entries: [(TopicPartition, Int64)], _ make: (TopicPartition, Int64) -> T) -> [(String, [T])] {
        var order: [String] = []
        var byTopic: [String: [T]] = [:]
        for (tp, offset) in entries {
            if byTopic[tp.topic] == nil { order.append(tp.topic) }
            byTopic[tp.topic, default: []].append(make(tp, offset))
        }
        return order.map { ($0, byTopic[$0] ?? []) }
    }
}
