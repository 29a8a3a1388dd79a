public import FjordProtocol

/// How a group moves partitions between members during a rebalance.
public enum RebalanceProtocol: Sendable {
    /// Every member gives up all its partitions before the group reassigns them.
    case eager
    /// Members keep what they keep; only partitions that move are revoked, and they are
    /// assigned to their new owner in a follow-up rebalance (KIP-429).
    case cooperative
}

/// One member as the group leader's assignor sees it: its subscription and, for sticky
/// assignors, what it owns now.
public struct AssignorMember: Sendable, Equatable {
    public var memberID: String
    public var instanceID: String?
    public var topics: [String]
    public var ownedPartitions: [TopicPartition]
    /// The generation in which it owned them (-1 when unknown).
    public var generation: Int32

    public init(memberID: String, instanceID: String? = nil, topics: [String], ownedPartitions: [TopicPartition] = [], generation: Int32 = -1) {
        self.memberID = memberID
        self.instanceID = instanceID
        self.topics = topics
        self.ownedPartitions = ownedPartitions
        self.generation = generation
    }

    /// Members are ordered by static instance id when both have one, then by member id (Java's
    /// `MemberInfo` order), so every leader computes the same assignment.
    static func ordered(_ a: AssignorMember, _ b: AssignorMember) -> Bool {
        switch (a.instanceID, b.instanceID) {
        case let (x?, y?) where x != y: return x < y
        case (.some, nil): return true
        case (nil, .some): return false
        default: return a.memberID < b.memberID
        }
    }
}

/// Kafka's `ConsumerPartitionAssignor`: run by the group leader (classic protocol) to map every
/// subscribed partition to exactly one member. `name` is what JoinGroup advertises, so members
/// of Java, librdkafka and Fjord clients agree on it.
///
/// Contract: the result has an entry for every member; each partition of a topic some member
/// subscribes to goes to at most one member subscribed to it (to exactly one, except that a
/// cooperative assignor may hold back a partition that has to be revoked from its owner first).
public protocol ConsumerPartitionAssignor: Sendable {
    var name: String { get }
    var rebalanceProtocol: RebalanceProtocol { get }
    func assign(members: [AssignorMember], partitionCounts: [String: Int32]) -> [String: [TopicPartition]]
}

/// Kafka's `RangeAssignor`: per topic, the members subscribed to it (in order) each take a
/// contiguous range; the first `partitions % members` take one extra.
public struct RangeAssignor: ConsumerPartitionAssignor {
    public let name = "range"
    public let rebalanceProtocol = RebalanceProtocol.eager
    public init() {}

    public func assign(members: [AssignorMember], partitionCounts: [String: Int32]) -> [String: [TopicPartition]] {
        var result: [String: [TopicPartition]] = Dictionary(uniqueKeysWithValues: members.map { ($0.memberID, []) })
        let topics = Set(members.flatMap(\.topics)).sorted()
        for topic in topics {
            guard let count = partitionCounts[topic], count > 0 else { continue }
            let subscribers = members.filter { $0.topics.contains(topic) }.sorted(by: AssignorMember.ordered)
            let per = Int(count) / subscribers.count
            let extra = Int(count) % subscribers.count
            for (index, member) in subscribers.enumerated() {
                let start = index * per + Swift.min(index, extra)
                let length = per + (index < extra ? 1 : 0)
                for partition in start..<(start + length) {
                    result[member.memberID, default: []].append(TopicPartition(topic, Int32(partition)))
                }
            }
        }
        return result
    }
}

/// Kafka's `RoundRobinAssignor`: every subscribed partition, in topic/partition order, dealt
/// to the members in turn, skipping members not subscribed to its topic.
public struct RoundRobinAssignor: ConsumerPartitionAssignor {
    public let name = "roundrobin"
    public let rebalanceProtocol = RebalanceProtocol.eager
    public init() {}

    public func assign(members: [AssignorMember], partitionCounts: [String: Int32]) -> [String: [TopicPartition]] {
        var result: [String: [TopicPartition]] = Dictionary(uniqueKeysWithValues: members.map { ($0.memberID, []) })
        let ordered = members.sorted(by: AssignorMember.ordered)
        guard !ordered.isEmpty else { return result }
        var next = 0
        for topic in Set(members.flatMap(\.topics)).sorted() {
            for partition in 0..<(partitionCounts[topic] ?? 0) {
                for _ in 0..<ordered.count {
                    let member = ordered[next % ordered.count]
                    next += 1
                    if member.topics.contains(topic) {
                        result[member.memberID, default: []].append(TopicPartition(topic, partition))
                        break
                    }
                }
            }
        }
        return result
    }
}

