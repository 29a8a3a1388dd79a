// tools/bench streams: reading one stream through the broker's stream index against scanning
// its partition, in one run on an in-process broker (release build).
//
// A single-partition stream topic gets N events (default 1,000,000, 100-byte values, in batches
// of ≤ 16 KiB); one stream ("target") holds 100 of them, spread evenly. Then:
//   index: EventStore.read(stream: "target", limit: 100)  (FjordReadStream)
//   scan:  a KafkaConsumer reading the partition from the start to the end, keeping "target"'s records
// Both return the same 100 events; the ratio index/scan is the figure.
import Dispatch
import FjordClient
import FjordEventSourcing
import FjordTesting
import NIOCore

let total = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 1_000_000
let broker = try await InProcessBroker.start()
let store = try await EventStore.connect(bootstrap: broker.bootstrap, topic: "bench-streams", partitions: 1)

var configuration = ProducerConfiguration(bootstrap: broker.bootstrap)
configuration.acks = 1
configuration.idempotence = false
// Batches of ≤ 16 KiB (Java's default batch.size): event-store appends write small batches, and
// the index read returns the batches that hold the stream's events.
configuration.batchSize = 16 * 1024
let producer = try await KafkaProducer.connect(configuration)
let value = ByteBuffer(repeating: 0x61, count: 100)
let every = total / 100
for i in 0..<total {
    let key = i % every == 0 ? "target" : "other-\(i % 5_000)"
    try await producer.produce(topic: "bench-streams", key: ByteBuffer(string: key), value: value, partition: 0)
}
await producer.flush()
await producer.close()

func seconds(_ body: () async throws -> Void) async rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try await body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

var indexed: [RecordedEvent] = []
var best = Double.infinity
for _ in 0..<5 {
    best = min(best, try await seconds { indexed = try await store.read(stream: "target", limit: 100) })
}
var scanned = 0
var scanTime = Double.infinity
for _ in 0..<2 {
    scanTime = min(scanTime, try await seconds {
        var settings = ConsumerConfiguration(bootstrap: broker.bootstrap)
        settings.enableAutoCommit = false
        settings.maxPollRecords = 100_000
        let consumer = try await KafkaConsumer.connect(settings)
        try await consumer.assign(topic: "bench-streams", partitions: [0], from: .earliest)
        var seen = 0
        scanned = 0
        while seen < total {
            let records = try await consumer.poll()
            seen += records.count
            scanned += records.filter { $0.key.map { String(buffer: $0) } == "target" }.count
        }
        await consumer.close()
    })
}
precondition(indexed.count == 100 && scanned == 100, "both reads must find the 100 events")
print("stream of 100 events in a partition of \(total): index \(String(format: "%.2f", best * 1000)) ms, "
      + "scan \(String(format: "%.0f", scanTime * 1000)) ms, ratio \(String(format: "%.4f", best / scanTime))x")
await store.close()
try await broker.stop()
