import FjordMetadata
import FjordProtocol
import FjordStorage
import Logging
import NIOCore

extension KafkaAPIs {
    // MARK: Produce

    /// Produce: validates and appends each partition's batches (no re-encoding), then answers
    /// per partition. acks=0 returns nil (no response is sent). acks=all is refused with
    /// NOT_ENOUGH_REPLICAS when the ISR is smaller than `min.insync.replicas`, and otherwise
    /// answered once the high watermark passes the records (every ISR member has them: Kafka's
    /// `DelayedProduce`) or `timeout_ms` passes. With `log.flush.on.ack`, acks≠0 also waits for a
    /// group-commit fsync before answering.
    func handleProduce(_ request: ProduceRequest, version: Int16, listener: String, access: Access = .unrestricted,
                       requestBytes: Int = 0, admitNext: (@Sendable () -> Void)? = nil) async -> ProduceResponse? {
        var response = ProduceResponse()
        let now = clock()
        let image = metadata.image
        var durabilityWaits: [(LocalLog, Offset)] = []
        var replicationWaits: [(partition: Partition, through: Offset, minInSync: Int)] = []
        for topic in request.topicData {
            var topicResponse = ProduceResponse.TopicProduceResponse()
            topicResponse.name = topic.name
            for data in topic.partitionData {
                var partitionResponse = ProduceResponse.PartitionProduceResponse()
                partitionResponse.index = data.index
                partitionResponse.baseOffset = -1
                partitionResponse.logAppendTimeMs = -1
                partitionResponse.logStartOffset = -1
                defer { topicResponse.partitionResponses.append(partitionResponse) }
                if version < 3 {
                    // Message format v0/v1 (Produce v0–2) is refused, as Kafka 4.0 does.
                    partitionResponse.errorCode = KafkaError.unsupportedVersion.code
                    continue
                }
                if topic.name == GroupCoordinator.topic {
                    // As Kafka: internal topics are written by the broker only (forged group
                    // records would be replayed at the next start).
                    partitionResponse.errorCode = KafkaError.invalidTopicException.code
                    partitionResponse.errorMessage = "Cannot append to internal topic \(topic.name)"
                    continue
                }
                if !access.allows(.write, topic: topic.name) {
                    partitionResponse.errorCode = KafkaError.topicAuthorizationFailed.code
                    continue
                }
                if request.transactionalId != nil {
                    partitionResponse.errorCode = KafkaError.invalidRequest.code
                    partitionResponse.errorMessage = "transactions are not supported by this broker yet"
                    continue
                }
                let partition: Partition
                switch leaderPartition(TopicPartition(topic: topic.name, partition: data.index), image) {
                case .success(let found): partition = found
                case .failure(let error):
                    partitionResponse.errorCode = error.code
                    continue
                }
                guard let records = data.records, records.readableBytes > 0 else {
                    partitionResponse.errorCode = KafkaError.corruptMessage.code
                    partitionResponse.errorMessage = "no records"
                    continue
                }
                let minInSync = minInSyncReplicas(topic.name, image) ?? 1
                if request.acks == -1, case let isr = partition.inSyncReplicas, isr.count < minInSync {
                    partitionResponse.errorCode = KafkaError.notEnoughReplicas.code
                    partitionResponse.errorMessage = "the ISR \(isr) has fewer than min.insync.replicas=\(minInSync) members"
                    continue
                }
                do throws(StorageError) {
                    guard let info = try replicaManager.appendRecords(records, to: partition, nowMs: now) else {
                        partitionResponse.errorCode = KafkaError.notLeaderOrFollower.code
                        continue
                    }
                    if !info.isDuplicate {
                        metrics.produced(topic: topic.name, bytes: records.readableBytes,
                                         records: Int(info.lastOffset.rawValue - info.firstOffset.rawValue + 1))
                    }
                    partitionResponse.baseOffset = info.firstOffset.rawValue
                    partitionResponse.logAppendTimeMs = info.logAppendTime
                    partitionResponse.logStartOffset = partition.log.logStartOffset.rawValue
                    if request.acks != 0 && partition.log.config.flushOnAck && !info.isDuplicate {
                        durabilityWaits.append((partition.log, info.lastOffset + 1))
                    }
                    // A retried duplicate waits too: the first attempt may not be replicated yet.
                    if request.acks == -1 && !partition.isrIsLeaderOnly {
                        replicationWaits.append((partition, info.lastOffset + 1, minInSync))
                    }
                } catch {
                    let code = Self.kafkaError(error)
                    partitionResponse.errorCode = code.code
                    partitionResponse.errorMessage = error.description
                    if case .wrongExpectedVersion(let conflicts) = error {
                        // KIP-467: one entry per refused record, each naming its stream and actual version.
                        partitionResponse.recordErrors = conflicts.map { conflict in
                            var recordError = ProduceResponse.BatchIndexAndErrorMessage()
                            recordError.batchIndex = Int32(clamping: conflict.recordIndex)
                            recordError.batchIndexErrorMessage = conflict.description
                            return recordError
                        }
                    } else if code == .invalidRecord || code == .corruptMessage {
                        var recordError = ProduceResponse.BatchIndexAndErrorMessage()
                        recordError.batchIndexErrorMessage = error.description
                        partitionResponse.recordErrors = [recordError]
                    }
                    if code == .kafkaStorageError {
                        logger.error("append failed", metadata: ["partition": "\(partition.topicPartition)", "error": "\(error)"])
                    }
                }
            }
            response.responses.append(topicResponse)
        }
        // producer_byte_rate: the whole request counts, as Kafka's `request.sizeInBytes`.
        recordBytes(.producerByteRate, requestBytes)
        // Every record of this request is in its log, in request order: the connection may start
        // its next request while this one waits for replication or an fsync. Not under quotas,
        // where this request's throttle must mute the connection before the next one starts.
        if RequestQuotaScope.current == nil { admitNext?() }
        guard request.acks != 0 else { return nil }
        if !replicationWaits.isEmpty {
            let timeoutMs = Int64(request.timeoutMs)
            let results = await RequestQuotaScope.parked { await withTaskGroup(of: (TopicPartition, KafkaError).self) { group in
                for wait in replicationWaits {
                    group.addTask { [replicaManager, clock] in
                        (wait.partition.topicPartition, await replicaManager.awaitReplication(
                            wait.partition, through: wait.through, minInSync: wait.minInSync, timeoutMs: timeoutMs, clock: clock))
                    }
                }
                var results: [TopicPartition: KafkaError] = [:]
                for await (tp, error) in group where error != .noError { results[tp] = error }
                return results
            } }
            for t in response.responses.indices {
                for p in response.responses[t].partitionResponses.indices {
                    let tp = TopicPartition(topic: response.responses[t].name, partition: response.responses[t].partitionResponses[p].index)
                    guard let error = results[tp], response.responses[t].partitionResponses[p].errorCode == 0 else { continue }
                    response.responses[t].partitionResponses[p].errorCode = error.code
                    response.responses[t].partitionResponses[p].errorMessage = switch error {
                    case .notEnoughReplicasAfterAppend: "written, but the ISR shrank below min.insync.replicas before it was replicated"
                    case .requestTimedOut: "the in-sync replicas did not replicate the records within timeout_ms"
                    default: "leadership moved before the records were replicated"
                    }
                }
            }
        }
        if version >= 10 { addLeaderHints(to: &response, listener: listener) }
        for (log, offset) in durabilityWaits {
            do {
                try await RequestQuotaScope.parked { try await log.flushed(through: offset, runFlush: replicaManager.logManager.flushRunner) }
            } catch {
                logger.error("fsync failed", metadata: ["partition": "\(log.topicPartition)", "error": "\(error)"])
                for t in response.responses.indices where response.responses[t].name == log.topicPartition.topic {
                    for p in response.responses[t].partitionResponses.indices
                    where response.responses[t].partitionResponses[p].index == log.topicPartition.partition {
                        response.responses[t].partitionResponses[p].errorCode = KafkaError.kafkaStorageError.code
                    }
                }
            }
        }
        return response
    }

