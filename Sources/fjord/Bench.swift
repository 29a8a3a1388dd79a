import ArgumentParser
import Dispatch
import FjordClient
import FjordProtocol
import Foundation
import Histogram
import NIOCore
import Synchronization

/// `fjord bench produce|consume|e2e`: throughput and latency percentiles (HdrHistogram).
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure produce, consume and end-to-end throughput and latency.",
        discussion: prose("""
            Latencies are recorded in an HdrHistogram (3 significant digits) and reported as
            p50/p90/p99/p99.9/max in milliseconds: produce = send → acknowledgement, consume = one
            poll that returned records, e2e = send → received by a consumer in the same process.
            A progress line is shown on a terminal; --json prints one JSON object for machines.
            """),
        subcommands: [ProduceBench.self, ConsumeBench.self, EndToEndBench.self])

    struct Common: ParsableArguments {
        @Option(name: [.customShort("t"), .long], help: "The topic (created if missing).")
        var topic: String = "fjord-bench"
        @Option(name: [.customShort("n"), .long], help: "Records.")
        var records: Int = 100_000
        @Option(name: [.customShort("s"), .long], help: "Value size in bytes.")
        var recordSize: Int = 100
        @Option(help: "Partitions of a topic the bench creates.")
        var partitions: Int32 = 1
        @Option(help: "acks: 0, 1 or all.")
        var acks: String = "1"
        @Option(name: [.customShort("z"), .long], help: "Compression: none, gzip, snappy, lz4, zstd.")
        var compression: String = "none"
        @Option(help: "Producers (or consumers) running in parallel, each with its own connection.")
        var concurrency: Int = 1
        @Option(help: "Records per second in all (default: as fast as possible).")
        var rate: Int?
        @Flag(help: "Print the result as JSON.")
        var json = false

        func validate() throws {
            guard records > 0, recordSize >= 0, concurrency > 0, partitions > 0 else {
                throw ValidationError("--records, --concurrency and --partitions must be positive")
            }
            if let rate, rate <= 0 { throw ValidationError("--rate must be positive") }
        }

        func producerExtra() -> [String: String] {
            var extra = ["acks": acks, "compression.type": compression]
            if acks != "all" && acks != "-1" { extra["enable.idempotence"] = "false" }
            return extra
        }
    }

    struct ProduceBench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "produce", abstract: "Produce records as fast as possible (or at --rate).")
        @OptionGroup var client: ClientOptions
        @OptionGroup var options: Common

        func run() async throws {
            try await reportingErrors("bench produce") {
                try await ensureTopic(client, options.topic, partitions: options.partitions)
                let meter = Meter(label: "produced", json: options.json)
                let value = ByteBuffer(repeating: UInt8(ascii: "x"), count: options.recordSize)
                let configuration = try client.producerConfiguration(options.producerExtra())
                var producers: [KafkaProducer] = []
                for _ in 0..<options.concurrency { producers.append(try await KafkaProducer.connect(configuration)) }
                meter.start()
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for (index, producer) in producers.enumerated() {
                        let share = options.records / options.concurrency + (index < options.records % options.concurrency ? 1 : 0)
                        let rate = options.rate.map { Double($0) / Double(options.concurrency) }
                        let topic = options.topic
                        let size = options.recordSize
                        group.addTask {
                            let began = DispatchTime.now().uptimeNanoseconds
                            for i in 0..<share {
                                if let rate { await pace(i, rate: rate, since: began) }
                                // Latency is sampled (1 record in 8) into the histogram; every
                                // record's delivery is counted by the producer's statistics.
                                if i & 7 == 0 {
                                    let sent = DispatchTime.now().uptimeNanoseconds
                                    try await producer.produce(topic: topic, value: value) { _ in
                                        meter.sample(latencyNs: DispatchTime.now().uptimeNanoseconds - sent)
                                    }
                                } else {
                                    try await producer.produce(topic: topic, value: value)
                                }
                                if i & 4095 == 0 {
                                    let stats = await producer.statistics()
                                    meter.progress(records: stats.recordsDelivered, bytes: stats.recordsDelivered * size, of: index)
                                }
                            }
                            await producer.flush()
                            let stats = await producer.statistics()
                            meter.progress(records: stats.recordsDelivered, bytes: stats.recordsDelivered * size, of: index,
                                           failures: stats.recordsFailed)
                        }
                    }
                    try await group.waitForAll()
                }
                meter.stop()
                for producer in producers { await producer.close() }
                meter.report(mode: "produce", options: options)
                if meter.failures > 0 { throw CLIError("\(meter.failures) records failed") }
            }
        }
    }

    struct ConsumeBench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "consume", abstract: "Consume --records records from the start of the topic (run bench produce first).")
        @OptionGroup var client: ClientOptions
        @OptionGroup var options: Common
        @Option(help: "Stop after this many seconds without a new record.")
        var idleTimeout: Double = 10

        func run() async throws {
            try await reportingErrors("bench consume") {
                let meter = Meter(label: "consumed", json: options.json)
                let configuration = try client.consumerConfiguration(["enable.auto.commit": "false"])
                let consumer = try await KafkaConsumer.connect(configuration)
                let partitions = try await consumer.partitions(of: options.topic)
                try await consumer.assign(partitions.map { (TopicPartition(options.topic, $0), .earliest) })
                meter.start()
                var received = 0
                var lastProgress = DispatchTime.now().uptimeNanoseconds
                while received < options.records {
                    let began = DispatchTime.now().uptimeNanoseconds
                    let records = try await consumer.poll()
                    let now = DispatchTime.now().uptimeNanoseconds
                    if records.isEmpty {
                        if Double(now - lastProgress) / 1e9 > idleTimeout { break }
                        continue
                    }
                    lastProgress = now
                    var bytes = 0
                    for record in records { bytes += record.value?.readableBytes ?? 0 }
                    received += records.count
                    meter.record(count: records.count, latencyNs: now - began, bytes: bytes)
                }
                meter.stop()
                await consumer.close()
                meter.report(mode: "consume", options: options)
                if received < options.records {
                    throw CLIError("only \(received) of \(options.records) records arrived (the topic holds fewer?)")
                }
            }
        }
    }

    struct EndToEndBench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "e2e", abstract: "Produce and consume in one process: latency from send to receipt.")
        @OptionGroup var client: ClientOptions
        @OptionGroup var options: Common

        func run() async throws {
            try await reportingErrors("bench e2e") {
                try await ensureTopic(client, options.topic, partitions: options.partitions)
                let meter = Meter(label: "end to end", json: options.json)
                let consumer = try await KafkaConsumer.connect(try client.consumerConfiguration(
                    ["enable.auto.commit": "false", "fetch.max.wait.ms": "100"]))
                let partitions = try await consumer.partitions(of: options.topic)
                try await consumer.assign(partitions.map { (TopicPartition(options.topic, $0), .latest) })
                let producer = try await KafkaProducer.connect(try client.producerConfiguration(options.producerExtra()))
                let size = Swift.max(8, options.recordSize)
                let total = options.records
                meter.start()
                let receiving = Task {
                    var received = 0
                    var idleSince = DispatchTime.now().uptimeNanoseconds
                    while received < total {
                        let records = try await consumer.poll()
                        let now = DispatchTime.now().uptimeNanoseconds
                        if records.isEmpty {
                            if now - idleSince > 30_000_000_000 { break }
                            continue
                        }
                        idleSince = now
                        for record in records {
                            guard let stamp = record.value?.getInteger(at: record.value!.readerIndex, as: UInt64.self) else { continue }
                            meter.record(latencyNs: now &- stamp, bytes: record.value?.readableBytes ?? 0)
                            received += 1
                        }
                    }
                    return received
                }
                let began = DispatchTime.now().uptimeNanoseconds
                var value = ByteBuffer(repeating: UInt8(ascii: "x"), count: size)
                for i in 0..<total {
                    if let rate = options.rate { await pace(i, rate: Double(rate), since: began) }
                    value.setInteger(DispatchTime.now().uptimeNanoseconds, at: value.readerIndex)
                    try await producer.produce(topic: options.topic, value: value)
                }
                await producer.flush()
                let received = try await receiving.value
                meter.stop()
                await producer.close()
                await consumer.close()
                meter.report(mode: "e2e", options: options)
                if received < total { throw CLIError("only \(received) of \(total) records arrived within 30 s of silence") }
            }
        }
    }
}

