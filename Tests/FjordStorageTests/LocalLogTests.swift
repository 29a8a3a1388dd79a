import FjordProtocol
@testable import FjordStorage
import Foundation
import NIOCore
import SystemPackage
import Testing

@Suite("LocalLog")
struct LocalLogTests {
    let now: Int64 = 1_700_000_000_000

    @Test("appends assign consecutive offsets and reads return the same bytes")
    func appendAndRead() throws {
        let dir = TemporaryDirectory()
        let (log, _) = try openLog(dir)
        var expected: [ByteBuffer] = []
        for i in 0..<50 {
            let batch = makeBatch(count: 10, keyPrefix: "b\(i)-")
            expected.append(batch)
            let info = try log.append(batch, leaderEpoch: 3, nowMs: now)
            #expect(info.firstOffset == Offset(Int64(i * 10)))
            #expect(info.lastOffset == Offset(Int64(i * 10 + 9)))
        }
        #expect(log.logEndOffset == 500)
        let records = try readAll(log)
        #expect(records.count == 500)
        #expect(records.map(\.offset) == Array(0..<500))
        #expect(records[123].key == ByteBuffer(string: "b12-3"))
        // The stored bytes differ from the produced ones only in base offset and leader epoch.
        let slice = try #require(try log.read(from: 200, maxBytes: 100, upperBound: .logEndOffset, minOneMessage: true).records)
        let stored = try #require(try batches(in: try slice.readBytes()).first)
        #expect(stored.baseOffset == 200)
        #expect(stored.partitionLeaderEpoch == 3)
        var original = expected[20]
        original.moveReaderIndex(forwardBy: 16)
        var storedTail = stored.bytes
        storedTail.moveReaderIndex(forwardBy: 16)
        #expect(original == storedTail)
        try stored.validate()
    }

    @Test("reads stop at the high watermark and refuse offsets outside the log")
    func readBounds() throws {
        let dir = TemporaryDirectory()
        let (log, _) = try openLog(dir)
        for _ in 0..<5 { _ = try log.append(makeBatch(count: 4), leaderEpoch: 0, nowMs: now) }
        log.highWatermark = HighWatermark(8)
        #expect(try readAll(log, upperBound: .highWatermark).count == 8)
        #expect(try log.read(from: 8, maxBytes: 1000, upperBound: .highWatermark, minOneMessage: true).records == nil)
        #expect(throws: StorageError.self) { _ = try log.read(from: 21, maxBytes: 1000, upperBound: .logEndOffset, minOneMessage: true) }
        #expect(try log.read(from: 20, maxBytes: 1000, upperBound: .logEndOffset, minOneMessage: true).records == nil)
        // minOneMessage returns a whole first batch even past maxBytes.
        let first = try #require(try log.read(from: 0, maxBytes: 10, upperBound: .logEndOffset, minOneMessage: true).records)
        #expect(try batches(in: try first.readBytes()).count == 1)
        let none = try log.read(from: 0, maxBytes: 10, upperBound: .logEndOffset, minOneMessage: false).records
        #expect(try none.map { try batches(in: try $0.readBytes()).count } ?? 0 == 0)
    }

