import Benchmark
import FjordProtocol
import NIOCore

/// Hot paths of the protocol layer. Throughput benchmarks process 1 MiB per iteration, so
/// `throughput` (iterations/s) equals MiB/s; the allocation benchmarks must report zero mallocs.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock, .mallocCountTotal],
        warmupIterations: 10,
        maxDuration: .seconds(3),
        maxIterations: 100_000
    )

    let mebibyte: [UInt8] = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }

    // CRC32C over 1 MiB with the CPU instruction (compare with the crc32c Python package: tools/bench crc32c).
    Benchmark("CRC32C 1 MiB (hardware)") { benchmark in
        for _ in benchmark.scaledIterations {
            mebibyte.withUnsafeBytes { blackHole(CRC32C.checksum($0)) }
        }
    }

    Benchmark("CRC32C 1 MiB (portable)") { benchmark in
        for _ in benchmark.scaledIterations {
            mebibyte.withUnsafeBytes { blackHole(CRC32C.portableChecksum($0)) }
        }
    }

    // A 1 MiB batch of 1,000 records, validated the way the broker does on produce:
    // header checks and CRC32C over the slice, no per-record decode, no allocation.
    let batchBytes: ByteBuffer = {
        var builder = RecordBatchBuilder(initialCapacity: 1 << 21)
        let value = ByteBuffer(repeating: 0x61, count: 1_030)
        for i in 0..<1_000 {
            builder.append(timestamp: 1_700_000_000_000 + Int64(i), key: ByteBuffer(string: "key-\(i)"), value: value)
        }
        return try! builder.build().bytes
    }()

    Benchmark(
        "RecordBatch validate 1 MiB / 1000 records",
        configuration: .init(metrics: [.throughput, .wallClock, .mallocCountTotal],
                             thresholds: [.mallocCountTotal: .init(absolute: [.p100: 0])])
    ) { benchmark in
        for _ in benchmark.scaledIterations {
            var input = batchBytes
            guard let batch = try? RecordBatch.read(from: &input) else { fatalError("benchmark batch unreadable") }
            do { try batch.validate() } catch { fatalError("benchmark batch invalid: \(error)") }
            blackHole(batch.recordCount)
        }
    }

    // Patching the base offset writes 8 bytes in place. It only stays in place while the batch
    // owns its storage uniquely (ByteBuffer is copy-on-write), so the benchmark starts from a
    // private copy, as the client's builder output is; the log writes patched headers instead.
    Benchmark(
        "RecordBatch assign offsets in place",
        configuration: .init(metrics: [.throughput, .wallClock, .mallocCountTotal])
    ) { benchmark in
        guard var batch = try? RecordBatch(bytes: ByteBuffer(bytes: batchBytes.readableBytesView)) else {
            fatalError("benchmark batch unreadable")
        }
        for i in benchmark.scaledIterations {
            batch.setBaseOffset(Int64(i))
            blackHole(batch.baseOffset)
        }
    }

    Benchmark("RecordBatch decode 1000 records (iterator)") { benchmark in
        for _ in benchmark.scaledIterations {
            var input = batchBytes
            guard let batch = try? RecordBatch.read(from: &input),
                var iterator = try? batch.makeRecordIterator()
            else { fatalError("benchmark batch unreadable") }
            var total = 0
            while let record = try? iterator.next() {
                total &+= record.value?.readableBytes ?? 0
            }
            blackHole(total)
        }
    }

    // Varints: 1,000 values of mixed widths per iteration into a reused buffer.
    let values: [Int64] = (0..<1_000).map { i in Int64(i &* 7_919) * (i % 2 == 0 ? 1 : -1) << (i % 40) }
    Benchmark("varlong encode x1000") { benchmark in
        var buffer = ByteBufferAllocator().buffer(capacity: 16 * 1_000)
        for _ in benchmark.scaledIterations {
            buffer.clear()
            for value in values { buffer.writeKafkaVarlong(value) }
            blackHole(buffer.readableBytes)
        }
    }

    Benchmark("varlong decode x1000") { benchmark in
        var encoded = ByteBufferAllocator().buffer(capacity: 16 * 1_000)
        for value in values { encoded.writeKafkaVarlong(value) }
        for _ in benchmark.scaledIterations {
            var input = encoded
            var sum: Int64 = 0
            while input.readableBytes > 0 {
                sum &+= (try? input.readKafkaVarlong()) ?? 0
            }
            blackHole(sum)
        }
    }
}
