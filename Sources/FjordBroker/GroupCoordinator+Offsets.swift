import FjordMetadata
import FjordProtocol
import Foundation
import Logging
import NIOCore

/// Committed offsets (OffsetCommit, OffsetFetch, OffsetDelete, `offsets.retention.minutes`) of
/// `GroupCoordinator`: the offsets store of both group types, persisted as OffsetCommitKey /
/// OffsetCommitValue records. State is changed only after its record is in the log.
extension GroupCoordinator {
    struct CommittedOffset {
        var offset: Int64
        var leaderEpoch: Int32
        var metadata: String
        var commitTimestamp: Int64
        /// When the offset expires, set by OffsetCommit v2–v4's `retention_time_ms`; nil for
        /// `offsets.retention.minutes` (KIP-211), as Kafka's `OffsetAndMetadata.expireTimestamp`.
        var expireTimestamp: Int64? = nil
    }

    static func offsetKey(group: String, tp: TopicPartition) throws(CoordinatorRecordError) -> ByteBuffer {
        try CoordinatorRecordSerde.offsetCommitKey(group: group, partition: tp)
    }

    static func offsetValue(_ offset: CommittedOffset) throws(CoordinatorRecordError) -> ByteBuffer {
        var value = OffsetCommitValue()
        value.offset = offset.offset
        value.leaderEpoch = offset.leaderEpoch
        value.metadata = offset.metadata
        value.commitTimestamp = offset.commitTimestamp
        // Only value version 1 has the expire timestamp (and no leader epoch), so Kafka writes
        // that version exactly when a commit sets one.
        guard let expire = offset.expireTimestamp else { return try CoordinatorRecordSerde.offsetCommitValue(value) }
        value.expireTimestamp = expire
        return try CoordinatorRecordSerde.offsetCommitValue(value, version: 1)
    }

    /// Replays an OffsetCommitValue; a tombstone deletes that partition's offset.
    func replayOffsetCommit(_ groupID: String, _ tp: TopicPartition, _ value: OffsetCommitValue?) {
        let group = groups[groupID] ?? Group(id: groupID)
        groups[groupID] = group
        guard let v = value else {
            group.offsets[tp] = nil
            return
        }
        group.offsets[tp] = CommittedOffset(offset: v.offset, leaderEpoch: v.leaderEpoch, metadata: v.metadata, commitTimestamp: v.commitTimestamp,
                                            expireTimestamp: v.expireTimestamp >= 0 ? v.expireTimestamp : nil)
    }

    /// `offsets.retention.minutes` (KIP-211): offsets of a group that uses the group protocol
    /// expire once the group has been empty that long; offsets committed outside the protocol
    /// (assign() consumers) expire that long after their commit. An offset committed with a
    /// `retention_time_ms` (OffsetCommit v2–v4) expires at its own time instead, once its group
    /// is empty. An empty group left without offsets is deleted.
    func expireOffsets(now: Int64) {
        for group in Array(groups.values) where group.state == .empty && group.members.isEmpty {
            var expired: [TopicPartition] = []
            for (tp, offset) in group.offsets {
                if let expire = offset.expireTimestamp {
                    if now >= expire { expired.append(tp) }
                    continue
                }
                let base = group.protocolType == nil ? offset.commitTimestamp : Swift.max(group.stateTimestamp, offset.commitTimestamp)
                let (age, overflow) = now.subtractingReportingOverflow(base)  // base may come from a replayed record
                if overflow || age > settings.offsetsRetentionMs { expired.append(tp) }
            }
            guard !expired.isEmpty || (group.offsets.isEmpty && group.generation > 0) else { continue }
            // Written first: state is dropped only once its tombstones are in the log.
            let dropsGroup = expired.count == group.offsets.count
            do {
                var records: [(key: ByteBuffer, value: ByteBuffer?)] = []
                for tp in expired { records.append((try Self.offsetKey(group: group.id, tp: tp), nil)) }
                if dropsGroup { records.append((try Self.groupKey(group.id), nil)) }
                try append(records, group: group.id)
                for tp in expired { group.offsets[tp] = nil }
                if dropsGroup { groups[group.id] = nil }
                logger.info("expired committed offsets", metadata: ["group": "\(group.id)", "partitions": "\(expired.count)"])
            } catch {
                logger.error("cannot expire offsets", metadata: ["group": "\(group.id)", "error": "\(error)"])
            }
        }
        // An empty consumer-protocol group goes with its last offsets (or when it never had any).
        for (id, group) in consumerGroups where group.members.isEmpty && groups[id] == nil {
            removeEmptyConsumerGroup(id)
        }
    }

    // MARK: Offsets