    @Test("segments roll at segment.bytes and survive a clean reopen")
    func rollAndReopen() throws {
        let dir = TemporaryDirectory()
        var config = LogConfig()
        config.segmentBytes = 16 * 1024
        config.indexIntervalBytes = 1024
        do {
            let (log, _) = try openLog(dir, config: config)
            for _ in 0..<100 { _ = try log.append(makeBatch(count: 5, valueSize: 200), leaderEpoch: 1, nowMs: now) }
            #expect(log.segmentCount > 5)
            try log.close(nowMs: now)
        }
        let (log, report) = try openLog(dir, config: config, clean: true)
        #expect(report.recoveredSegments == 1, "only the active segment is rescanned after a clean shutdown")
        #expect(report.truncatedBytes == 0)
        #expect(log.logEndOffset == 500)
        let records = try readAll(log)
        #expect(records.map(\.offset) == Array(0..<500))
        // Appends continue after reopening.
        let info = try log.append(makeBatch(count: 1), leaderEpoch: 2, nowMs: now)
        #expect(info.firstOffset == 500)
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path.appending("t-0").string)
        #expect(names.contains("00000000000000000000.log"))
        #expect(names.contains("00000000000000000000.index"))
        #expect(names.contains("00000000000000000000.timeindex"))
        #expect(names.contains("leader-epoch-checkpoint"))
    }

    @Test("unclean reopen recovers every segment past the recovery point")
    func uncleanReopen() throws {
        let dir = TemporaryDirectory()
        var config = LogConfig()
        config.segmentBytes = 8 * 1024
        do {
            let (log, _) = try openLog(dir, config: config)
            for _ in 0..<60 { _ = try log.append(makeBatch(count: 3, valueSize: 150), leaderEpoch: 0, nowMs: now) }
            // no close: simulate a crash (files are in the page cache)
        }
        let (log, report) = try openLog(dir, config: config, clean: false, recoveryPoint: 0)
        #expect(report.recoveredSegments > 1)
        #expect(report.truncatedBytes == 0)
        #expect(log.logEndOffset == 180)
        #expect(try readAll(log).count == 180)
    }

    @Test("truncate removes offsets at batch granularity and appends continue after")
    func truncation() throws {
        let dir = TemporaryDirectory()
        var config = LogConfig()
        config.segmentBytes = 4 * 1024
        let (log, _) = try openLog(dir, config: config)
        for epoch in 0..<30 { _ = try log.append(makeBatch(count: 2, valueSize: 200), leaderEpoch: LeaderEpoch(Int32(epoch / 10)), nowMs: now) }
        #expect(log.endOffset(forLeaderEpoch: 1) == (1, 40))
        try log.truncate(to: 24)
        #expect(log.logEndOffset == 24)
        #expect(log.endOffset(forLeaderEpoch: 1) == (1, 24))
        #expect(try readAll(log).map(\.offset) == Array(0..<24))
        let info = try log.append(makeBatch(count: 2), leaderEpoch: 5, nowMs: now)
        #expect(info.firstOffset == 24)
        #expect(log.endOffset(forLeaderEpoch: 1) == (1, 24))
        #expect(log.endOffset(forLeaderEpoch: 5) == (5, 26))
    }

    @Test("DeleteRecords and retention move the log start offset and delete whole segments")
    func retention() throws {
        let dir = TemporaryDirectory()
        var config = LogConfig()
        config.segmentBytes = 4 * 1024
        config.retentionBytes = 12 * 1024
        let (log, _) = try openLog(dir, config: config)
        for _ in 0..<40 { _ = try log.append(makeBatch(count: 2, valueSize: 300, timestamp: now), leaderEpoch: 0, nowMs: now) }
        log.highWatermark = HighWatermark(log.logEndOffset)
        let before = log.segmentCount
        let deleted = try log.deleteOldSegments(nowMs: now)
        #expect(!deleted.isEmpty)
        #expect(log.segmentCount < before)
        #expect(log.sizeInBytes <= 12 * 1024 + 4 * 1024)
        #expect(log.logStartOffset > 0)
        #expect(try log.offset(forTimestamp: LocalLog.earliestTimestamp)?.offset == log.logStartOffset)
        for path in deleted { #expect(path.string.hasSuffix(".deleted")) }

        let (start, _) = try log.deleteRecords(before: 70)
        #expect(start == 70)
        #expect(try readAll(log, from: 70).first?.offset == 70)
        #expect(throws: StorageError.self) { _ = try log.read(from: 10, maxBytes: 100, upperBound: .highWatermark, minOneMessage: true) }

        var timeConfig = config
        timeConfig.retentionBytes = -1
        timeConfig.retentionMs = 1000
        try log.updateConfig(timeConfig)
        _ = try log.deleteOldSegments(nowMs: now + 10_000)
        #expect(log.segmentCount == 1, "all closed segments are older than retention.ms")
    }

    @Test("ListOffsets by timestamp, earliest, latest and max timestamp")
    func offsetsByTime() throws {
        let dir = TemporaryDirectory()
        var config = LogConfig()
        config.indexIntervalBytes = 256
        let (log, _) = try openLog(dir, config: config)
        for i in 0..<100 {
            _ = try log.append(makeBatch(count: 2, valueSize: 100, timestamp: now + Int64(i) * 1000), leaderEpoch: 0, nowMs: now)
        }
        #expect(try log.offset(forTimestamp: now + 50_000)?.offset == 100)
        // The record, not its batch: batch 50 holds timestamps now+50_000 (offset 100) and now+50_001 (101).
        #expect(try log.offset(forTimestamp: now + 50_001)?.offset == 101)
        #expect(try log.offset(forTimestamp: now + 50_002)?.offset == 102)
        #expect(try log.offset(forTimestamp: now - 5)?.offset == 0)
        #expect(try log.offset(forTimestamp: now + 1_000_000) == nil)
        #expect(try log.offset(forTimestamp: LocalLog.latestTimestamp)?.offset == 200)
        let max = try #require(try log.offset(forTimestamp: LocalLog.maxTimestamp))
        #expect(max.offset == 199, "the record holding the max timestamp (KAFKA-16310), not its batch's first")
        #expect(max.timestamp == now + 99_001)
    }

    @Test("idempotent producers: duplicates answered with the original offsets, gaps and old epochs refused")
    func idempotence() throws {
        let dir = TemporaryDirectory()
        let (log, _) = try openLog(dir)
        let first = makeBatch(count: 5, producerID: 77, epoch: 0, sequence: 0)
        let a = try log.append(first, leaderEpoch: 0, nowMs: now)
        let b = try log.append(makeBatch(count: 5, producerID: 77, epoch: 0, sequence: 5), leaderEpoch: 0, nowMs: now)
        #expect((a.firstOffset, b.firstOffset) == (0, 5))
        let retry = try log.append(first, leaderEpoch: 0, nowMs: now)
        #expect(retry.isDuplicate)
        #expect((retry.firstOffset, retry.lastOffset) == (0, 4))
        #expect(log.logEndOffset == 10)
        #expect(throws: StorageError.outOfOrderSequence(producerID: 77, epoch: 0, sequence: 20, expected: 10)) {
            _ = try log.append(makeBatch(count: 1, producerID: 77, epoch: 0, sequence: 20), leaderEpoch: 0, nowMs: now)
        }
        // A new epoch restarts at 0; the old epoch is then fenced.
        _ = try log.append(makeBatch(count: 1, producerID: 77, epoch: 1, sequence: 0), leaderEpoch: 0, nowMs: now)
        #expect(throws: StorageError.invalidProducerEpoch(producerID: 77, epoch: 0, current: 1)) {
            _ = try log.append(makeBatch(count: 1, producerID: 77, epoch: 0, sequence: 10), leaderEpoch: 0, nowMs: now)
        }
        // Producer state survives a clean restart (snapshot) and an unclean one (rebuilt from the log).
        try log.close(nowMs: now)
        for clean in [true, false] {
            let (reopened, _) = try openLog(dir, clean: clean)
            let again = try reopened.append(makeBatch(count: 1, producerID: 77, epoch: 1, sequence: 0), leaderEpoch: 0, nowMs: now)
            #expect(again.isDuplicate)
            #expect(throws: StorageError.self) {
                _ = try reopened.append(makeBatch(count: 1, producerID: 77, epoch: 1, sequence: 5), leaderEpoch: 0, nowMs: now)
            }
            try reopened.close(nowMs: now)
        }
    }

    @Test("bad batches are refused without touching the log")
    func refusals() throws {
        let dir = TemporaryDirectory()
        var config = LogConfig()
        config.maxMessageBytes = 2000
        let (log, _) = try openLog(dir, config: config)
        var corrupt = makeBatch(count: 3)
        corrupt.setInteger(UInt8(0xEE), at: corrupt.writerIndex - 3)
        #expect(throws: StorageError.self) { _ = try log.append(corrupt, leaderEpoch: 0, nowMs: now) }
        let big = makeBatch(count: 30, valueSize: 100)
        #expect(throws: StorageError.recordTooLarge(size: big.readableBytes, limit: 2000)) {
            _ = try log.append(big, leaderEpoch: 0, nowMs: now)
        }
        var partial = makeBatch(count: 2)
        partial.moveWriterIndex(to: partial.writerIndex - 5)
        #expect(throws: StorageError.self) { _ = try log.append(partial, leaderEpoch: 0, nowMs: now) }
        var compacted = LogConfig()
        compacted.compactEnabled = true
        try log.updateConfig(compacted)
        #expect(throws: StorageError.self) {
            _ = try log.append(makeBatch(count: 2, keys: ["a", nil]), leaderEpoch: 0, nowMs: now)
        }
        #expect(log.logEndOffset == 0)
    }

    @Test("LogAppendTime topics stamp the broker's time")
    func logAppendTime() throws {
        let dir = TemporaryDirectory()
        var config = LogConfig()
        config.logAppendTime = true
        let (log, _) = try openLog(dir, config: config)
        let info = try log.append(makeBatch(count: 3, timestamp: 5), leaderEpoch: 0, nowMs: now)
        #expect(info.logAppendTime == now)
        let records = try readAll(log)
        #expect(records.allSatisfy { $0.timestamp == now })
    }

    @Test("group commit: concurrent waiters share fsyncs")
    func groupCommit() async throws {
        let dir = TemporaryDirectory()
        let (log, _) = try openLog(dir)
        let queue = DispatchQueue(label: "flush")
        let runner: @Sendable (@escaping @Sendable () -> Void) -> Void = { work in queue.async(execute: work) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<50 {
                let info = try log.append(makeBatch(count: 1), leaderEpoch: 0, nowMs: now)
                group.addTask { try await log.flushed(through: info.lastOffset + 1, runFlush: runner) }
            }
            try await group.waitForAll()
        }
        #expect(log.recoveryPoint == 50)
    }
}
