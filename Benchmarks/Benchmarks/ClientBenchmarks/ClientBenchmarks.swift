import Benchmark
import FjordClient
import FjordTesting
import NIOCore

/// The producer's per-record cost, without the network: `KafkaProducer.produce` of 10,000
/// records of 100 bytes into the accumulator (linger and batch size so large that nothing is
/// sent while measuring). mallocCountTotal / 10,000 is the allocations per record; the
/// claim is O(1) and small (the batch buffer grows by doubling, so its allocations amortize).
///
/// A second benchmark produces and flushes 10,000 records to an in-process broker: its malloc
/// count includes the broker's work in the same process, so it is an upper bound.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock, .mallocCountTotal],
        warmupIterations: 3,
        maxDuration: .seconds(4),
        maxIterations: 200
    )
    let value = ByteBuffer(repeating: 0x61, count: 100)

    Benchmark("KafkaProducer.produce ×10,000 (100 B, accumulate only)") { benchmark in
        let broker = try await InProcessBroker.start()
        var configuration = ProducerConfiguration(bootstrap: broker.bootstrap)
        configuration.lingerMs = 3_600_000
        configuration.batchSize = 1 << 30
        configuration.bufferMemory = 1 << 31
        configuration.idempotence = false
        configuration.acks = 1
        let producer = try await KafkaProducer.connect(configuration)
        try await producer.produce(topic: "bench", value: value)  // metadata and the first batch
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            for _ in 0..<10_000 {
                try await producer.produce(topic: "bench", value: value)
            }
        }
        benchmark.stopMeasurement()
        await producer.close()
        try await broker.stop()
    }

    Benchmark("KafkaProducer.produce ×10,000 (100 B) + flush to an in-process broker") { benchmark in
        let broker = try await InProcessBroker.start()
        var configuration = ProducerConfiguration(bootstrap: broker.bootstrap)
        configuration.acks = 1
        configuration.idempotence = false
        let producer = try await KafkaProducer.connect(configuration)
        try await producer.produce(topic: "bench-flush", value: value)
        await producer.flush()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            for _ in 0..<10_000 {
                try await producer.produce(topic: "bench-flush", value: value)
            }
            await producer.flush()
        }
        benchmark.stopMeasurement()
        await producer.close()
        try await broker.stop()
    }
}
