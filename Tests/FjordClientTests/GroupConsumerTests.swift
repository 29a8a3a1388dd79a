import FjordClient
import FjordProtocol
import FjordTesting
import NIOCore
import Synchronization
import Testing

/// Collects what a group of consumers read, and says when all expected records arrived.
final class Collector: Sendable {
    let expected: Int
    private let state = Mutex<(seen: [TopicPartition: [Int64]], count: Int)>(([:], 0))

    init(expected: Int) { self.expected = expected }

    /// Records one; true once every expected record arrived.
    func add(_ record: ConsumerRecord) -> Bool {
        state.withLock { s in
            s.seen[record.topicPartition, default: []].append(record.offset.rawValue)
            s.count += 1
            return s.count >= expected
        }
    }

    var done: Bool { state.withLock { $0.count >= expected } }
    var count: Int { state.withLock { $0.count } }

    /// Partitions whose offsets were not exactly 0..<n once each, in order.
    func anomalies() -> [String] {
        state.withLock { s in
            s.seen.compactMap { tp, offsets in
                let sorted = offsets.sorted()
                if sorted != Array(0..<Int64(sorted.count)) { return "\(tp): \(offsets.count) reads, \(Set(offsets).count) distinct" }
                return nil
            }.sorted()
        }
    }
}

/// Counts the listener's calls.
final class CountingListener: ConsumerRebalanceListener {
    let assigned = Mutex<[TopicPartition]>([])
    let revoked = Mutex<[TopicPartition]>([])

    func partitionsAssigned(_ partitions: [TopicPartition], consumer: KafkaConsumer) async {
        assigned.withLock { $0 += partitions }
    }

    func partitionsRevoked(_ partitions: [TopicPartition], consumer: KafkaConsumer) async {
        revoked.withLock { $0 += partitions }
    }
}

@Suite("KafkaConsumer groups against an in-process broker")
struct GroupConsumerTests {
    static let protocols: [(String, String)] = [
        ("classic", "range"), ("classic", "roundrobin"), ("classic", "cooperative-sticky"), ("consumer", ""),
    ]

    func produce(_ broker: InProcessBroker, topic: String, count: Int, partitions: Int32) async throws {
        let admin = try await KafkaAdmin.connect(bootstrap: broker.bootstrap)
        try await admin.createTopic(topic, partitions: partitions)
        await admin.close()
        let producer = try await KafkaProducer.connect(ProducerConfiguration(bootstrap: broker.bootstrap))
        for i in 0..<count {
            try await producer.produce(topic: topic, key: ByteBuffer(string: "key-\(i)"), value: ByteBuffer(string: "value-\(i)"))
        }
        await producer.flush()
        await producer.close()
    }

    func consumerConfiguration(_ broker: InProcessBroker, group: String, groupProtocol: String, assignor: String) throws -> ConsumerConfiguration {
        var properties = [
            "bootstrap.servers": broker.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "heartbeat.interval.ms": "100", "fetch.max.wait.ms": "100", "max.poll.records": "100",
            "group.protocol": groupProtocol, "auto.commit.interval.ms": "200", "max.poll.interval.ms": "15000",
        ]
        if !assignor.isEmpty { properties["partition.assignment.strategy"] = assignor }
        return try ConsumerConfiguration(properties: properties)
    }

    /// Polls in the background until cancelled (each poll is bounded by fetch.max.wait.ms);
    /// `onRecords` sees every record any poll returned.
    static func poller(_ consumer: KafkaConsumer, delayMs: Int = 0,
                       onRecords: @escaping @Sendable ([ConsumerRecord]) -> Void = { _ in }) -> Task<Void, Never> {
        Task {
            while !Task.isCancelled {
                do {
                    let records = try await consumer.poll()
                    onRecords(records)
                    if delayMs > 0 && !records.isEmpty { try await Task.sleep(for: .milliseconds(delayMs)) }
                } catch {
                    if case ClientError.closed = error { return }
                    try? await Task.sleep(for: .milliseconds(20))
                }
            }
        }
    }

