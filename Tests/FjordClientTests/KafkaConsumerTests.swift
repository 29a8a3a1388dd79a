import FjordClient
import FjordProtocol
import FjordTesting
import NIOCore
import Testing

@Suite("KafkaConsumer (assign) against an in-process broker")
struct KafkaConsumerTests {
    @Test("produce then consume: every record once, in order per partition; seek, commit and resume")
    func roundTrip() async throws {
        let broker = try await InProcessBroker.start()
        let admin = try await KafkaAdmin.connect(bootstrap: broker.bootstrap)
        try await admin.createTopic("consumed", partitions: 2)
        var producerConfiguration = ProducerConfiguration(bootstrap: broker.bootstrap)
        producerConfiguration.lingerMs = 0  // sends below are sequential: do not wait for more records
        let producer = try await KafkaProducer.connect(producerConfiguration)
        for i in 0..<2_000 {
            _ = try await producer.send(topic: "consumed", key: ByteBuffer(string: "k\(i % 7)"), value: ByteBuffer(string: "\(i)"))
        }
        await producer.close()

        var configuration = ConsumerConfiguration(bootstrap: broker.bootstrap)
        configuration.groupID = "readers"
        configuration.autoOffsetReset = .earliest
        configuration.fetchMaxWaitMs = 100
        let consumer = try await KafkaConsumer.connect(configuration)
        try await consumer.assign(topic: "consumed", partitions: [0, 1])
        var seen: [ConsumerRecord] = []
        for try await record in consumer.records() {
            seen.append(record)
            if seen.count == 2_000 { break }
        }
        #expect(Set(seen.map { String(buffer: $0.value!) }).count == 2_000, "every record once")
        for partition in Int32(0)..<2 {
            let offsets = seen.filter { $0.partition == partition }.map(\.offset)
            #expect(offsets.map(\.rawValue) == Array(0..<Int64(offsets.count)), "in order")
        }
        // Commit, then a new consumer of the group resumes where this one stopped.
        try await consumer.commit()
        #expect(try await consumer.poll().isEmpty)
        try await consumer.seek(topic: "consumed", partition: 0, to: .offset(5))
        let again = try await consumer.poll()
        #expect(again.first?.offset == 5)
        await consumer.close()

        let resumed = try await KafkaConsumer.connect(configuration)
        try await resumed.assign(topic: "consumed", partitions: [0, 1])
        let total = await (resumed.position(topic: "consumed", partition: 0)?.rawValue ?? 0) + (resumed.position(topic: "consumed", partition: 1)?.rawValue ?? 0)
        #expect(total == 2_000, "starts from the committed offsets")
        await resumed.close()
        await admin.close()
        try await broker.stop()
    }
}
