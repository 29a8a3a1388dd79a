import FjordClient
import FjordProtocol
import FjordTesting
import Testing

@Suite("KafkaAdmin against an in-process broker")
struct KafkaAdminTests {
    @Test("topics, configs, offsets, groups and cluster")
    func everything() async throws {
        let broker = try await InProcessBroker.start()
        let admin = try await KafkaAdmin.connect(bootstrap: broker.bootstrap)

        let id = try await admin.createTopic("orders", partitions: 3, configs: ["retention.ms": "60000"])
        #expect(id != .zero)
        #expect(try await admin.listTopics() == ["orders"])
        #expect(try await admin.listTopics(includeInternal: true).contains("__consumer_offsets"))
        let described = try #require(try await admin.describeTopics(["orders"]).first)
        #expect(described.partitions.map(\.partition) == [0, 1, 2])
        #expect(described.partitions.allSatisfy { $0.leader == 1 && $0.isr == [1] })

        await #expect(throws: ClientError.self) { try await admin.createTopic("orders") }
        do {
            try await admin.createTopic("bad name!")
            Issue.record("an illegal name must be refused")
        } catch ClientError.kafka(let error, _) {
            #expect(error == .invalidTopicException)
        }

        #expect(try await admin.describeTopicConfigs("orders")["retention.ms"] == "60000")
        try await admin.alterTopicConfigs("orders", ["retention.ms": "120000", "cleanup.policy": "compact"])
        let configs = try await admin.describeTopicConfigs("orders")
        #expect(configs["retention.ms"] == "120000")
        #expect(configs["cleanup.policy"] == "compact")
        try await admin.alterTopicConfigs("orders", ["cleanup.policy": nil])
        #expect(try await admin.describeTopicConfigs("orders")["cleanup.policy"] == "delete")

        try await admin.createPartitions("orders", totalCount: 5)
        #expect(try await admin.describeTopics(["orders"]).first?.partitions.count == 5)

        #expect(try await admin.listOffsets("orders", partitions: [0, 1], spec: .latest) == [0: 0, 1: 0])
        try await admin.alterGroupOffsets("reporting", topic: "orders", offsets: [0: 0, 1: 0])
        #expect(try await admin.listGroupOffsets("reporting")["orders"] == [0: 0, 1: 0])
        #expect(try await admin.listGroups().map(\.groupID).contains("reporting"))
        try await admin.deleteGroups(["reporting"])
        #expect(try await admin.listGroupOffsets("reporting").isEmpty)

        let cluster = try await admin.describeCluster()
        #expect(cluster.brokers.map(\.port) == [Int32(broker.port)])

        try await admin.deleteTopics(["orders"])
        #expect(try await admin.listTopics().isEmpty)
        await admin.close()
        try await broker.stop()
    }
}
