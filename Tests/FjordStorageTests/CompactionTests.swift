import FjordCompression
import FjordProtocol
@testable import FjordStorage
import Foundation
import NIOCore
import Testing

@Suite("Log compaction")
struct CompactionTests {
    /// 100,000 records over 1,000 keys, with tombstones: after cleaning, exactly the latest value
    /// of each live key remains, at its original offset (for records in closed segments).
    @Test("100,000 records over 1,000 keys compact to the latest value of each live key")
    func compaction() throws {
        let dir = TemporaryDirectory()
        var config = LogConfig()
        config.compactEnabled = true
        config.deleteEnabled = false
        config.segmentBytes = 256 * 1024
        config.deleteRetentionMs = 0
        let now: Int64 = 1_700_000_000_000
        let (log, _) = try openLog(dir, config: config)
        var latest: [String: (offset: Int64, value: String?)] = [:]
        var rng = SystemRandomNumberGenerator()
        var offset: Int64 = 0
        for batchIndex in 0..<1_000 {
            var keys: [String?] = []
            var values: [String?] = []
            for _ in 0..<100 {
                let key = "key-\(Int.random(in: 0..<1_000, using: &rng))"
                // About 5% tombstones.
                let value: String? = Int.random(in: 0..<20, using: &rng) == 0 ? nil : "v\(offset)-\(key)"
                keys.append(key)
                values.append(value)
                latest[key] = (offset, value)
                offset += 1
            }
            let codec: CompressionCodec = batchIndex % 2 == 0 ? .zstd : .none
            _ = try log.append(makeBatch(count: 100, timestamp: now - 10_000, codec: codec, keys: keys, values: values),
                               leaderEpoch: 0, nowMs: now)
        }
        // Roll so every record is in a closed segment, and commit them all.
        try log.roll(nowMs: now)
        log.highWatermark = log.logEndOffset
        let sizeBefore = log.sizeInBytes
        let stats = try LogCleaner.clean(log, nowMs: now)
        #expect(stats.recordsRead == 100_000)
        #expect(stats.segmentsCleaned > 0)
        #expect(log.sizeInBytes < sizeBefore / 10)

        let live = latest.filter { $0.value.value != nil }
        let records = try readAll(log)
        #expect(records.count == live.count, "tombstones older than delete.retention.ms are removed")
        var seen = Set<String>()
        for record in records {
            let key = String(buffer: try #require(record.key))
            #expect(seen.insert(key).inserted, "\(key) appears twice")
            let want = try #require(live[key])
            #expect(record.offset == want.offset)
            #expect(record.value.map { String(buffer: $0) } == want.value)
        }
        #expect(log.logEndOffset == 100_000, "offsets never change")
        // Compacted output is stable: cleaning again changes nothing, and a restart keeps it.
        #expect(try LogCleaner.clean(log, nowMs: now).segmentsCleaned == 0)
        try log.close(nowMs: now)
        let (reopened, _) = try openLog(dir, config: config, clean: false)
        #expect(try readAll(reopened).count == live.count)
    }

    @Test("tombstones younger than delete.retention.ms survive cleaning")
    func tombstoneRetention() throws {
        let dir = TemporaryDirectory()
        var config = LogConfig()
        config.compactEnabled = true
        config.deleteRetentionMs = 60_000
        let now: Int64 = 1_700_000_000_000
        let (log, _) = try openLog(dir, config: config)
        _ = try log.append(makeBatch(count: 3, timestamp: now, keys: ["a", "b", "a"], values: ["1", "2", "3"]), leaderEpoch: 0, nowMs: now)
        _ = try log.append(makeBatch(count: 1, timestamp: now, keys: ["b"], values: [nil]), leaderEpoch: 0, nowMs: now)
        try log.roll(nowMs: now)
        log.highWatermark = log.logEndOffset
        _ = try LogCleaner.clean(log, nowMs: now + 1_000)
        var records = try readAll(log)
        #expect(records.map(\.offset) == [2, 3], "a's latest and b's tombstone")
        _ = try LogCleaner.clean(log, nowMs: now + 120_000)
        records = try readAll(log)
        #expect(records.map(\.offset) == [2])
        // The active segment is never cleaned.
        _ = try log.append(makeBatch(count: 2, timestamp: now, keys: ["a", "a"], values: ["x", "y"]), leaderEpoch: 0, nowMs: now)
        log.highWatermark = log.logEndOffset
        _ = try LogCleaner.clean(log, nowMs: now + 200_000)
        #expect(try readAll(log).map(\.offset) == [2, 4, 5])
    }
}