    /// `min.insync.replicas` of a topic (its override, the dynamic or static broker default), or
    /// nil when it is 1.
    func minInSyncReplicas(_ topic: String, _ image: MetadataImage) -> Int? {
        let text = image.topics[topic]?.configs["min.insync.replicas"] ?? image.brokerConfigs["min.insync.replicas"]
            ?? config.raw["min.insync.replicas"]
        guard let text, let value = Int(text), value > 1 else { return nil }
        return value
    }

    /// KIP-951 (Produce v10+): a partition answered NOT_LEADER_OR_FOLLOWER names its current
    /// leader and epoch, and the response carries the leader's endpoint.
    private func addLeaderHints(to response: inout ProduceResponse, listener: String) {
        var endpoints: [Int32: BrokerRegistration] = [:]
        for t in response.responses.indices {
            for p in response.responses[t].partitionResponses.indices
            where response.responses[t].partitionResponses[p].errorCode == KafkaError.notLeaderOrFollower.code {
                guard let hint = currentLeader(of: TopicPartition(topic: response.responses[t].name,
                                                                  partition: response.responses[t].partitionResponses[p].index),
                                              listener: listener)
                else { continue }
                response.responses[t].partitionResponses[p].currentLeader.leaderId = hint.endpoint.nodeID
                response.responses[t].partitionResponses[p].currentLeader.leaderEpoch = hint.leaderEpoch.rawValue
                endpoints[hint.endpoint.nodeID] = hint.endpoint
            }
        }
        response.nodeEndpoints = endpoints.keys.sorted().compactMap { endpoints[$0].map(ProduceResponse.NodeEndpoint.init) }
    }

