import FjordClient
import FjordProtocol
import FjordTesting
import Foundation
import Instrumentation
import NIOCore
import Testing

@Suite("Interoperability with librdkafka")
struct InteropTests {
    /// Records produced by the Swift client are read by kcat (librdkafka) with identical keys,
    /// values, headers and partitions.
    @Test("kcat reads what KafkaProducer wrote")
    func kcatReadsSwiftRecords() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/kcat") else {
            Issue.record("kcat is not installed (tools/test installs it)")
            return
        }
        let broker = try await InProcessBroker.start()
        let admin = try await KafkaAdmin.connect(bootstrap: broker.bootstrap)
        try await admin.createTopic("interop", partitions: 3)
        let producer = try await KafkaProducer.connect(ProducerConfiguration(bootstrap: broker.bootstrap))
        var expected: Set<String> = []
        for i in 0..<300 {
            let key = "k\(i % 17)"
            let metadata = try await producer.send(topic: "interop", key: ByteBuffer(string: key), value: ByteBuffer(string: "v\(i)"),
                                                   headers: [RecordHeader(key: "trace", value: ByteBuffer(string: "t\(i)"))])
            expected.insert("\(metadata.partition)|\(key)|v\(i)|trace=t\(i)")
        }
        await producer.close()

        let kcat = try await ChildProcess.run("/usr/bin/kcat", ["-b", broker.bootstrap, "-C", "-t", "interop", "-o", "beginning", "-e", "-q",
                                                                 "-f", "%p|%k|%s|%h\\n"])
        let lines = kcat.output.split(separator: "\n").map(String.init)
        #expect(kcat.status == 0)
        #expect(lines.count == 300)
        #expect(Set(lines) == expected)
        await admin.close()
        try await broker.stop()
    }
}

/// A minimal W3C-style instrument for the test: the context carries a trace id, injected as
/// `traceparent` and extracted back.
enum TestTraceIDKey: InstrumentationContextKey {
    typealias Value = String
}

struct TestTraceInstrument: Instrument {
    func inject<Carrier, Inject: Injector>(_ context: InstrumentationContext, into carrier: inout Carrier, using injector: Inject)
    where Inject.Carrier == Carrier {
        guard let id = context[TestTraceIDKey.self] else { return }
        injector.inject("00-\(id)-00f067aa0ba902b7-01", forKey: "traceparent", into: &carrier)
    }

    func extract<Carrier, Extract: Extractor>(_ carrier: Carrier, into context: inout InstrumentationContext, using extractor: Extract)
    where Extract.Carrier == Carrier {
        guard let header = extractor.extract(key: "traceparent", from: carrier) else { return }
        let parts = header.split(separator: "-")
        if parts.count == 4 { context[TestTraceIDKey.self] = String(parts[1]) }
    }
}

@Suite("Trace context through record headers")
struct TraceContextTests {
    @Test("the producer injects the current context as traceparent; the consumer extracts it")
    func propagation() async throws {
        let broker = try await InProcessBroker.start()
        var configuration = ProducerConfiguration(bootstrap: broker.bootstrap)
        configuration.instrument = TestTraceInstrument()
        let producer = try await KafkaProducer.connect(configuration)
        var context = InstrumentationContext.topLevel
        context[TestTraceIDKey.self] = "4bf92f3577b34da6a3ce929d0e0e4736"
        try await InstrumentationContext.withValue(context) {
            _ = try await producer.send(topic: "traced", value: ByteBuffer(string: "with"), headers: [RecordHeader(key: "app", value: nil)])
        }
        _ = try await producer.send(topic: "traced", value: ByteBuffer(string: "without"))
        await producer.close()

        var consumerConfiguration = ConsumerConfiguration(bootstrap: broker.bootstrap)
        consumerConfiguration.autoOffsetReset = .earliest
        let consumer = try await KafkaConsumer.connect(consumerConfiguration)
        try await consumer.assign(topic: "traced", partitions: [0], from: .earliest)
        var records: [ConsumerRecord] = []
        for try await record in consumer.records() {
            records.append(record)
            if records.count == 2 { break }
        }
        await consumer.close()
        let traced = try #require(records.first { String(buffer: $0.value!) == "with" })
        #expect(traced.headers.map(\.key) == ["app", "traceparent"], "the application's headers are kept")
        #expect(traced.instrumentationContext(using: TestTraceInstrument())[TestTraceIDKey.self] == "4bf92f3577b34da6a3ce929d0e0e4736")
        let plain = try #require(records.first { String(buffer: $0.value!) == "without" })
        #expect(plain.headers.isEmpty, "no context, no header")
        try await broker.stop()
    }
}
