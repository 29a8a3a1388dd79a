import FjordCompression
import FjordProtocol
@testable import FjordStorage
import Foundation
import NIOCore
import SystemPackage
import Testing

/// Damage to the tail of a log, as a crash, a bad disk or an operator leaves it.
@Suite("Corruption recovery")
struct CorruptionTests {
    struct StoredBatch {
        var position: Int
        var end: Int
        var baseOffset: Int64
        var nextOffset: Int64
        var bytes: [UInt8]
    }

    static func scan(_ bytes: [UInt8]) -> [StoredBatch] {
        var out: [StoredBatch] = []
        var buffer = ByteBuffer(bytes: bytes)
        var position = 0
        while let batch = try? RecordBatch.read(from: &buffer) {
            guard (try? batch.validate()) != nil else { break }
            out.append(StoredBatch(position: position, end: position + batch.sizeInBytes, baseOffset: batch.baseOffset,
                                   nextOffset: batch.nextOffset, bytes: batch.bytes.allBytes))
            position += batch.sizeInBytes
        }
        return out
    }

    /// 200 random corruptions of the last segment and its index: the log reopens, keeps every
    /// batch that ends before the damage (byte for byte), and serves nothing after it.
    @Test("200 random tail corruptions: every batch before the damage survives")
    func randomCorruptions() throws {
        let dir = TemporaryDirectory()
        var config = LogConfig()
        config.segmentBytes = 24 * 1024
        config.indexIntervalBytes = 512
        let now: Int64 = 1_700_000_000_000
        do {
            let (log, _) = try openLog(dir, config: config)
            for i in 0..<120 {
                _ = try log.append(makeBatch(count: 1 + i % 4, valueSize: 60 + i % 90, codec: i % 3 == 0 ? .lz4 : .none),
                                   leaderEpoch: 0, nowMs: now)
            }
            try log.close(nowMs: now)
        }
        let partition = dir.path.appending("t-0").string
        let names = try FileManager.default.contentsOfDirectory(atPath: partition).sorted()
        let original: [String: Data] = Dictionary(uniqueKeysWithValues: try names.map {
            ($0, try Data(contentsOf: URL(fileURLWithPath: "\(partition)/\($0)")))
        })
        let lastLog = try #require(names.filter { $0.hasSuffix(".log") }.last)
        let lastIndex = lastLog.replacingOccurrences(of: ".log", with: ".index")
        let lastBase = try #require(Int64(lastLog.dropLast(4)))
        let pristine = [UInt8](original[lastLog]!)
        let pristineBatches = Self.scan(pristine)
        try #require(pristineBatches.count > 10)

        var rng = SystemRandomNumberGenerator()
        for iteration in 0..<200 {
            for (name, data) in original { try data.write(to: URL(fileURLWithPath: "\(partition)/\(name)")) }
            var bytes = pristine
            var damageAt = bytes.count  // first damaged byte of the .log; count = log untouched
            var kind = ""
            switch iteration % 5 {
            case 0:
                kind = "bit flip"
                let position = Int.random(in: 0..<bytes.count, using: &rng)
                bytes[position] ^= 1 << UInt8.random(in: 0...7, using: &rng)
                damageAt = position
            case 1:
                kind = "truncation"
                damageAt = Int.random(in: 0..<bytes.count, using: &rng)
                bytes.removeSubrange(damageAt...)
            case 2:
                kind = "zero run"
                let position = Int.random(in: 0..<bytes.count, using: &rng)
                let end = Swift.min(bytes.count, position + Int.random(in: 1...600, using: &rng))
                if bytes[position..<end].contains(where: { $0 != 0 }) { damageAt = position }
                for i in position..<end { bytes[i] = 0 }
            case 3:
                kind = "garbage appended"
                bytes += (0..<Int.random(in: 1...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            default:
                kind = "index damage"
                var index = [UInt8](original[lastIndex]!)
                if index.isEmpty { index = [UInt8](repeating: 0, count: 16) }
                let position = Int.random(in: 0..<index.count, using: &rng)
                index[position] ^= UInt8.random(in: 1...255, using: &rng)
                if Bool.random(using: &rng) { index.removeLast(Int.random(in: 1...Swift.min(7, index.count), using: &rng)) }
                try Data(index).write(to: URL(fileURLWithPath: "\(partition)/\(lastIndex)"))
            }
            try Data(bytes).write(to: URL(fileURLWithPath: "\(partition)/\(lastLog)"))

            // The partition leader epoch lies outside the CRC (by Kafka's design): a flip there is
            // not damage to records. Everything else ending before the damage must survive.
            let kept = pristineBatches.filter { $0.end <= damageAt || (kind == "bit flip" && $0.position + 12 <= damageAt && damageAt < $0.position + 16) }
            let clean = iteration % 2 == 0
            let (log, report) = try openLog(dir, config: config, clean: clean, recoveryPoint: lastBase)
            let expectedEnd = kept.last?.nextOffset ?? lastBase
            let stored = try readStoredBatches(log, from: lastBase)
            #expect(stored.count >= kept.count, "\(kind) at \(damageAt) (clean \(clean)): kept \(stored.count) of \(kept.count); \(report.problems)")
            for (got, want) in zip(stored, kept) {
                var a = got.bytes, b = want.bytes
                for i in 12..<16 { a[i] = 0; b[i] = 0 }
                #expect(a == b, "\(kind): batch at \(want.baseOffset) changed")
            }
            #expect(log.logEndOffset >= expectedEnd, "\(kind) at \(damageAt): log end \(log.logEndOffset) < \(expectedEnd)")
            // Nothing damaged is served: every stored batch validates.
            for batch in stored { #expect((try? RecordBatch(bytes: ByteBuffer(bytes: batch.bytes)).validate()) != nil) }
            try log.close(nowMs: now)
        }
    }

    func readStoredBatches(_ log: LocalLog, from offset: Int64) throws -> [StoredBatch] {
        var out: [StoredBatch] = []
        var next = offset
        while next < log.logEndOffset {
            guard let slice = try log.read(from: Offset(next), maxBytes: 1 << 20, upperBound: .logEndOffset, minOneMessage: true).records else { break }
            let found = Self.scan(try slice.readBytes().allBytes)
            guard let last = found.last else { break }
            out += found
            next = last.nextOffset
        }
        return out
    }
}

extension ByteBuffer {
    init(bytes: [UInt8]) {
        self = ByteBuffer()
        self.writeBytes(bytes)
    }

    var allBytes: [UInt8] { self.getBytes(at: self.readerIndex, length: self.readableBytes) ?? [] }
}