    /// Where a partition's leader is now (KIP-951's hint), or nil when unknown. On a single node
    /// this broker leads every partition it hosts, at the partition's leader epoch.
    func currentLeader(of tp: TopicPartition, listener: String) -> (endpoint: BrokerRegistration, leaderEpoch: LeaderEpoch)? {
        if clustered {
            let image = metadata.image
            guard let registration = image.partition(tp.topic, tp.partition), let leader = image.broker(registration.leader) else {
                return nil
            }
            return (leader.on(listener: listener), LeaderEpoch(registration.leaderEpoch))
        }
        guard let partition = replicaManager.partition(tp) else { return nil }
        return (config.registration.on(listener: listener), partition.leaderEpoch)
    }

    // MARK: Fetch

    /// Fetch: reads each partition as a file region (zero copy) up to the partition and response
    /// byte limits, never past the high watermark (or LSO for read_committed), and long-polls up
    /// to `max.wait.ms` until `min.bytes` arrive. From v7, incremental fetch sessions (KIP-227)
    /// through `FetchSessionCache`.
    func handleFetch(_ request: FetchRequest, request frame: RequestFrame, listener: String, access: Access = .unrestricted) async -> BrokerReply {
        let version = frame.apiVersion
        var requested: [(FetchSessionCache.Key, FetchSessionCache.PartitionState)] = []
        let image = metadata.image
        for topic in request.topics {
            let name = version >= 13 ? topicName(id: topic.topicId, image) : topic.topic
            for partition in topic.partitions {
                requested.append((FetchSessionCache.Key(topic: name, partition: partition.partition),
                                  FetchSessionCache.PartitionState(topicID: topic.topicId, fetchOffset: partition.fetchOffset,
                                                                   maxBytes: partition.partitionMaxBytes,
                                                                   currentLeaderEpoch: partition.currentLeaderEpoch)))
            }
        }
        var forgotten: [FetchSessionCache.Key] = []
        for topic in request.forgottenTopicsData {
            let name = version >= 13 ? topicName(id: topic.topicId, image) : topic.topic
            forgotten += topic.partitions.map { FetchSessionCache.Key(topic: name, partition: $0) }
        }
        let lookup: FetchSessionCache.Lookup
        let partitions: [(FetchSessionCache.Key, FetchSessionCache.PartitionState)]
        if version >= 7 {
            (lookup, partitions) = fetchSessions.resolve(sessionID: request.sessionId, epoch: request.sessionEpoch,
                                                         requested: requested, forgotten: forgotten, nowMs: clock())
        } else {
            (lookup, partitions) = (.sessionless, requested)
        }
        var result: FetchResult
        if case .error(let error) = lookup {
            result = FetchResult()
            result.body.errorCode = error.code
        } else {
            let deadline = clock() + Int64(Swift.max(0, request.maxWaitMs))
            result = fetchOnce(partitions, request: request, version: version, access: access)
            while result.bytes < Int(request.minBytes) && !result.hasError {
                let remaining = deadline - clock()
                guard remaining > 0 else { break }
                await RequestQuotaScope.parked { await replicaManager.purgatory.wait(for: result.partitions, timeoutMs: remaining) }
                result = fetchOnce(partitions, request: request, version: version, access: access)
            }
            var sessionID: Int32 = 0
            var incremental = false
            switch lookup {
            case .created(let id): sessionID = id
            case .incremental(let id): sessionID = id; incremental = true
            default: break
            }
            result.body.sessionId = sessionID
            let follower = (version >= 15 ? request.replicaState.replicaId : request.replicaId) >= 0
            for (key, _, data) in result.entries {
                if let region = data.recordsRegion { metrics.fetched(topic: key.topic, bytes: region.length, byFollower: follower) }
            }
            if version >= 16 { addLeaderHints(to: &result, listener: listener) }
            // consumer_byte_rate: the records served count; a follower's fetch never does.
            if !follower, let scope = RequestQuotaScope.current {
                recordBytes(.consumerByteRate, result.bytes)
                result.body.throttleTimeMs = Int32(clamping: scope.throttleMs)
            }
            // Group partitions by topic in request order; incremental sessions send only changes.
            var topics: [FetchResponse.FetchableTopicResponse] = []
            for (key, topicID, data) in result.entries {
                if sessionID != 0 {
                    let include = fetchSessions.noteResponse(
                        sessionID: sessionID, key: key, highWatermark: data.highWatermark, logStartOffset: data.logStartOffset,
                        lastStableOffset: data.lastStableOffset, hasRecords: data.recordsRegion != nil,
                        hasError: data.errorCode != 0)
                    if incremental && !include { continue }
                }
                if let last = topics.last, last.topic == key.topic && last.topicId == topicID {
                    topics[topics.count - 1].partitions.append(data)
                } else {
                    var topic = FetchResponse.FetchableTopicResponse()
                    topic.topic = version >= 13 ? "" : key.topic
                    topic.topicId = version >= 13 ? topicID : .zero
                    topic.partitions = [data]
                    topics.append(topic)
                }
            }
            result.body.responses = topics
        }
        var buffer = ByteBuffer()
        var splices: [ZeroCopySplice] = []
        do {
            try ResponseFrame.encode(result.body, version: version, correlationID: frame.correlationID,
                                     into: &buffer, splices: &splices)
        } catch {
            logger.error("cannot encode Fetch v\(version) response: \(error)")
            return .closeConnection(reason: "cannot encode fetch response: \(error)")
        }
        // Interleave the encoded bytes with the file regions at their splice points.
        var parts: [ResponsePart] = []
        var cursor = buffer.readerIndex
        for splice in splices {
            if let bytes = buffer.getSlice(at: cursor, length: splice.position - cursor), bytes.readableBytes > 0 {
                parts.append(.bytes(bytes))
            }
            parts.append(.file(result.slices[splice.region.token]))
            cursor = splice.position
        }
        if let tail = buffer.getSlice(at: cursor, length: buffer.writerIndex - cursor), tail.readableBytes > 0 {
            parts.append(.bytes(tail))
        }
        return .response(parts)
    }

