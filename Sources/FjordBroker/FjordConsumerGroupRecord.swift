import FjordProtocol
import FjordStorage
import NIOCore

/// The encoding of a consumer group's state as a `__consumer_offsets` record.
enum FjordConsumerGroupRecord {
    /// Outside Kafka's record types (0–1 offsets, 2 classic groups, 3+ Kafka's own).
    static let keyVersion: Int16 = 32000
    static let valueVersion: Int16 = 0

    /// The persisted fields of a group, in a canonical order (so equal states compare equal).
    static func value(of group: GroupCoordinator.ConsumerGroup) -> FjordConsumerGroupValue {
        func entries(_ partitions: Set<TopicPartition>) -> [FjordConsumerGroupValue.TopicPartitions] {
            var byTopic: [String: [Int32]] = [:]
            for tp in partitions { byTopic[tp.topic, default: []].append(tp.partition) }
            return byTopic.sorted { $0.key < $1.key }.map { topic, partitions in
                var entry = FjordConsumerGroupValue.TopicPartitions()
                entry.topic = topic
                entry.partitions = partitions.sorted()
                return entry
            }
        }
        var value = FjordConsumerGroupValue()
        value.groupEpoch = group.epoch
        value.targetEpoch = group.targetEpoch
        value.members = group.members.values.sorted { $0.memberID < $1.memberID }.map { member in
            var entry = FjordConsumerGroupValue.Member()
            entry.memberId = member.memberID
            entry.instanceId = member.instanceID
            entry.rackId = member.rackID
            entry.clientId = member.clientID
            entry.clientHost = member.clientHost
            entry.memberEpoch = member.memberEpoch
            entry.rebalanceTimeoutMs = member.rebalanceTimeoutMs
            entry.subscribedTopicNames = member.subscribedTopics
            entry.owned = entries(member.owned)
            entry.target = entries(group.target[member.memberID] ?? [])
            return entry
        }
        return value
    }
}
