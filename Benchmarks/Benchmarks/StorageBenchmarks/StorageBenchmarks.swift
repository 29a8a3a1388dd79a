import Benchmark
import FjordProtocol
import FjordStorage
import Foundation
import NIOCore
import SystemPackage

/// Storage hot paths, each next to the machine's limit measured in the same run:
/// - append of 1 MiB batches vs a plain `write(2)` loop of the same bytes to the same file system;
/// - offset lookup (index binary search + header scan) in a 1 GiB segment, and a 1 MiB read that
///   returns a file region (zero mallocs: no record byte is copied);
/// - recovery (mmap + CRC32C scan of a 256 MiB segment) vs CRC32C over the same bytes in memory.
/// Throughput benchmarks move 1 MiB per iteration, so iterations/s = MiB/s.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock, .mallocCountTotal],
        warmupIterations: 5,
        maxDuration: .seconds(4),
        maxIterations: 2_000
    )
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("fjord-storage-bench-\(getpid())")
    try? FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)

    /// A 1 MiB batch of 1,000 records.
    let batch: ByteBuffer = {
        var builder = RecordBatchBuilder(initialCapacity: 1 << 21)
        let value = ByteBuffer(repeating: 0x61, count: 1_030)
        for i in 0..<1_000 {
            builder.append(timestamp: 1_700_000_000_000 + Int64(i), key: ByteBuffer(string: "key-\(i)"), value: value)
        }
        return try! builder.build().bytes
    }()
    let now = Int64(Date().timeIntervalSince1970 * 1000)
    let flushQueue = DispatchQueue(label: "flush")
    func freshLog(_ name: String, segmentBytes: Int = 1 << 30) -> LocalLog {
        let dir = root.appendingPathComponent(name)
        try? FileManager.default.removeItem(at: dir)
        var config = LogConfig()
        config.segmentBytes = segmentBytes
        config.maxMessageBytes = 2 << 20
        let tp = TopicPartition(topic: name, partition: 0)
        let log = try! LocalLog.open(directory: FilePath(dir.path), topicPartition: tp, config: config, recoveryPoint: 0,
                                     logStartOffset: 0, cleanShutdown: true, nowMs: now).0
        // As under LogManager: rolled segments are fsynced in the background.
        log.setBackgroundRunner { work in flushQueue.async(execute: work) }
        return log
    }

    final class Lazy<T>: @unchecked Sendable {
        // Safe: benchmarks run one at a time on one thread; `value` is set once before any read.
        private var value: T?
        private let make: () -> T
        init(_ make: @escaping () -> T) { self.make = make }
        var get: T {
            if let value { return value }
            let made = make()
            value = made
            return made
        }
    }
    // The benchmark closure runs once per sample, so the file and the log are opened once and
    // shared by all samples; both start after a sync() so neither inherits dirty pages.
    let rawFile = Lazy<Int32> {
        let path = root.appendingPathComponent("raw-write").path
        sync()
        return open(path, O_CREAT | O_TRUNC | O_WRONLY, 0o644)
    }
    let appendLog = Lazy<LocalLog> {
        // 2 GiB segment: no roll (and its background fsync) inside the measured window, so both
        // benchmarks measure the same thing: bytes into the page cache.
        let log = freshLog("append", segmentBytes: Int(Int32.max))
        _ = try? log.append(batch, leaderEpoch: 0, nowMs: now)
        sync()
        return log
    }

    Benchmark("write(2) loop 1 MiB (machine limit)", configuration: .init(metrics: [.throughput, .wallClock], maxIterations: 1_500)) { benchmark in
        let fd = rawFile.get
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            batch.withUnsafeReadableBytes { raw in _ = write(fd, raw.baseAddress, raw.count) }
        }
    }

    Benchmark("LocalLog append 1 MiB batch", configuration: .init(metrics: [.throughput, .wallClock, .mallocCountTotal], maxIterations: 1_500)) { benchmark in
        let log = appendLog.get
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            _ = try? log.append(batch, leaderEpoch: 0, nowMs: now)
        }
    }

    // A 1 GiB segment for lookups and reads, built on first use (not while other benchmarks run).
    let big = Lazy<(LocalLog, Int64)> {
        let log = freshLog("lookup", segmentBytes: 1 << 30)
        for _ in 0..<1_020 { _ = try? log.append(batch, leaderEpoch: 0, nowMs: now) }
        log.highWatermark = HighWatermark(log.logEndOffset)
        return (log, log.logEndOffset.rawValue)
    }

    Benchmark("offset lookup in a 1 GiB segment", configuration: .init(metrics: [.wallClock, .mallocCountTotal], maxIterations: 200_000)) { benchmark in
        let (bigLog, end) = big.get
        benchmark.startMeasurement()
        var offset: Int64 = 12_345
        for _ in benchmark.scaledIterations {
            offset = (offset &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407) & 0x7FFF_FFFF
            let result = try? bigLog.read(from: Offset(offset % end), maxBytes: 1, upperBound: .highWatermark, minOneMessage: false)
            blackHole(result?.records?.position)
        }
    }

    Benchmark("read 1 MiB as a file region (no copy)", configuration: .init(metrics: [.throughput, .wallClock, .mallocCountTotal], maxIterations: 200_000)) { benchmark in
        let (bigLog, end) = big.get
        benchmark.startMeasurement()
        var offset: Int64 = 777
        for _ in benchmark.scaledIterations {
            offset = (offset &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407) & 0x7FFF_FFFF
            let result = try? bigLog.read(from: Offset(offset % end), maxBytes: 1 << 20, upperBound: .highWatermark, minOneMessage: true)
            blackHole(result?.records?.length)
        }
    }

    // Recovery of a 256 MiB segment vs CRC32C of 256 MiB in memory.
    let recoveryDir = root.appendingPathComponent("recovery")
    let recoverySetup = Lazy<Bool> {
        let log = freshLog("recovery", segmentBytes: 1 << 30)
        for _ in 0..<256 { _ = try? log.append(batch, leaderEpoch: 0, nowMs: now) }
        try? log.flush(nowMs: now)
        return true
    }
    let segmentBytes = 256 * batch.readableBytes

    Benchmark("recovery scan 256 MiB segment", configuration: .init(metrics: [.throughput, .wallClock], scalingFactor: .one, maxIterations: 50)) { benchmark in
        _ = recoverySetup.get
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            var config = LogConfig()
            config.maxMessageBytes = 2 << 20
            let tp = TopicPartition(topic: "recovery", partition: 0)
            let opened = try? LocalLog.open(directory: FilePath(recoveryDir.path), topicPartition: tp, config: config,
                                            recoveryPoint: 0, logStartOffset: 0, cleanShutdown: false, nowMs: now)
            blackHole(opened?.0.logEndOffset)
        }
    }
    let memory = [UInt8](repeating: 0x5A, count: segmentBytes)
    Benchmark("CRC32C 256 MiB in memory (recovery's limit)", configuration: .init(metrics: [.throughput, .wallClock], scalingFactor: .one, maxIterations: 50)) { benchmark in
        for _ in benchmark.scaledIterations {
            memory.withUnsafeBytes { blackHole(CRC32C.checksum($0)) }
        }
    }

    Benchmark.teardown = {
        try? FileManager.default.removeItem(at: root)
    }
}