    /// The topic a Fetch v13+ names by id. An id no hosted or known topic has gets a key no
    /// topic name can take (names are `[a-zA-Z0-9._-]`), distinct per id, so the partition is
    /// answered UNKNOWN_TOPIC_ID under its own id and a fetch session keeps unknown ids apart.
    private func topicName(id: KafkaUUID, _ image: MetadataImage) -> String {
        replicaManager.topicName(id: id) ?? image.topic(id: id)?.name ?? "\u{0}unknown-topic-id:\(id)"
    }

    /// KIP-951 (Fetch v16+): a partition answered NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH
    /// names its current leader and epoch, and the response carries that leader's endpoint, so
    /// the consumer moves there without a Metadata round trip.
    private func addLeaderHints(to result: inout FetchResult, listener: String) {
        var endpoints: [Int32: BrokerRegistration] = [:]
        for index in result.entries.indices {
            let code = result.entries[index].2.errorCode
            guard code == KafkaError.notLeaderOrFollower.code || code == KafkaError.fencedLeaderEpoch.code,
                let hint = currentLeader(of: TopicPartition(topic: result.entries[index].0.topic,
                                                            partition: result.entries[index].0.partition),
                                    listener: listener)
            else { continue }
            result.entries[index].2.currentLeader.leaderId = hint.endpoint.nodeID
            result.entries[index].2.currentLeader.leaderEpoch = hint.leaderEpoch.rawValue
            endpoints[hint.endpoint.nodeID] = hint.endpoint
        }
        result.body.nodeEndpoints = endpoints.keys.sorted().compactMap { endpoints[$0].map(FetchResponse.NodeEndpoint.init) }
    }

