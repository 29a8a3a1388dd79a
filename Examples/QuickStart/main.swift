// Produce and consume with Fjord's Swift client: run a broker (tools/fjord serve), then
//   swift run fjord-example-quickstart [127.0.0.1:9092]
import FjordClient
import NIOCore

let bootstrap = CommandLine.arguments.dropFirst().first ?? "127.0.0.1:9092"

// Produce: idempotent, batched, keyed records land where Kafka's Java client would put them.
let producer = try await KafkaProducer.connect(ProducerConfiguration(bootstrap: bootstrap))
for i in 0..<10 {
    let sent = try await producer.send(topic: "quickstart", key: ByteBuffer(string: "user-\(i % 3)"),
                                       value: ByteBuffer(string: "event \(i)"))
    print("sent event \(i) to partition \(sent.partition) at offset \(sent.offset)")
}
await producer.close()

// Consume as a member of a group: the group assigns the partitions and auto-commits what was read.
var settings = ConsumerConfiguration(bootstrap: bootstrap, groupID: "quickstart-readers")
settings.autoOffsetReset = .earliest
let consumer = try await KafkaConsumer.connect(settings)
try await consumer.subscribe(topics: ["quickstart"])
for try await record in consumer.records().prefix(10) {
    print("read \(String(buffer: record.key!)): \(String(buffer: record.value!)) (partition \(record.partition), offset \(record.offset))")
}
await consumer.close()
