import FjordProtocol
@testable import FjordStorage
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
    func sigkillDuringAppends() throws {
        let writer = productsDirectory().appendingPathComponent("fjord-log-crash-writer")
        try #require(FileManager.default.isExecutableFile(atPath: writer.path), "build fjord-log-crash-writer first (swift build)")
        let dir = TemporaryDirectory()
        let seed: UInt64 = 0x5EED
        var acked: Int64 = -1
        var rng = SystemRandomNumberGenerator()
        for round in 0..<20 {
            let process = Process()
            process.executableURL = writer
            process.arguments = [dir.path.string, String(seed)]
            let output = Pipe()
            process.standardOutput = output
            try process.run()
            let target = Int.random(in: 1...120, using: &rng)
            var seen = 0
            var pending = Data()
            let deadline = Date().addingTimeInterval(20)
            while seen < target && Date() < deadline {
                let chunk = output.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                pending.append(chunk)
                while let newline = pending.firstIndex(of: 10) {
                    let line = String(decoding: pending[..<newline], as: UTF8.self)
                    pending.removeSubrange(...newline)
                    let fields = line.split(separator: " ")
                    if fields.count == 3, fields[0] == "acked", let last = Int64(fields[2]) {
                        acked = Swift.max(acked, last)
                        seen += 1
                    }
                }
            }
            // Let it run a little longer so the kill lands mid-write at a random moment.
            usleep(UInt32.random(in: 0...3000, using: &rng))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            // Acks already in the pipe count too: the child reported them after fsync.
            pending.append(output.fileHandleForReading.readDataToEndOfFile())
            for line in String(decoding: pending, as: UTF8.self).split(separator: "\n") {
                let fields = line.split(separator: " ")
                if fields.count == 3, fields[0] == "acked", let last = Int64(fields[2]) { acked = Swift.max(acked, last) }
            }
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