    struct FetchResult {
        var body = FetchResponse()
        var entries: [(FetchSessionCache.Key, KafkaUUID, FetchResponse.PartitionData)] = []
        var slices: [FileSlice] = []
        var bytes = 0
        var hasError = false
        var partitions: Set<TopicPartition> = []
    }

    /// One read of every partition. A consumer needs READ on each topic, a follower CLUSTER_ACTION
    /// on the cluster; a partition it may not read is answered TOPIC_AUTHORIZATION_FAILED.
    private func fetchOnce(_ partitions: [(FetchSessionCache.Key, FetchSessionCache.PartitionState)], request: FetchRequest,
                           version: Int16, access: Access) -> FetchResult {
        var result = FetchResult()
        let image = metadata.image
        var remaining = Int(request.maxBytes <= 0 ? Int32.max : request.maxBytes)
        // A follower (replica id ≥ 0) reads up to the log end; consumers only what is committed.
        let replicaID = version >= 15 ? request.replicaState.replicaId : request.replicaId
        let upperBound: ReadUpperBound = replicaID >= 0 ? .logEndOffset : request.isolationLevel == 1 ? .lastStableOffset : .highWatermark
        let now = clock()
        var first = true
        let replicaAuthorized = replicaID < 0 || access.allowsCluster(.clusterAction)
        for (key, fetch) in partitions {
            var data = FetchResponse.PartitionData()
            data.partitionIndex = key.partition
            // Every answer carries a record set, empty on errors, as Kafka's broker sends
            // (MemoryRecords.EMPTY): a null one in a non-flexible version is a MessageSetSize of -1,
            // which librdkafka 2.0 rejects with the whole response.
            data.records = ByteBuffer()
            data.highWatermark = -1
            data.lastStableOffset = -1
            data.logStartOffset = -1
            defer { result.entries.append((key, fetch.topicID, data)) }
            guard replicaID >= 0 ? replicaAuthorized : access.allows(.read, topic: key.topic) else {
                data.errorCode = KafkaError.topicAuthorizationFailed.code
                result.hasError = true
                continue
            }
            let partition: Partition
            switch leaderPartition(TopicPartition(topic: key.topic, partition: key.partition), image) {
            case .success(let found): partition = found
            case .failure(let error):
                data.errorCode = (error == .unknownTopicOrPartition && version >= 13 ? KafkaError.unknownTopicId : error).code
                result.hasError = true
                continue
            }
            if let error = Self.checkLeaderEpoch(fetch.currentLeaderEpoch, partition) {
                data.errorCode = error.code
                result.hasError = true
                continue
            }
            if replicaID >= 0, let error = followerFetched(partition, replicaID: replicaID, fetchOffset: fetch.fetchOffset, nowMs: now) {
                data.errorCode = error.code
                result.hasError = true
                continue
            }
            result.partitions.insert(partition.topicPartition)
            let maxBytes = Swift.min(Int(Swift.max(0, fetch.maxBytes)), remaining)
            do {
                let read = try partition.log.read(from: Offset(fetch.fetchOffset), maxBytes: maxBytes, upperBound: upperBound,
                                                  minOneMessage: first)
                data.highWatermark = read.highWatermark.offset.rawValue
                data.lastStableOffset = read.lastStableOffset.rawValue
                data.logStartOffset = read.logStartOffset.rawValue
                // As Kafka: the aborted transactions are listed for read_committed (none here,
                // as no transaction is ever aborted in this log) and null for read_uncommitted.
                data.abortedTransactions = request.isolationLevel == 1 ? [] : nil
                if let slice = read.records, slice.length > 0 {
                    data.recordsRegion = ZeroCopyRegion(length: slice.length, token: result.slices.count)
                    result.slices.append(slice)
                    result.bytes += slice.length
                    remaining -= slice.length
                    first = false
                } else {
                    data.records = ByteBuffer()
                }
            } catch {
                data.errorCode = Self.kafkaError(error).code
                data.highWatermark = partition.log.highWatermark.offset.rawValue
                data.logStartOffset = partition.log.logStartOffset.rawValue
                result.hasError = true
            }
        }
        return result
    }