/// Sleeps until record `index` is due at `rate` records/s.
func pace(_ index: Int, rate: Double, since began: UInt64) async {
    let due = began + UInt64(Double(index) / rate * 1e9)
    let now = DispatchTime.now().uptimeNanoseconds
    if due > now + 1_000_000 { try? await Task.sleep(nanoseconds: due - now) }
}

func ensureTopic(_ client: ClientOptions, _ topic: String, partitions: Int32) async throws {
    try await withAdmin(client) { admin in
        do {
            try await admin.createTopic(topic, partitions: partitions)
        } catch ClientError.kafka(.topicAlreadyExists, _) {
        }
    }
}

/// Counts records and bytes, records latencies in an HdrHistogram, and draws the progress line.
final class Meter: Sendable {
    let label: String
    let json: Bool
    private struct State {
        var histogram = Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
        var records = 0
        var bytes = 0
        var failures = 0
        var started: UInt64 = 0
        var stopped: UInt64 = 0
        var perSource: [Int: (Int, Int, Int)] = [:]
    }
    private let state = Mutex(State())
    private let progress = Mutex<Task<Void, Never>?>(nil)

    init(label: String, json: Bool) {
        self.label = label
        self.json = json
    }

    var failures: Int { state.withLock { $0.failures } }

    func start() {
        state.withLock { $0.started = DispatchTime.now().uptimeNanoseconds }
        guard !json, isatty(2) != 0 else { return }
        progress.withLock {
            $0 = Task {
                var last = (records: 0, bytes: 0, at: DispatchTime.now().uptimeNanoseconds)
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    let (records, bytes) = self.state.withLock { ($0.records, $0.bytes) }
                    let now = DispatchTime.now().uptimeNanoseconds
                    let seconds = Double(now - last.at) / 1e9
                    let line = String(format: "\r%@ %d records, %.0f records/s, %.1f MB/s   ", label, records,
                                      Double(records - last.records) / seconds, Double(bytes - last.bytes) / seconds / 1e6)
                    FileHandle.standardError.write(Data(line.utf8))
                    last = (records, bytes, now)
                }
            }
        }
    }

    /// A latency sample only (counts come from `progress`).
    func sample(latencyNs: UInt64) {
        state.withLock { _ = $0.histogram.record(Swift.max(1, latencyNs / 1_000)) }
    }

    /// Totals reported by one of several producers (`source`); the meter sums the latest of each.
    func progress(records: Int, bytes: Int, of source: Int, failures: Int = 0) {
        state.withLock { s in
            s.perSource[source] = (records, bytes, failures)
            s.records = s.perSource.values.reduce(0) { $0 + $1.0 }
            s.bytes = s.perSource.values.reduce(0) { $0 + $1.1 }
            s.failures = s.perSource.values.reduce(0) { $0 + $1.2 }
        }
    }

    func record(count: Int = 1, latencyNs: UInt64, bytes: Int) {
        state.withLock { s in
            s.records += count
            s.bytes += bytes
            _ = s.histogram.record(Swift.max(1, latencyNs / 1_000))
        }
    }

    func stop() {
        state.withLock { $0.stopped = DispatchTime.now().uptimeNanoseconds }
        progress.withLock {
            $0?.cancel()
            $0 = nil
        }
        if !json && isatty(2) != 0 { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }

    func report(mode: String, options: Bench.Common) {
        let s = state.withLock { $0 }
        let seconds = Double(s.stopped - s.started) / 1e9
        let rate = Double(s.records) / seconds
        let megabytes = Double(s.bytes) / seconds / 1e6
        func ms(_ percentile: Double) -> Double { Double(s.histogram.valueAtPercentile(percentile)) / 1000 }
        let maxMs = Double(s.histogram.max) / 1000
        if json {
            print(String(format: "{\"mode\":\"%@\",\"topic\":%@,\"records\":%d,\"record_size\":%d,\"acks\":\"%@\",\"compression\":\"%@\","
                         + "\"concurrency\":%d,\"failures\":%d,\"seconds\":%.3f,\"records_per_sec\":%.1f,\"mb_per_sec\":%.3f,"
                         + "\"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p99_9\":%.3f,\"max\":%.3f}}",
                         mode, RecordRenderer.quoted(options.topic), s.records, options.recordSize, options.acks, options.compression,
                         options.concurrency, s.failures, seconds, rate, megabytes, ms(50), ms(90), ms(99), ms(99.9), maxMs))
        } else {
            print(String(format: "%@: %d records in %.2f s: %.0f records/s, %.2f MB/s", label, s.records, seconds, rate, megabytes))
            print(String(format: "latency ms: p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f", ms(50), ms(90), ms(99), ms(99.9), maxMs))
            if s.failures > 0 { print("failures: \(s.failures)") }
        }
    }
}
