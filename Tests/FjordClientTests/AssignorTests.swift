import FjordClient
import FjordProtocol
import Testing

@Suite("Partition assignors")
struct AssignorTests {
    let twoTopics: [String: Int32] = ["t0": 3, "t1": 3]

    func members(_ ids: [String], topics: [String] = ["t0", "t1"]) -> [AssignorMember] {
        ids.map { AssignorMember(memberID: $0, topics: topics) }
    }

    /// Checks the contract: every partition exactly once, only to a subscriber.
    func expectComplete(_ plan: [String: [TopicPartition]], _ members: [AssignorMember], _ counts: [String: Int32]) {
        var seen: [TopicPartition: String] = [:]
        for (member, partitions) in plan {
            for tp in partitions {
                #expect(seen[tp] == nil, "\(tp) assigned twice")
                seen[tp] = member
                #expect(members.first { $0.memberID == member }?.topics.contains(tp.topic) == true)
            }
        }
        let subscribed = Set(members.flatMap(\.topics))
        let total = counts.filter { subscribed.contains($0.key) }.values.reduce(0) { $0 + Int($1) }
        #expect(seen.count == total)
    }

    @Test("range: contiguous ranges per topic, the first members take the remainder (Kafka's example)")
    func range() {
        // Kafka's RangeAssignor doc: C0, C1 subscribed to t0, t1 with 3 partitions each.
        let plan = RangeAssignor().assign(members: members(["C0", "C1"]), partitionCounts: twoTopics)
        #expect(plan["C0"] == [TopicPartition("t0", 0), TopicPartition("t0", 1), TopicPartition("t1", 0), TopicPartition("t1", 1)])
        #expect(plan["C1"] == [TopicPartition("t0", 2), TopicPartition("t1", 2)])
    }

    @Test("round-robin: partitions dealt in turn (Kafka's example)")
    func roundRobin() {
        let plan = RoundRobinAssignor().assign(members: members(["C0", "C1"]), partitionCounts: twoTopics)
        #expect(plan["C0"] == [TopicPartition("t0", 0), TopicPartition("t0", 2), TopicPartition("t1", 1)])
        #expect(plan["C1"] == [TopicPartition("t0", 1), TopicPartition("t1", 0), TopicPartition("t1", 2)])
        // Unequal subscriptions: a member only gets topics it subscribed to.
        let mixed = [AssignorMember(memberID: "A", topics: ["t0"]), AssignorMember(memberID: "B", topics: ["t0", "t1"])]
        let mixedPlan = RoundRobinAssignor().assign(members: mixed, partitionCounts: twoTopics)
        expectComplete(mixedPlan, mixed, twoTopics)
    }

    @Test("static members are ordered by instance id, so a restart with a new member id keeps the plan")
    func staticOrder() {
        let before = [AssignorMember(memberID: "m-9", instanceID: "a", topics: ["t0"]),
                      AssignorMember(memberID: "m-1", instanceID: "b", topics: ["t0"])]
        let after = [AssignorMember(memberID: "m-0", instanceID: "a", topics: ["t0"]),
                     AssignorMember(memberID: "m-1", instanceID: "b", topics: ["t0"])]
        let first = RangeAssignor().assign(members: before, partitionCounts: ["t0": 4])
        let second = RangeAssignor().assign(members: after, partitionCounts: ["t0": 4])
        #expect(first["m-9"] == second["m-0"])
        #expect(first["m-1"] == second["m-1"])
    }

    @Test("cooperative-sticky: balanced, keeps owners, and holds back partitions that must move first")
    func cooperativeSticky() {
        let assignor = CooperativeStickyAssignor()
        let counts: [String: Int32] = ["t": 6]
        // First round: one member gets everything.
        let solo = [AssignorMember(memberID: "A", topics: ["t"])]
        let first = assignor.assign(members: solo, partitionCounts: counts)
        #expect(first["A"]?.count == 6)
        // B joins: A owns all 6. The target is 3/3; the 3 moving to B are held back this round.
        let joined = [AssignorMember(memberID: "A", topics: ["t"], ownedPartitions: first["A"]!, generation: 1),
                      AssignorMember(memberID: "B", topics: ["t"])]
        let second = assignor.assign(members: joined, partitionCounts: counts)
        #expect(second["A"]?.count == 3, "A keeps three of its own")
        #expect(second["B"] == [], "B waits until A revoked")
        #expect(Set(second["A"]!).isSubset(of: Set(first["A"]!)))
        // Follow-up round: A revoked the other three; B gets them, A keeps its three.
        let followUp = [AssignorMember(memberID: "A", topics: ["t"], ownedPartitions: second["A"]!, generation: 2),
                        AssignorMember(memberID: "B", topics: ["t"], ownedPartitions: [], generation: 2)]
        let third = assignor.assign(members: followUp, partitionCounts: counts)
        #expect(third["A"] == second["A"])
        #expect(third["B"]?.count == 3)
        expectComplete(third, followUp, counts)
        // A member leaves: its partitions go to the others, nobody else's move.
        let left = [AssignorMember(memberID: "B", topics: ["t"], ownedPartitions: third["B"]!, generation: 3),
                    AssignorMember(memberID: "C", topics: ["t"], ownedPartitions: [], generation: 3)]
        let fourth = assignor.assign(members: left, partitionCounts: counts)
        #expect(fourth["B"] == third["B"])
        #expect(fourth["C"]?.count == 3)
        // Two members claiming one partition in the same generation: neither keeps the claim.
        let conflict = [AssignorMember(memberID: "X", topics: ["t"], ownedPartitions: [TopicPartition("t", 0)], generation: 5),
                        AssignorMember(memberID: "Y", topics: ["t"], ownedPartitions: [TopicPartition("t", 0)], generation: 4)]
        let resolved = assignor.assign(members: conflict, partitionCounts: counts)
        #expect(resolved["X"]?.contains(TopicPartition("t", 0)) == true, "the newer generation's claim wins")
    }

    @Test("every assignor covers every partition exactly once, for many group shapes")
    func exhaustive() {
        let assignors: [any ConsumerPartitionAssignor] = [RangeAssignor(), RoundRobinAssignor(), CooperativeStickyAssignor()]
        for memberCount in 1...7 {
            for partitions in [1, 2, 5, 12, 31] {
                let counts: [String: Int32] = ["a": Int32(partitions), "b": Int32(partitions / 2 + 1)]
                let group = (0..<memberCount).map { AssignorMember(memberID: "m\($0)", topics: $0 % 3 == 2 ? ["a"] : ["a", "b"]) }
                for assignor in assignors {
                    let plan = assignor.assign(members: group, partitionCounts: counts)
                    expectComplete(plan, group, counts)
                    if assignor.name == "cooperative-sticky" && group.allSatisfy({ $0.topics == group[0].topics }) {
                        let sizes = plan.values.map(\.count)
                        #expect((sizes.max() ?? 0) - (sizes.min() ?? 0) <= 1, "balanced")
                    }
                }
            }
        }
    }
}
