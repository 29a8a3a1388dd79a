import Dispatch
import FjordProtocol
@testable import FjordStorage
import Foundation
import NIOCore
import Synchronization
import SystemPackage
import Testing

/// "No fsync under the log's lock": every flushing path of `LocalLog`, driven while
/// `LogLockProbe` counts the fsyncs made by a thread holding a log's lock. The count must not
/// move, while the total number of fsyncs must (the paths did flush).
@Suite("Durability: every fsync outside the log's lock", .serialized)
struct DurabilityTests {
    #if DEBUG
    @Test("the probe counts an fsync made under a log's lock")
    func probeDetects() throws {
        let dir = TemporaryDirectory()
        let file = try SegmentFile.open(dir.path.appending("probe"), create: true)
        let before = LogLockProbe.syncsUnderLock.load(ordering: .relaxed)
        LogLockProbe.enter()
        try file.sync()
        LogLockProbe.exit()
        #expect(LogLockProbe.syncsUnderLock.load(ordering: .relaxed) == before + 1)
        try file.sync()
        #expect(LogLockProbe.syncsUnderLock.load(ordering: .relaxed) == before + 1, "outside the mark it is not counted")
    }

    @Test("flush.messages, rolls (inline and background), flush.ms, group commit, truncation, retention, compaction and close")
    func noFsyncUnderTheLock() async throws {
        let underLock = LogLockProbe.syncsUnderLock.load(ordering: .relaxed)
        let total = LogLockProbe.syncs.load(ordering: .relaxed)
        let now: Int64 = 1_700_000_000_000

        // flush.messages=1 with inline rolls (no background runner), stream versioning and
        // leader epoch changes: every append flushes, rolls write producer snapshots and stream
        // checkpoints, epoch changes write the epoch checkpoint.
        let dir = TemporaryDirectory()
        var config = LogConfig()
        config.flushMessages = 1
        config.segmentBytes = 4096
        config.streamVersioning = true
        let (log, _) = try openLog(dir, config: config)
        for i in 0..<40 {
            _ = try log.append(makeBatch(count: 3, valueSize: 200, keyPrefix: "s\(i % 4)-"), leaderEpoch: LeaderEpoch(Int32(i / 10)), nowMs: now)
        }
        #expect(log.segmentCount > 3)
        log.highWatermark = HighWatermark(log.logEndOffset)
        _ = try log.deleteRecords(before: 30)
        _ = try log.deleteOldSegments(nowMs: now + 365 * 24 * 3_600_000)
        try log.truncate(to: log.logEndOffset - 5)
        try log.truncateFullyAndStart(at: 500, nowMs: now)
        _ = try log.append(makeBatch(count: 2), leaderEpoch: 9, nowMs: now)
        try log.close(nowMs: now)

        // Background rolls, flush.ms and group commit (log.flush.on.ack).
        let queue = DispatchQueue(label: "flush")
        let runner: @Sendable (@escaping @Sendable () -> Void) -> Void = { work in queue.async(execute: work) }
        var lazy = LogConfig()
        lazy.segmentBytes = 4096
        lazy.flushMs = 0
        let dir2 = TemporaryDirectory()
        let (background, _) = try openLog(dir2, config: lazy)
        background.setBackgroundRunner(runner)
        for _ in 0..<20 {
            let info = try background.append(makeBatch(count: 3, valueSize: 200), leaderEpoch: 0, nowMs: now)
            try await background.flushed(through: info.lastOffset + 1, runFlush: runner)
        }
        try background.flushIfDue(nowMs: now + 1)
        queue.sync {}
        try background.roll(nowMs: now)
        try background.close(nowMs: now)

        // Compaction's swap.
        var compacted = LogConfig()
        compacted.compactEnabled = true
        compacted.deleteEnabled = false
        compacted.segmentBytes = 4096
        let dir3 = TemporaryDirectory()
        let (cleaned, _) = try openLog(dir3, config: compacted)
        for _ in 0..<30 {
            _ = try cleaned.append(makeBatch(count: 5, valueSize: 100, keyPrefix: "same"), leaderEpoch: 0, nowMs: now)
        }
        cleaned.highWatermark = HighWatermark(cleaned.logEndOffset)
        #expect(try LogCleaner.clean(cleaned, nowMs: now).segmentsCleaned > 0)
        try cleaned.close(nowMs: now)

        #expect(LogLockProbe.syncsUnderLock.load(ordering: .relaxed) == underLock, "an fsync ran under a log's lock")
        #expect(LogLockProbe.syncs.load(ordering: .relaxed) - total > 100, "the paths above fsync")
    }
    #endif
}
