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
        // Every record in a closed segment and committed; every other batch zstd-compressed.
        let latest = try fill(log, batches: 1_000, keys: 1_000, now: now, codec: { $0 % 2 == 0 ? .zstd : .none })
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
        log.highWatermark = HighWatermark(log.logEndOffset)
        _ = try LogCleaner.clean(log, nowMs: now + 1_000)
        var records = try readAll(log)
        #expect(records.map(\.offset) == [2, 3], "a's latest and b's tombstone")
        _ = try LogCleaner.clean(log, nowMs: now + 120_000)
        records = try readAll(log)
        #expect(records.map(\.offset) == [2])
        // The active segment is never cleaned.
        _ = try log.append(makeBatch(count: 2, timestamp: now, keys: ["a", "a"], values: ["x", "y"]), leaderEpoch: 0, nowMs: now)
        log.highWatermark = HighWatermark(log.logEndOffset)
        _ = try LogCleaner.clean(log, nowMs: now + 200_000)
        #expect(try readAll(log).map(\.offset) == [2, 4, 5])
    }

    /// Appends `batches` × 100 records over `keys` keys (about 5% tombstones, timestamps in the
    /// past), rolls and commits; returns each key's latest (offset, value).
    /// `key` picks a record's key from its batch number (default: uniform over `keys`), `codec`
    /// a batch's compression.
    func fill(_ log: LocalLog, batches: Int, keys: Int, now: Int64, codec: (Int) -> CompressionCodec = { _ in .none },
              key: ((Int, inout SystemRandomNumberGenerator) -> String)? = nil) throws -> [String: (offset: Int64, value: String?)] {
        var latest: [String: (offset: Int64, value: String?)] = [:]
        var rng = SystemRandomNumberGenerator()
        var offset = log.logEndOffset.rawValue
        for batch in 0..<batches {
            var batchKeys: [String?] = []
            var values: [String?] = []
            for _ in 0..<100 {
                let key = key?(batch, &rng) ?? "key-\(Int.random(in: 0..<keys, using: &rng))"
                let value: String? = Int.random(in: 0..<20, using: &rng) == 0 ? nil : "v\(offset)-\(key)"
                batchKeys.append(key)
                values.append(value)
                latest[key] = (offset, value)
                offset += 1
            }
            _ = try log.append(makeBatch(count: 100, timestamp: now - 10_000, codec: codec(batch), keys: batchKeys, values: values),
                               leaderEpoch: 0, nowMs: now)
        }
        try log.roll(nowMs: now)
        log.highWatermark = HighWatermark(log.logEndOffset)
        return latest
    }

    @Test("a key map smaller than the log's keys cleans in several bounded passes to the same result")
    func boundedKeyMap() throws {
        let dir = TemporaryDirectory()
        var config = LogConfig()
        config.compactEnabled = true
        config.deleteEnabled = false
        config.segmentBytes = 64 * 1024
        config.deleteRetentionMs = 0
        let now: Int64 = 1_700_000_000_000
        let (log, _) = try openLog(dir, config: config)
        // Ten phases of 2,000 records: 90% over the phase's own 100 keys, 10% updating keys of
        // the phase before, so later passes supersede records that earlier passes kept.
        let latest = try fill(log, batches: 200, keys: 1_000, now: now, key: { batch, rng in
            let phase = batch / 20
            let owner = phase > 0 && Int.random(in: 0..<10, using: &rng) == 0 ? phase - 1 : phase
            return "k\(owner)-\(Int.random(in: 0..<100, using: &rng))"
        })
        let end = log.logEndOffset
        // Room for 250 keys per pass (a phase and a half), a quarter of the log's 1,000.
        let budget = 250 * ("k9-99".utf8.count + OffsetMap.entryOverhead)
        var passes = 0
        while log.cleanerCheckpoint < end && passes < 50 {
            let stats = try LogCleaner.clean(log, nowMs: now, dedupeBufferBytes: budget)
            #expect(stats.mapKeys <= 250, "the map stays within its budget")
            #expect(stats.cleanedThrough > 0 && stats.cleanedThrough == log.cleanerCheckpoint.rawValue)
            passes += 1
        }
        #expect(passes >= 4, "the log took several passes (\(passes))")
        #expect(log.cleanerCheckpoint == end)

        let live = latest.filter { $0.value.value != nil }
        let records = try readAll(log)
        #expect(records.count == live.count, "one record per live key, tombstones gone")
        for record in records {
            let key = String(buffer: try #require(record.key))
            #expect(record.offset == live[key]?.offset && record.value.map { String(buffer: $0) } == live[key]?.value)
        }
        #expect(!LogCleaner.needsCleaning(log, nowMs: now), "nothing dirty is left")
    }

    @Test("the dirty ratio decides when a log is cleaned; the cleaner checkpoint survives a restart")
    func dirtyRatioAndCheckpoint() throws {
        let dir = TemporaryDirectory()
        var config = LogConfig()
        config.compactEnabled = true
        config.deleteEnabled = false
        config.segmentBytes = 64 * 1024
        config.minCleanableDirtyRatio = 0.5
        let now: Int64 = 1_700_000_000_000
        let tp = TopicPartition(topic: "compacted", partition: 0)
        var cleanedThrough: Int64 = 0
        do {
            let (manager, _) = try LogManager.open(directory: dir.path, nowMs: now) { _ in config }
            let log = try manager.getOrCreateLog(tp, topicID: .random(), config: config, nowMs: now)
            _ = try fill(log, batches: 100, keys: 5_000, now: now)
            #expect(LogCleaner.needsCleaning(log, nowMs: now), "all of it is dirty")
            let report = manager.runMaintenance(nowMs: now)
            #expect(report.cleaned.count == 1 && report.errors.isEmpty)
            cleanedThrough = log.cleanerCheckpoint.rawValue
            #expect(cleanedThrough == log.logEndOffset.rawValue)
            // A little new data: below the ratio, so the next pass leaves the log alone.
            _ = try fill(log, batches: 1, keys: 5_000, now: now)
            #expect(!LogCleaner.needsCleaning(log, nowMs: now))
            #expect(manager.runMaintenance(nowMs: now).cleaned.isEmpty)
            try manager.shutdown(nowMs: now)
        }
        let (manager, _) = try LogManager.open(directory: dir.path, nowMs: now) { _ in config }
        let log = try #require(manager.log(for: tp))
        #expect(log.cleanerCheckpoint.rawValue == cleanedThrough, "read back from cleaner-offset-checkpoint")
        // Much more new data: past the ratio, cleaned, and the checkpoint moves on.
        _ = try fill(log, batches: 100, keys: 5_000, now: now)
        #expect(LogCleaner.needsCleaning(log, nowMs: now))
        #expect(manager.runMaintenance(nowMs: now).cleaned.count == 1)
        #expect(log.cleanerCheckpoint > cleanedThrough)
        try manager.shutdown(nowMs: now)
    }

    @Test("a kept tombstone brings the log back to the cleaner once it outlives delete.retention.ms")
    func tombstoneExpiryTriggersCleaning() throws {
        let dir = TemporaryDirectory()
        var config = LogConfig()
        config.compactEnabled = true
        config.deleteEnabled = false
        config.deleteRetentionMs = 60_000
        let now: Int64 = 1_700_000_000_000
        let (manager, _) = try LogManager.open(directory: dir.path, nowMs: now) { _ in config }
        let log = try manager.getOrCreateLog(TopicPartition(topic: "t", partition: 0), topicID: .random(), config: config, nowMs: now)
        _ = try log.append(makeBatch(count: 3, timestamp: now, keys: ["a", "b", "a"], values: ["1", "2", "3"]), leaderEpoch: 0, nowMs: now)
        _ = try log.append(makeBatch(count: 1, timestamp: now, keys: ["b"], values: [nil]), leaderEpoch: 0, nowMs: now)
        try log.roll(nowMs: now)
        log.highWatermark = HighWatermark(log.logEndOffset)
        #expect(manager.runMaintenance(nowMs: now + 1_000).cleaned.count == 1)
        #expect(try readAll(log).map(\.offset) == [2, 3], "a's latest and b's young tombstone")
        #expect(log.nextTombstoneExpiryMs == now + 60_001)
        // Nothing dirty, but the tombstone is due: the next pass after its expiry removes it.
        #expect(!LogCleaner.needsCleaning(log, nowMs: now + 30_000))
        #expect(LogCleaner.needsCleaning(log, nowMs: now + 60_001))
        #expect(manager.runMaintenance(nowMs: now + 61_000).cleaned.count == 1)
        #expect(try readAll(log).map(\.offset) == [2])
        #expect(log.nextTombstoneExpiryMs == nil && !LogCleaner.needsCleaning(log, nowMs: now + 100_000))
        try manager.shutdown(nowMs: now + 100_000)
    }

    @Test("tombstones with extreme timestamps (Int64.min, Int64.max) are cleaned without trapping")
    func extremeTimestamps() throws {
        let dir = TemporaryDirectory()
        var config = LogConfig()
        config.compactEnabled = true
        config.deleteRetentionMs = Int64.max
        let now: Int64 = 1_700_000_000_000
        let (log, _) = try openLog(dir, config: config)
        _ = try log.append(makeBatch(count: 1, timestamp: Int64.max, keys: ["late"], values: [nil]), leaderEpoch: 0, nowMs: now)
        _ = try log.append(makeBatch(count: 1, timestamp: Int64.min, keys: ["early"], values: [nil]), leaderEpoch: 0, nowMs: now)
        _ = try log.append(makeBatch(count: 1, timestamp: now, keys: ["kept"], values: ["v"]), leaderEpoch: 0, nowMs: now)
        try log.roll(nowMs: now)
        log.highWatermark = HighWatermark(log.logEndOffset)
        _ = try LogCleaner.clean(log, nowMs: now)
        #expect(try readAll(log).map(\.offset) == [0, 1, 2], "no tombstone is older than Int64.max ms")
        #expect(log.nextTombstoneExpiryMs == 0, "Int64.min + Int64.max + 1: the early one is due at once")
        config.deleteRetentionMs = 0
        try log.updateConfig(config)
        _ = try LogCleaner.clean(log, nowMs: now)
        #expect(try readAll(log).map(\.offset) == [0, 2], "the Int64.min tombstone is long expired; the Int64.max one is from the future")
    }
}