    /// A follower's fetch at `fetchOffset` tells the leader how far it replicated: the high
    /// watermark may advance (waking acks=all produces and consumers), and a follower that
    /// caught up is proposed for the ISR. A broker that is not one of the partition's replicas
    /// is refused with NOT_LEADER_OR_FOLLOWER, as Kafka does, and so is an offset past the log
    /// end (the follower must truncate first; the read answers OFFSET_OUT_OF_RANGE).
    private func followerFetched(_ partition: Partition, replicaID: Int32, fetchOffset: Int64, nowMs: Int64) -> KafkaError? {
        guard fetchOffset <= partition.log.logEndOffset.rawValue else { return nil }
        // KIP-841: a follower the controller would drop again (gone, or shutting down) is not
        // proposed for the ISR, or leader and controller would undo each other's changes.
        let eligible = !clustered || metadata.image.broker(replicaID).map { $0.inControlledShutdown != true } ?? false
        guard let outcome = partition.followerFetched(replicaID: replicaID, fetchOffset: fetchOffset, nowMs: nowMs,
                                                      isrEligible: eligible) else {
            return .notLeaderOrFollower
        }
        if outcome.highWatermarkMoved { replicaManager.purgatory.wake(partition.topicPartition) }
        if let expansion = outcome.expansion { alterISR(partition, expansion) }
        return nil
    }

    // MARK: ListOffsets

    func handleListOffsets(_ request: ListOffsetsRequest, version: Int16, access: Access = .unrestricted) -> ListOffsetsResponse {
        var response = ListOffsetsResponse()
        let image = metadata.image
        for topic in request.topics {
            var topicResponse = ListOffsetsResponse.ListOffsetsTopicResponse()
            topicResponse.name = topic.name
            for query in topic.partitions {
                var answer = ListOffsetsResponse.ListOffsetsPartitionResponse()
                answer.partitionIndex = query.partitionIndex
                answer.timestamp = -1
                answer.offset = -1
                answer.leaderEpoch = -1
                defer { topicResponse.partitions.append(answer) }
                guard access.allows(.describe, topic: topic.name) else {
                    answer.errorCode = KafkaError.topicAuthorizationFailed.code
                    continue
                }
                let partition: Partition
                switch leaderPartition(TopicPartition(topic: topic.name, partition: query.partitionIndex), image) {
                case .success(let found): partition = found
                case .failure(let error):
                    answer.errorCode = error.code
                    continue
                }
                if let error = Self.checkLeaderEpoch(query.currentLeaderEpoch, partition) {
                    answer.errorCode = error.code
                    continue
                }
                do {
                    if query.timestamp == LocalLog.latestTieredTimestamp {
                        // Nothing is tiered (no remote storage): Kafka answers -1 when remote
                        // storage is disabled.
                        continue
                    } else if query.timestamp == LocalLog.latestTimestamp {
                        // Latest is the HW (or LSO for read_committed), as consumers see it.
                        answer.offset = (request.isolationLevel == 1 ? partition.log.lastStableOffset : partition.log.highWatermark.offset).rawValue
                        if version >= 4 { answer.leaderEpoch = partition.leaderEpoch.rawValue }
                    } else if let found = try partition.log.offset(forTimestamp: query.timestamp) {
                        answer.offset = found.offset.rawValue
                        answer.timestamp = found.timestamp
                        if version >= 4 { answer.leaderEpoch = found.leaderEpoch.rawValue }
                    }
                } catch {
                    answer.errorCode = Self.kafkaError(error).code
                }
            }
            response.topics.append(topicResponse)
        }
        return response
    }