    func commit(groupID: String, generation: Int32, memberID: String, instanceID: String?,
                offsets: [(TopicPartition, CommittedOffset)], version: Int16 = 8) -> (KafkaError?, [KafkaError]) {
        guard !groupID.isEmpty else { return (.invalidGroupId, []) }
        let group = groups[groupID] ?? Group(id: groupID)
        if let consumerCheck = validateConsumerCommit(groupID: groupID, memberID: memberID, memberEpoch: generation),
            !(generation < 0 && memberID.isEmpty)
        {
            // A KIP-848 group: the member epoch stands in for the generation.
            if consumerCheck != .noError { return (consumerCheck, []) }
        } else if generation < 0 && memberID.isEmpty {
            // A commit from outside the group protocol (assign() consumers, admin tools).
            guard group.members.isEmpty else { return (.unknownMemberId, []) }
        } else {
            guard group.members[memberID] != nil else { return (.unknownMemberId, []) }
            if let instanceID, group.staticMembers[instanceID] != memberID { return (.fencedInstanceId, []) }
            guard generation == group.generation else { return (.illegalGeneration, []) }
            if group.state == .completingRebalance { return (.rebalanceInProgress, []) }
        }
        groups[groupID] = group
        var results: [KafkaError] = []
        var records: [(key: ByteBuffer, value: ByteBuffer?)] = []
        var accepted: [(TopicPartition, CommittedOffset)] = []
        // The cluster's topics, not this broker's replicas: a coordinator commits offsets of
        // partitions it does not host.
        let topics = metadataImage().topics
        for (tp, offset) in offsets {
            if offset.metadata.utf8.count > settings.maxMetadataBytes {
                results.append(.offsetMetadataTooLarge)
            } else if tp.partition < 0 || tp.partition >= topics[tp.topic]?.partitionCount ?? 0 {
                results.append(.unknownTopicOrPartition)
            } else {
                do {
                    records.append((try Self.offsetKey(group: groupID, tp: tp), try Self.offsetValue(offset)))
                    results.append(.noError)
                    accepted.append((tp, offset))
                } catch {
                    logger.error("cannot encode an offset commit", metadata: ["group": "\(groupID)", "error": "\(error)"])
                    results.append(.unknownServerError)
                }
            }
        }
        if !records.isEmpty {
            do {
                try append(records, group: groupID)
            } catch {
                logger.error("cannot persist offsets", metadata: ["group": "\(groupID)", "error": "\(error)"])
                return (nil, results.map { $0 == .noError ? .coordinatorNotAvailable : $0 })
            }
            for (tp, offset) in accepted { group.offsets[tp] = offset }
        }
        return (nil, results)
    }

    /// Every group's committed offset per partition, for the consumer-lag metric.
    func allCommittedOffsets() -> [(group: String, partition: TopicPartition, offset: Int64)] {
        groups.values.flatMap { group in group.offsets.map { (group.id, $0.key, $0.value.offset) } }
    }

    func committed(groupID: String, partitions: [TopicPartition]?) -> [(TopicPartition, CommittedOffset?)] {
        let group = groups[groupID]
        if let partitions { return partitions.map { ($0, group?.offsets[$0]) } }
        return (group?.offsets ?? [:]).sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    func deleteOffsets(groupID: String, partitions: [TopicPartition]) -> (KafkaError, [KafkaError]) {
        guard let group = groups[groupID] else { return (.groupIdNotFound, []) }
        var results: [KafkaError] = []
        var records: [(key: ByteBuffer, value: ByteBuffer?)] = []
        var deleted: [TopicPartition] = []
        for tp in partitions {
            if group.state != .empty, group.members.values.contains(where: { _ in true }) && group.protocolType == "consumer" {
                // Kafka refuses deleting offsets of partitions the group still consumes; without decoding
                // subscriptions here, a non-empty consumer group refuses all.
                results.append(.groupSubscribedToTopic)
                continue
            }
            do {
                records.append((try Self.offsetKey(group: groupID, tp: tp), nil))
                deleted.append(tp)
                results.append(.noError)
            } catch {
                logger.error("cannot encode an offset tombstone", metadata: ["group": "\(groupID)", "error": "\(error)"])
                results.append(.unknownServerError)
            }
        }
        guard !records.isEmpty else { return (.noError, results) }
        do {
            try append(records, group: groupID)
        } catch {
            // Nothing was deleted: the offsets stay, and the client is told to retry.
            logger.error("cannot persist offset deletion", metadata: ["group": "\(groupID)", "error": "\(error)"])
            return (.coordinatorNotAvailable, results.map { $0 == .noError ? .coordinatorNotAvailable : $0 })
        }
        for tp in deleted { group.offsets[tp] = nil }
        return (.noError, results)
    }
}
