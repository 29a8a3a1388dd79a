import FjordProtocol
@testable import FjordStorage
import Foundation
import SystemPackage
import Testing

@Suite("Indexes, epochs and checkpoints")
struct IndexAndCheckpointTests {
    @Test("OffsetIndex: lookup is the greatest entry at or below, truncation and trimming keep it consistent")
    func offsetIndex() throws {
        let dir = TemporaryDirectory()
        let path = dir.path.appending("00000000000000001000.index")
        let index = try OffsetIndex(path: path, baseOffset: 1000, maxIndexSize: 8 * 100, preallocate: true)
        #expect(index.lookup(1500) == (1000, 0), "empty index: segment start")
        for i in 1...50 { index.append(offset: 1000 + Int64(i * 10), position: Int64(i * 4096)) }
        index.append(offset: 1200, position: 1)  // out of order: ignored
        #expect(index.entries == 50)
        #expect(index.lookup(1005) == (1000, 0))
        #expect(index.lookup(1010) == (1010, 4096))
        #expect(index.lookup(1019) == (1010, 4096))
        #expect(index.lookup(9999) == (1500, 50 * 4096))
        index.truncate(toOffset: 1250)
        #expect(index.entries == 24)
        #expect(index.lookup(9999) == (1240, 24 * 4096))
        try index.trimToValidSize()
        index.close()
        #expect(try FileManager.default.attributesOfItem(atPath: path.string)[.size] as? Int == 24 * 8)
        let reopened = try OffsetIndex(path: path, baseOffset: 1000, maxIndexSize: 800, preallocate: false)
        #expect(reopened.entries == 24)
        #expect(reopened.isSane(logSize: 1 << 20))
        #expect(!reopened.isSane(logSize: 4096), "positions past the log are insane")
        #expect(reopened.isFull, "a reopened index is trimmed: full until it becomes active again")
        try reopened.resize(toBytes: 800)
        reopened.append(offset: 2000, position: 200_000)
        #expect(reopened.entries == 25)
    }

    @Test("TimeIndex: only increasing timestamps are indexed; lookups find the floor entry")
    func timeIndex() throws {
        let dir = TemporaryDirectory()
        let index = try TimeIndex(path: dir.path.appending("0.timeindex"), baseOffset: 0, maxIndexSize: 12 * 10, preallocate: true)
        index.maybeAppend(timestamp: 100, offset: 5)
        index.maybeAppend(timestamp: 90, offset: 6)  // older timestamp: ignored
        index.maybeAppend(timestamp: 200, offset: 9)
        #expect(index.entries == 2)
        #expect(index.lookup(50) == (-1, 0))
        #expect(index.lookup(150) == (100, 5))
        #expect(index.lookup(250) == (200, 9))
        #expect(index.isSane(nextOffset: 10))
        #expect(!index.isSane(nextOffset: 9))
    }

    @Test("LeaderEpochFileCache answers OffsetForLeaderEpoch and persists")
    func epochs() throws {
        let dir = TemporaryDirectory()
        let path = dir.path.appending("leader-epoch-checkpoint")
        let cache = try LeaderEpochFileCache(path: path)
        #expect(cache.assign(epoch: 0, startOffset: 0))
        #expect(!cache.assign(epoch: 0, startOffset: 5))
        #expect(cache.assign(epoch: 2, startOffset: 10))
        #expect(cache.assign(epoch: 5, startOffset: 30))
        #expect(cache.endOffset(for: 0, logEndOffset: 50) == (0, 10))
        #expect(cache.endOffset(for: 1, logEndOffset: 50) == (0, 10), "an unknown epoch between known ones answers the floor")
        #expect(cache.endOffset(for: 5, logEndOffset: 50) == (5, 50))
        #expect(cache.endOffset(for: 6, logEndOffset: 50) == (-1, -1))
        try cache.flush()
        #expect(try String(contentsOfFile: path.string, encoding: .utf8) == "0\n3\n0 0\n2 10\n5 30\n")
        cache.truncateFromEnd(20)
        cache.truncateFromStart(12)
        #expect(cache.entries.map(\.startOffset) == [12])
        let reloaded = try LeaderEpochFileCache(path: path)
        #expect(reloaded.entries.count == 3)
    }

    @Test("checkpoint files: round trip, and a damaged file is reported, not trusted")
    func checkpoints() throws {
        let dir = TemporaryDirectory()
        let path = dir.path.appending("recovery-point-offset-checkpoint")
        try CheckpointFile.writeAtomically(CheckpointFile.format(["orders 0 42", "my-topic-with-dashes 3 7"]), to: path)
        let parsed = try LogManager.readCheckpoint(path)
        #expect(parsed[TopicPartition(topic: "orders", partition: 0)] == 42)
        #expect(parsed[TopicPartition(topic: "my-topic-with-dashes", partition: 3)] == 7)
        try "0\n5\norders 0 1\n".write(toFile: path.string, atomically: false, encoding: .utf8)
        #expect(throws: StorageError.self) { _ = try LogManager.readCheckpoint(path) }
        #expect(TopicPartition(directoryName: "a-b-c-12") == TopicPartition(topic: "a-b-c", partition: 12))
        #expect(TopicPartition(directoryName: "nodash") == nil)
    }

    @Test("flush.messages forces an fsync and moves the recovery point")
    func flushMessages() throws {
        let dir = TemporaryDirectory()
        var config = LogConfig()
        config.flushMessages = 10
        let (log, _) = try openLog(dir, config: config)
        _ = try log.append(makeBatch(count: 5), leaderEpoch: 0, nowMs: 0)
        #expect(log.recoveryPoint == 0)
        _ = try log.append(makeBatch(count: 5), leaderEpoch: 0, nowMs: 0)
        #expect(log.recoveryPoint == 10)
    }

    @Test("LogConfig parses Kafka's topic config keys and refuses bad values")
    func logConfig() throws {
        var config = LogConfig()
        let unknown = try config.apply(["cleanup.policy": "compact,delete", "retention.ms": "-1", "segment.bytes": "1048576",
                                        "message.timestamp.type": "LogAppendTime", "some.unknown": "x"])
        #expect(unknown == ["some.unknown"])
        #expect(config.compactEnabled && config.deleteEnabled)
        #expect(config.retentionMs == -1)
        #expect(config.segmentBytes == 1_048_576)
        #expect(config.logAppendTime)
        #expect(throws: StorageError.self) { try config.apply(["retention.ms": "soon"]) }
        #expect(throws: StorageError.self) { try config.apply(["cleanup.policy": "archive"]) }
    }
}
