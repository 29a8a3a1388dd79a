import FjordProtocol
@testable import FjordStorage
import Foundation
import NIOCore
import SystemPackage
import Testing

@Suite("Stream versioning (fjord.stream.versioning)")
struct StreamIndexTests {
    let now: Int64 = 1_700_000_000_000

    var streamConfig: LogConfig {
        var config = LogConfig()
        config.streamVersioning = true
        return config
    }

    /// One batch of events: (stream, expected version header or nil).
    func events(_ entries: [(String, String?)]) -> ByteBuffer {
        var builder = RecordBatchBuilder()
        for (index, (stream, expected)) in entries.enumerated() {
            let headers = expected.map { [RecordHeader(key: StreamIndex.expectedVersionHeader, value: ByteBuffer(string: $0))] } ?? []
            builder.append(timestamp: now + Int64(index), key: ByteBuffer(string: stream), value: ByteBuffer(string: "e\(index)"), headers: headers)
        }
        return try! builder.build().bytes
    }

    func version(_ log: LocalLog, _ stream: String) -> Int64? {
        log.streamVersion(key: Array(stream.utf8))
    }

    @Test("expected versions: no-stream, exact, exists, any; a refused batch appends nothing")
    func expectations() throws {
        let dir = TemporaryDirectory()
        let (log, _) = try openLog(dir, config: streamConfig)
        #expect(version(log, "a") == -1)
        _ = try log.append(events([("a", "no-stream"), ("a", "0"), ("b", "any")]), leaderEpoch: 0, nowMs: now)
        #expect(version(log, "a") == 1 && version(log, "b") == 0)
        _ = try log.append(events([("a", "1"), ("b", "exists"), ("c", nil)]), leaderEpoch: 0, nowMs: now)
        #expect(version(log, "a") == 2 && version(log, "b") == 1 && version(log, "c") == 0)

        // The second record's expectation fails: the whole batch is refused, nothing is written.
        let end = log.logEndOffset
        #expect(throws: StorageError.wrongExpectedVersion([StreamVersionConflict(recordIndex: 1, stream: "a", expected: "1", actual: 2)])) {
            _ = try log.append(events([("d", "no-stream"), ("a", "1")]), leaderEpoch: 0, nowMs: now)
        }
        #expect(log.logEndOffset == end && version(log, "d") == -1)
        #expect(throws: StorageError.wrongExpectedVersion([StreamVersionConflict(recordIndex: 0, stream: "c", expected: "no-stream", actual: 0)])) {
            _ = try log.append(events([("c", "no-stream")]), leaderEpoch: 0, nowMs: now)
        }
        #expect(throws: StorageError.wrongExpectedVersion([StreamVersionConflict(recordIndex: 0, stream: "z", expected: "exists", actual: -1)])) {
            _ = try log.append(events([("z", "exists")]), leaderEpoch: 0, nowMs: now)
        }
        // Every refused record is reported; a refused record does not count for those after it.
        #expect(throws: StorageError.wrongExpectedVersion([
            StreamVersionConflict(recordIndex: 0, stream: "a", expected: "0", actual: 2),
            StreamVersionConflict(recordIndex: 2, stream: "a", expected: "1", actual: 2),
        ])) {
            _ = try log.append(events([("a", "0"), ("b", "1"), ("a", "1"), ("a", "2")]), leaderEpoch: 0, nowMs: now)
        }
        #expect(log.logEndOffset == end && version(log, "b") == 1)
        #expect(throws: StorageError.self) { _ = try log.append(events([("a", "soon")]), leaderEpoch: 0, nowMs: now) }
        var keyless = RecordBatchBuilder()
        keyless.append(timestamp: now, key: nil, value: ByteBuffer(string: "x"))
        #expect(throws: StorageError.self) { _ = try log.append(try keyless.build().bytes, leaderEpoch: 0, nowMs: now) }
        #expect(log.logEndOffset == end)

        // Events of a stream, forwards and backwards.
        let forward = try #require(log.streamEvents(key: Array("a".utf8), from: 0, limit: 10, forwards: true))
        #expect(forward.version == 2 && forward.events.map(\.revision) == [0, 1, 2] && forward.events.map(\.offset) == [0, 1, 3])
        let backward = try #require(log.streamEvents(key: Array("a".utf8), from: 5, limit: 2, forwards: false))
        #expect(backward.events.map(\.offset) == [3, 1])
        // Revisions by offset (FjordStreamRevisions): a's events are at 0, 1 and 3.
        let a = Array("a".utf8)
        let lookups: [(key: [UInt8], offset: Int64)] = [(a, 3), (a, 0), (a, 2), (Array("b".utf8), 2), (Array("nobody".utf8), 0)]
        let revisions = try #require(log.streamRevisions(lookups))
        #expect(revisions == [2, 0, nil, 0, nil])
        try log.close(nowMs: now)
    }

    @Test("versions survive a clean restart, a crash after a roll, a damaged checkpoint and truncation")
    func persistence() throws {
        let dir = TemporaryDirectory()
        var config = streamConfig
        config.segmentBytes = 4096  // rolls often: each roll writes the checkpoint
        var (log, _) = try openLog(dir, config: config)
        for round in 0..<60 {
            _ = try log.append(events([("s\(round % 7)", nil), ("t", String(round - 1 < 0 ? "no-stream" : "\(round - 1)"))]),
                               leaderEpoch: 0, nowMs: now)
        }
        #expect(version(log, "t") == 59)
        try log.close(nowMs: now)
        (log, _) = try openLog(dir, config: config)
        #expect(version(log, "t") == 59 && version(log, "s3") == 8)
        _ = try log.append(events([("t", "59")]), leaderEpoch: 0, nowMs: now)

        // A crash: the log is reopened without close (the checkpoint is the last roll's).
        let (crashed, report) = try openLog(dir, config: config, clean: false)
        #expect(version(crashed, "t") == 60, "checkpoint plus the scanned tail")
        #expect(report.problems.contains { $0.contains("stream index: scanned") })

        // A damaged checkpoint: the whole log is scanned instead.
        let checkpoint = dir.path.appending(TopicPartition(topic: "t", partition: 0).directoryName).appending("streams.checkpoint")
        let text = try #require(FileManager.default.contents(atPath: checkpoint.string))
        var damaged = text
        damaged[damaged.count / 2] ^= 0xFF
        _ = FileManager.default.createFile(atPath: checkpoint.string, contents: damaged)
        let (rescanned, _) = try openLog(dir, config: config, clean: false)
        #expect(version(rescanned, "t") == 60 && version(rescanned, "s6") == 7)

        // Truncation forgets the events above the new end.
        try rescanned.truncate(to: 10)
        #expect(version(rescanned, "t") == 4, "offsets 1, 3, 5, 7, 9 are t's first five events")
        _ = try rescanned.append(events([("t", "4")]), leaderEpoch: 0, nowMs: now)
        #expect(version(rescanned, "t") == 5)
        try rescanned.close(nowMs: now)
    }

    @Test("turning versioning on indexes the existing records; stream topics refuse compaction")
    func configChanges() throws {
        let dir = TemporaryDirectory()
        let (log, _) = try openLog(dir)
        _ = try log.append(events([("a", nil), ("a", nil), ("b", nil)]), leaderEpoch: 0, nowMs: now)
        #expect(version(log, "a") == nil, "not a stream topic")
        try log.updateConfig(streamConfig)
        #expect(version(log, "a") == 1 && version(log, "b") == 0)
        var bad = LogConfig()
        #expect(throws: StorageError.self) { try bad.apply(["fjord.stream.versioning": "true", "cleanup.policy": "compact"]) }
        try log.close(nowMs: now)
    }
}