    // MARK: OffsetForLeaderEpoch

    /// A follower (replica id ≥ 0) needs CLUSTER_ACTION on the cluster, a consumer DESCRIBE on
    /// the topic; else the partition is answered TOPIC_AUTHORIZATION_FAILED.
    func handleOffsetForLeaderEpoch(_ request: OffsetForLeaderEpochRequest, access: Access = .unrestricted) -> OffsetForLeaderEpochResponse {
        var response = OffsetForLeaderEpochResponse()
        let replicaAuthorized = request.replicaId < 0 || access.allowsCluster(.clusterAction)
        for topic in request.topics {
            var topicResult = OffsetForLeaderEpochResponse.OffsetForLeaderTopicResult()
            topicResult.topic = topic.topic
            for query in topic.partitions {
                var result = OffsetForLeaderEpochResponse.EpochEndOffset()
                result.partition = query.partition
                result.leaderEpoch = -1
                result.endOffset = -1
                defer { topicResult.partitions.append(result) }
                guard request.replicaId >= 0 ? replicaAuthorized : access.allows(.describe, topic: topic.topic) else {
                    result.errorCode = KafkaError.topicAuthorizationFailed.code
                    continue
                }
                let partition: Partition
                switch leaderPartition(TopicPartition(topic: topic.topic, partition: query.partition), metadata.image) {
                case .success(let found): partition = found
                case .failure(let error):
                    result.errorCode = error.code
                    continue
                }
                if let error = Self.checkLeaderEpoch(query.currentLeaderEpoch, partition) {
                    result.errorCode = error.code
                    continue
                }
                let found = partition.log.endOffset(forLeaderEpoch: LeaderEpoch(query.leaderEpoch))
                result.leaderEpoch = found.leaderEpoch.rawValue
                result.endOffset = found.endOffset.rawValue
            }
            response.topics.append(topicResult)
        }
        return response
    }
}

extension KafkaAPIs {
    /// A request's current leader epoch against the partition's (KIP-320): -1 skips the check;
    /// older is FENCED_LEADER_EPOCH, newer UNKNOWN_LEADER_EPOCH (this broker has not caught up).
    static func checkLeaderEpoch(_ requested: Int32, _ partition: Partition) -> KafkaError? {
        let current = partition.leaderEpoch
        guard requested >= 0, LeaderEpoch(requested) != current else { return nil }
        return LeaderEpoch(requested) > current ? .unknownLeaderEpoch : .fencedLeaderEpoch
    }
}

// A broker as Metadata and DescribeCluster list it: the same four fields under their names.
extension MetadataResponse.MetadataResponseBroker {
    init(_ broker: BrokerRegistration) {
        self.init()
        (nodeId, host, port, rack) = (broker.nodeID, broker.host, broker.port, broker.rack)
    }
}

extension DescribeClusterResponse.DescribeClusterBroker {
    init(_ broker: BrokerRegistration) {
        self.init()
        (brokerId, host, port, rack) = (broker.nodeID, broker.host, broker.port, broker.rack)
    }
}

// KIP-951's endpoint entries, the same four fields in each response that carries them.
extension ProduceResponse.NodeEndpoint {
    init(_ broker: BrokerRegistration) {
        self.init()
        (nodeId, host, port, rack) = (broker.nodeID, broker.host, broker.port, broker.rack)
    }
}

extension FetchResponse.NodeEndpoint {
    init(_ broker: BrokerRegistration) {
        self.init()
        (nodeId, host, port, rack) = (broker.nodeID, broker.host, broker.port, broker.rack)
    }
}