    static func waitUntil(seconds: Int = 30, _ condition: () async -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            if await condition() { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    @Test("three members share a topic: every record exactly once across the group, with commits",
          arguments: protocols)
    func threeMembers(groupProtocol: String, assignor: String) async throws {
        let broker = try await InProcessBroker.start(settings: ["group.consumer.heartbeat.interval.ms": "100"])
        let total = 100_000
        let groupID = "g-\(groupProtocol)-\(assignor)"
        try await produce(broker, topic: "shared", count: total, partitions: 6)
        let collector = Collector(expected: total)
        let configuration = try consumerConfiguration(broker, group: groupID, groupProtocol: groupProtocol, assignor: assignor)
        var consumers: [KafkaConsumer] = []
        var pollers: [Task<Void, Never>] = []
        // Members join one after another while records flow (each poll of 100 records takes
        // 5 ms of "work"), so the group rebalances mid-stream.
        for _ in 0..<3 {
            let consumer = try await KafkaConsumer.connect(configuration)
            try await consumer.subscribe(topics: ["shared"])
            consumers.append(consumer)
            pollers.append(Self.poller(consumer, delayMs: 5) { records in for record in records { _ = collector.add(record) } })
            try await Task.sleep(for: .milliseconds(400))
        }
        let finished = try await Self.waitUntil(seconds: 60) { collector.done }
        #expect(finished, "all records within 60 s (got \(collector.count))")
        var assignedTotal = 0
        for consumer in consumers { assignedTotal += await consumer.assignedPartitions().count }
        #expect(assignedTotal == 6, "the group covers all six partitions once")
        // The admin client sees the group by its type: DescribeGroups for classic groups,
        // ConsumerGroupDescribe for KIP-848 ones.
        let groupAdmin = try await KafkaAdmin.connect(bootstrap: broker.bootstrap)
        let listing = try await groupAdmin.listGroups().first { $0.groupID == groupID }
        #expect(listing?.type == (groupProtocol == "consumer" ? "consumer" : "classic"))
        var description = try await groupAdmin.describeGroup(groupID)
        for _ in 0..<50 where Set(description.members.flatMap(\.assignment)).count < 6 {
            try await Task.sleep(for: .milliseconds(100))  // a last reconciliation may still be settling
            description = try await groupAdmin.describeGroup(groupID)
        }
        #expect(description.protocolType == "consumer" && description.members.count == 3)
        #expect(Set(description.members.flatMap(\.assignment)).count == 6, "every partition has its member")
        await groupAdmin.close()
        // The application stops polling, then closes each member: close commits and leaves.
        // (Members still polling while others leave would be rebalancing, and a commit during
        // a rebalance is refused by the coordinator, as in Kafka.)
        for poller in pollers { poller.cancel() }
        for poller in pollers { _ = await poller.value }
        for consumer in consumers { await consumer.close() }
        #expect(collector.count == total, "nothing read twice, even while members left")
        #expect(collector.anomalies() == [], "each record once, in order")
        let admin = try await KafkaAdmin.connect(bootstrap: broker.bootstrap)
        let committed = try await admin.listGroupOffsets(groupID)["shared"] ?? [:]
        let ends = try await admin.listOffsets("shared", partitions: Array(0..<6), spec: .latest)
        #expect(committed == ends, "the committed offsets reach the end of every partition")
        let rebalances = await consumers[0].rebalanceCount()
        #expect(rebalances >= 2, "the first member went through the others joining")
        await admin.close()
        try await broker.stop()
    }

    @Test("a static member that restarts gets its partitions back without a rebalance of the others")
    func staticMembership() async throws {
        let broker = try await InProcessBroker.start()
        try await produce(broker, topic: "static", count: 100, partitions: 4)
        var first = try consumerConfiguration(broker, group: "static-group", groupProtocol: "classic", assignor: "range")
        first.groupInstanceID = "instance-a"
        first.sessionTimeoutMs = 30_000
        var second = first
        second.groupInstanceID = "instance-b"
        let listener = CountingListener()
        let a = try await KafkaConsumer.connect(first)
        let b = try await KafkaConsumer.connect(second)
        try await a.subscribe(topics: ["static"])
        try await b.subscribe(topics: ["static"], listener: listener)
        let pollA = Self.poller(a)
        let pollB = Self.poller(b)
        let stable = try await Self.waitUntil {
            let aCount = await a.assignedPartitions().count
            let bCount = await b.assignedPartitions().count
            // The listener runs after the assignment is in place: wait for it too.
            return aCount == 2 && bCount == 2 && listener.assigned.withLock { $0.count } == 2
        }
        #expect(stable, "two members with two partitions each")
        let before = await a.assignedPartitions().sorted()
        let bRebalances = await b.rebalanceCount()
        await a.close()  // a static member does not leave the group
        pollA.cancel()
        _ = await pollA.value
        let restarted = try await KafkaConsumer.connect(first)
        try await restarted.subscribe(topics: ["static"])
        let pollRestarted = Self.poller(restarted)
        let back = try await Self.waitUntil { await restarted.assignedPartitions().count == 2 }
        #expect(back)
        #expect(await restarted.assignedPartitions().sorted() == before, "same partitions back")
        try await Task.sleep(for: .milliseconds(500))
        #expect(await b.rebalanceCount() == bRebalances, "the other member did not rebalance")
        #expect(listener.assigned.withLock { $0.count } == 2, "b's listener heard of one assignment only")
        for (consumer, poller) in [(restarted, pollRestarted), (b, pollB)] {
            await consumer.close()
            poller.cancel()
            _ = await poller.value
        }
        try await broker.stop()
    }

    @Test("pause stops a partition's records until resume; seek to a timestamp")
    func pauseAndSeek() async throws {
        let broker = try await InProcessBroker.start()
        try await produce(broker, topic: "paused", count: 200, partitions: 2)
        var configuration = try consumerConfiguration(broker, group: "pauser", groupProtocol: "classic", assignor: "range")
        configuration.enableAutoCommit = false
        let consumer = try await KafkaConsumer.connect(configuration)
        try await consumer.assign(topic: "paused", partitions: [0, 1], from: .earliest)
        await consumer.pause([TopicPartition("paused", 1)])
        var seen: [ConsumerRecord] = []
        for _ in 0..<10 { seen += try await consumer.poll() }
        #expect(!seen.isEmpty && seen.allSatisfy { $0.partition == 0 })
        await consumer.resume([TopicPartition("paused", 1)])
        var resumed: [ConsumerRecord] = []
        for _ in 0..<10 { resumed += try await consumer.poll() }
        #expect(resumed.contains { $0.partition == 1 })
        // Every record has a timestamp of about now: seeking to the far future lands on the end.
        try await consumer.seek(topic: "paused", partition: 0, to: .timestamp(Int64.max / 2))
        let end = await consumer.position(topic: "paused", partition: 0)
        try await consumer.seek(topic: "paused", partition: 0, to: .latest)
        let latest = await consumer.position(topic: "paused", partition: 0)
        #expect(end != nil && end == latest)
        try await consumer.seek(topic: "paused", partition: 0, to: .timestamp(0))
        #expect(await consumer.position(topic: "paused", partition: 0) == 0)
        await consumer.close()
        try await broker.stop()
    }
}
