// Produce and consume with Fjord's Swift client: run a broker (tools/fjord serve), then
//   swift run fjord-example-quickstart [127.0.0.1:9092]
import FjordClient
import NIOCore

let bootstrap = CommandLine.arguments.dropFirst().first ?? "127.0.0.1:9092"

// Produce: idempotent, batched, keyed records land where Kafka's Java client would put them.
let producer = try await KafkaProducer.connect(ProducerConfiguration(bootstrap: bootstrap))
for i in 0..<10 {
    let where_ = try await producer.send(topic: "quickstart", key: ByteBuffer(string: "user-\(i % 3)"),
                                         value: ByteBuffer(string: "event \(i)"))
    print("sent event \(i) to partition \(where_.partition) at offset \(where_.offset)")
}
await producer.close()

// Consume: assign the topic's partitions from the beginning and read the ten records back.
var settings = ConsumerConfiguration(bootstrap: bootstrap)
settings.autoOffsetReset = .earliest
let consumer = try await KafkaConsumer.connect(settings)
let admin = try await KafkaAdmin.connect(bootstrap: bootstrap)
let partitions = try await admin.describeTopics(["quickstart"]).first?.partitions.map(\.partition) ?? [0]
try await consumer.assign(topic: "quickstart", partitions: partitions, from: .earliest)
var count = 0
for try await record in consumer.records() {
    print("read \(String(buffer: record.key!)): \(String(buffer: record.value!)) (partition \(record.partition), offset \(record.offset))")
    count += 1
    if count == 10 { break }
}
await consumer.close()
await admin.close()
