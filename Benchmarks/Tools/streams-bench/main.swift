// tools/bench streams: reading one stream through the broker's stream index against scanning
// its partition, in one run on an in-process broker (release build).
//
// A single-partition stream topic gets N events (default 1,000,000, 100-byte values, in batches
// of ≤ 16 KiB); one stream ("target") holds 100 of them, spread evenly. Then:
//   index: EventStore.read(stream: "target", limit: 100)  (FjordReadStream)
//   scan:  a KafkaConsumer reading the partition from the start to the end, keeping "target"'s records
// Both return the same 100 events; the ratio index/scan is the figure.
//
// Then appends: the same events (E streams × N events, 100-byte values, an event id and type
// header each) written three ways to a 4-partition stream topic, acks=all:
//   producer:    KafkaProducer, unconditional, batched (the Swift client's best rate)
//   any:         EventStore.append(expectedVersion: .any), one task per stream, one event per append
//   conditional: EventStore.append(expectedVersion: .exact(v)), same shape: what the acceptance asks
// and the ratios conditional/producer and conditional/any.
//
// Usage: fjord-streams-bench [read [EVENTS]] [appends [STREAMS EVENTS_PER_STREAM]]   (default: both)
import Dispatch
import FjordClient
import FjordEventSourcing
import FjordProjections
import FjordProtocol
import FjordTesting
import Foundation
import GRDB
import NIOCore

/// A typical read model: events per stream, one upsert per event (a cached prepared statement,
/// as GRDB recommends for hot statements).
struct CountPerStream: Projection {
    let name = "counts"
    let topic = "bench-streams"
    func setUp(_ db: Database) throws {
        try db.execute(sql: "CREATE TABLE IF NOT EXISTS counts (stream TEXT PRIMARY KEY, events INTEGER NOT NULL)")
    }
    func apply(_ event: RecordedEvent, in db: Database) throws {
        try db.cachedStatement(sql: "INSERT INTO counts (stream, events) VALUES (?, 1) ON CONFLICT (stream) DO UPDATE SET events = events + 1")
            .execute(arguments: [event.stream])
    }
}

func readBenchmark(total: Int) async throws {
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

    // Projection replay: the whole partition into SQLite (GRDB), checkpointed per poll, against the
    // raw consume rate of the scan above.
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fjord-streams-bench-\(getpid())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let runner = try ProjectionRunner(projection: CountPerStream(), bootstrap: broker.bootstrap, path: directory.appendingPathComponent("counts.sqlite").path)
    let replay = try await seconds {
        try await runner.start()
        while try await runner.status().lag > 0 { try await Task.sleep(for: .milliseconds(20)) }
    }
    await runner.stop()
    let applied = try await runner.read { db in try Int.fetchOne(db, sql: "SELECT SUM(events) FROM counts") ?? 0 }
    precondition(applied == total, "the projection applied every event once")
    let replayRate = Double(total) / replay
    let rawRate = Double(total) / scanTime
    print("projection replay into SQLite: \(String(format: "%.0f", replayRate)) events/s, raw consume \(String(format: "%.0f", rawRate)) "
          + "records/s, ratio \(String(format: "%.3f", replayRate / rawRate))x")
    try? FileManager.default.removeItem(at: directory)
    await store.close()
    try await broker.stop()
}

func seconds(_ body: () async throws -> Void) async rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try await body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

func appendBenchmark(streams: Int, perStream: Int) async throws {
    let broker = try await InProcessBroker.start()
    let total = streams * perStream
    let value = ByteBuffer(repeating: 0x61, count: 100)
    func events(_ stream: Int) -> [EventData] {
        (0..<perStream).map { EventData(id: "\(stream)-\($0)", type: "Ticked", data: value) }
    }

    let all = (0..<streams).map(events)

    // Unconditional, batched: the producer with the same records (key, value, id and type headers).
    func producerRun(topic: String) async throws -> Double {
        let plain = try await EventStore.connect(bootstrap: broker.bootstrap, topic: topic, partitions: 4)
        var configuration = ProducerConfiguration(bootstrap: broker.bootstrap)
        configuration.acks = -1
        let producer = try await KafkaProducer.connect(configuration)
        let producerTime = try await seconds {
            for index in 0..<perStream {
                for stream in 0..<streams {
                    let event = all[stream][index]
                    try await producer.produce(topic: topic, key: ByteBuffer(string: "s\(stream)"), value: event.data,
                                               headers: [RecordHeader(key: "fjord-event-id", value: ByteBuffer(string: event.id)),
                                                         RecordHeader(key: "fjord-event-type", value: ByteBuffer(string: event.type))])
                }
            }
            await producer.flush()
        }
        await producer.close()
        let plainVersion = try await plain.version(of: "s7")
        precondition(plainVersion == Int64(perStream - 1))
        await plain.close()
        return producerTime
    }

    // EventStore: one task per stream, each appending its events one at a time.
    func storeRun(topic: String, conditional: Bool) async throws -> Double {
        let store = try await EventStore.connect(bootstrap: broker.bootstrap, topic: topic, partitions: 4)
        let time = try await seconds {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for stream in 0..<streams {
                    group.addTask {
                        for (index, event) in all[stream].enumerated() {
                            let expected: ExpectedVersion = conditional ? (index == 0 ? .noStream : .exact(Int64(index - 1))) : .any
                            try await store.append(to: "s\(stream)", [event], expectedVersion: expected)
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        let version = try await store.version(of: "s7")
        precondition(version == Int64(perStream - 1), "every append landed")
        await store.close()
        return time
    }
    // Best of three rounds each (fresh topics), interleaved so that both see the same machine.
    var producerTime = Double.infinity
    var conditionalTime = Double.infinity
    for round in 0..<3 {
        producerTime = min(producerTime, try await producerRun(topic: "bench-producer-\(round)"))
        conditionalTime = min(conditionalTime, try await storeRun(topic: "bench-conditional-\(round)", conditional: true))
    }
    let anyTime = try await storeRun(topic: "bench-any", conditional: false)
    func rate(_ time: Double) -> String { String(format: "%.0f", Double(total) / time) }
    print("appends of \(total) events (\(streams) streams × \(perStream), acks=all, 4 partitions): producer \(rate(producerTime)) events/s, "
          + "EventStore any \(rate(anyTime)) events/s, EventStore conditional \(rate(conditionalTime)) events/s; "
          + "conditional/producer \(String(format: "%.2f", producerTime / conditionalTime))x, "
          + "conditional/any \(String(format: "%.2f", anyTime / conditionalTime))x")
    try await broker.stop()
}

var arguments = Array(CommandLine.arguments.dropFirst())
let both = arguments.isEmpty
if both || arguments.first == "read" {
    if !both { arguments.removeFirst() }
    let total = arguments.first.flatMap(Int.init) ?? 1_000_000
    if arguments.first.flatMap(Int.init) != nil { arguments.removeFirst() }
    try await readBenchmark(total: total)
}
if both || arguments.first == "appends" {
    if !both { arguments.removeFirst() }
    let streams = arguments.first.flatMap(Int.init) ?? 1_000
    let perStream = arguments.dropFirst().first.flatMap(Int.init) ?? 100
    try await appendBenchmark(streams: streams, perStream: perStream)
}
