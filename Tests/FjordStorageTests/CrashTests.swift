import FjordProtocol
@testable import FjordStorage
import FjordTesting
import Foundation
import NIOCore
import SystemPackage
import Testing

/// The built products directory (where `swift build` put fjord-log-crash-writer).
func productsDirectory() -> URL {
    URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
}

/// Mirrors fjord-log-crash-writer's deterministic batch contents.
func expectedRecord(offset: Int64, seed: UInt64) -> (key: String, value: [UInt8]) {
    let size = Int((UInt64(offset) &* 40_503 ^ seed) % 700) + 1
    let byte = UInt8(truncatingIfNeeded: UInt64(offset) ^ seed)
    return ("key-\(offset)", [UInt8](repeating: byte, count: size))
}

@Suite("Crash safety")
struct CrashTests {
    /// A child appends with fsync per batch and reports each acknowledgement; it is SIGKILLed at
    /// a random point 20 times. After each kill the log reopens with every acknowledged record
    /// readable and identical, and its end exactly after the last complete batch on disk.
    @Test("20 SIGKILLs during fsynced appends lose no acknowledged batch", .timeLimit(.minutes(3)))
    func sigkillDuringAppends() async throws {
        let writer = productsDirectory().appendingPathComponent("fjord-log-crash-writer")
        try #require(FileManager.default.isExecutableFile(atPath: writer.path), "build fjord-log-crash-writer first (swift build)")
        let dir = TemporaryDirectory()
        let seed: UInt64 = 0x5EED
        var acked: Int64 = -1
        var rng = SystemRandomNumberGenerator()
        for round in 0..<20 {
            let writerProcess = try ChildProcess(writer.path, [dir.path.string, String(seed)], output: .lines)
            let target = Int.random(in: 1...120, using: &rng)
            let timeout = Task {
                try await Task.sleep(for: .seconds(20))
                writerProcess.signal(SIGKILL)
            }
            // Acks count once the child reported them: it does so after the fsync.
            func record(_ line: String) -> Bool {
                let fields = line.split(separator: " ")
                guard fields.count == 3, fields[0] == "acked", let last = Int64(fields[2]) else { return false }
                acked = Swift.max(acked, last)
                return true
            }
            var lines = writerProcess.lines.makeAsyncIterator()
            var seen = 0
            while seen < target, let line = await lines.next() {
                if record(line) { seen += 1 }
            }
            timeout.cancel()
            // Let it run a little longer so the kill lands mid-write at a random moment.
            try await Task.sleep(for: .microseconds(Int.random(in: 0...3000, using: &rng)))
            await writerProcess.stop(with: SIGKILL)
            // Acks already in the pipe count too.
            while let line = await lines.next() { _ = record(line) }
            try #require(acked >= 0, "round \(round): the writer acknowledged nothing")

            var config = LogConfig()
            config.segmentBytes = 64 * 1024
            let (log, report) = try openLog(dir, config: config, clean: false, recoveryPoint: 0, topic: "crash")
            #expect(log.logEndOffset > acked, "round \(round): log end \(log.logEndOffset) but \(acked) was acknowledged; \(report.problems)")
            let records = try readAll(log)
            #expect(records.count == Int(log.logEndOffset.rawValue))
            for record in records {
                let want = expectedRecord(offset: record.offset, seed: seed)
                #expect(record.key == ByteBuffer(string: want.key))
                #expect(record.value.map { $0.getBytes(at: $0.readerIndex, length: $0.readableBytes) ?? [] } == want.value)
            }
            // The log's end is exactly after the last complete batch in the files.
            let partition = dir.path.appending("crash-0").string
            let lastLog = try #require(try FileManager.default.contentsOfDirectory(atPath: partition).filter { $0.hasSuffix(".log") }.sorted().last)
            let bytes = try Data(contentsOf: URL(fileURLWithPath: "\(partition)/\(lastLog)"))
            var buffer = ByteBuffer(bytes: [UInt8](bytes))
            var end = Int64(lastLog.dropLast(4)) ?? 0
            while let batch = try RecordBatch.read(from: &buffer) {
                try batch.validate()
                end = batch.nextOffset
            }
            #expect(buffer.readableBytes == 0, "round \(round): \(buffer.readableBytes) bytes of a partial batch left on disk")
            #expect(end == log.logEndOffset.rawValue)
            try log.close(nowMs: 0)
        }
    }
}