/// Kafka's `CooperativeStickyAssignor`: a balanced assignment (member counts differ by at most
/// one among members with the same subscription) that keeps as many partitions as possible with
/// their current owner, used with the cooperative protocol: a partition that has to move is left
/// out of this round's assignment, its owner revokes it, and the follow-up rebalance gives it to
/// its new member.
///
/// Ownership claims come from the members' subscriptions (`ownedPartitions`, `generation`); when
/// two members claim a partition, the claim of the higher generation wins.
public struct CooperativeStickyAssignor: ConsumerPartitionAssignor {
    public let name = "cooperative-sticky"
    public let rebalanceProtocol = RebalanceProtocol.cooperative
    public init() {}

    public func assign(members: [AssignorMember], partitionCounts: [String: Int32]) -> [String: [TopicPartition]] {
        let (target, owners) = Self.stickyBalanced(members: members, partitionCounts: partitionCounts)
        // Cooperative: a partition moving away from its (valid) owner, who is still in the group,
        // is held back until that owner revoked it.
        var result: [String: [TopicPartition]] = [:]
        for (member, partitions) in target {
            result[member] = partitions.filter { tp in
                guard let owner = owners[tp] else { return true }
                return owner == member
            }
        }
        return result
    }

    /// The sticky, balanced target assignment (before cooperative hold-backs) and the valid
    /// owner of each claimed partition.
    static func stickyBalanced(members: [AssignorMember], partitionCounts: [String: Int32])
        -> (target: [String: [TopicPartition]], owners: [TopicPartition: String]) {
        let ordered = members.sorted(by: AssignorMember.ordered)
        var result: [String: [TopicPartition]] = Dictionary(uniqueKeysWithValues: members.map { ($0.memberID, []) })
        guard !ordered.isEmpty else { return (result, [:]) }
        var all: [TopicPartition] = []
        for topic in Set(members.flatMap(\.topics)).sorted() {
            for partition in 0..<(partitionCounts[topic] ?? 0) { all.append(TopicPartition(topic, partition)) }
        }
        let subscribed = Dictionary(uniqueKeysWithValues: members.map { ($0.memberID, Set($0.topics)) })
        // 1. Valid claims: the partition exists, the member subscribes to it, highest generation wins.
        var claims: [TopicPartition: (member: String, generation: Int32)] = [:]
        var contested: Set<TopicPartition> = []
        let existing = Set(all)
        for member in ordered {
            for tp in member.ownedPartitions where existing.contains(tp) && subscribed[member.memberID]?.contains(tp.topic) == true {
                if let other = claims[tp] {
                    if member.generation > other.generation {
                        claims[tp] = (member.memberID, member.generation)
                        contested.remove(tp)
                    } else if member.generation == other.generation {
                        contested.insert(tp)
                    }
                } else {
                    claims[tp] = (member.memberID, member.generation)
                }
            }
        }
        for tp in contested { claims[tp] = nil }
        // 2. Quotas: total / members, the remainder going first to members that own the most.
        let total = all.count
        let base = total / ordered.count
        var remainder = total % ordered.count
        var owned: [String: [TopicPartition]] = [:]
        for (tp, claim) in claims { owned[claim.member, default: []].append(tp) }
        var quota: [String: Int] = [:]
        for member in ordered.sorted(by: { (owned[$0.memberID]?.count ?? 0) > (owned[$1.memberID]?.count ?? 0) }) {
            quota[member.memberID] = base + (remainder > 0 ? 1 : 0)
            if remainder > 0 { remainder -= 1 }
        }
        // 3. Keep claims up to the quota.
        var assigned: Set<TopicPartition> = []
        for member in ordered {
            let keep = (owned[member.memberID] ?? []).sorted().prefix(quota[member.memberID] ?? 0)
            result[member.memberID] = Array(keep)
            assigned.formUnion(keep)
        }
        // 4. Deal the rest to the least-loaded subscribed member (under quota first).
        for tp in all where !assigned.contains(tp) {
            let candidates = ordered.filter { subscribed[$0.memberID]?.contains(tp.topic) == true }
            guard !candidates.isEmpty else { continue }
            let underQuota = candidates.filter { (result[$0.memberID]?.count ?? 0) < (quota[$0.memberID] ?? 0) }
            let pool = underQuota.isEmpty ? candidates : underQuota
            let chosen = pool.min { (result[$0.memberID]?.count ?? 0) < (result[$1.memberID]?.count ?? 0) }!
            result[chosen.memberID, default: []].append(tp)
        }
        for key in result.keys { result[key]?.sort() }
        return (result, claims.mapValues(\.member))
    }
}
