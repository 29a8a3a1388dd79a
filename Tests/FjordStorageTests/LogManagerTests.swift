import FjordProtocol
@testable import FjordStorage
import Foundation
import NIOCore
import SystemPackage
import Testing

@Suite("LogManager")
struct LogManagerTests {
    let now: Int64 = 1_700_000_000_000

    @Test("clean shutdown writes checkpoints and the marker; restart trusts them; a crash is seen as unclean")
    func lifecycle() throws {
        let dir = TemporaryDirectory()
        let topicID = KafkaUUID.random()
        do {
            let (manager, loaded) = try LogManager.open(directory: dir.path, nowMs: now) { _ in LogConfig() }
            #expect(loaded.isEmpty)
            for partition in 0..<3 {
                let log = try manager.getOrCreateLog(TopicPartition(topic: "orders", partition: Int32(partition)),
                                                     topicID: topicID, config: LogConfig(), nowMs: now)
                for _ in 0..<10 { _ = try log.append(makeBatch(count: 5), leaderEpoch: 0, nowMs: now) }
            }
            try manager.shutdown(nowMs: now)
        }
        #expect(LogManager.wasCleanlyShutDown(dir.path))
        let recovery = try String(contentsOf: dir.file("recovery-point-offset-checkpoint"), encoding: .utf8)
        #expect(recovery.contains("orders 1 50"))
        let metadata = try String(contentsOf: dir.file("orders-2/partition.metadata"), encoding: .utf8)
        #expect(metadata == "version: 0\ntopic_id: \(topicID)\n")
        do {
            let (manager, loaded) = try LogManager.open(directory: dir.path, nowMs: now) { _ in LogConfig() }
            #expect(!LogManager.wasCleanlyShutDown(dir.path), "the marker is removed while running")
            #expect(loaded.map(\.topicPartition.partition) == [0, 1, 2])
            #expect(loaded.allSatisfy { $0.topicID == topicID && $0.report.truncatedBytes == 0 })
            let log = try #require(manager.log(for: TopicPartition(topic: "orders", partition: 1)))
            #expect(log.logEndOffset == 50)
            _ = try log.append(makeBatch(count: 5), leaderEpoch: 1, nowMs: now)
            // No shutdown: the next open is unclean and recovers past the recovery point.
        }
        let (manager, loaded) = try LogManager.open(directory: dir.path, nowMs: now) { _ in LogConfig() }
        #expect(loaded.first { $0.topicPartition.partition == 1 }?.report.recoveredSegments == 1)
        #expect(manager.log(for: TopicPartition(topic: "orders", partition: 1))?.logEndOffset == 55)
    }

    @Test("idempotent producers silent for producer.id.expiration.ms are forgotten; extreme timestamps do not trap")
    func producerExpiry() throws {
        let dir = TemporaryDirectory()
        let day: Int64 = 86_400_000
        let (manager, _) = try LogManager.open(directory: dir.path, nowMs: now, producerIDExpirationMs: day) { _ in LogConfig() }
        let log = try manager.getOrCreateLog(TopicPartition(topic: "p", partition: 0), topicID: .random(), config: LogConfig(), nowMs: now)
        _ = try log.append(makeBatch(count: 2, timestamp: now - 2 * day, producerID: 7, epoch: 0, sequence: 0), leaderEpoch: 0, nowMs: now)
        _ = try log.append(makeBatch(count: 2, timestamp: now, producerID: 8, epoch: 0, sequence: 0), leaderEpoch: 0, nowMs: now)
        _ = try log.append(makeBatch(count: 1, timestamp: Int64.min, producerID: 9, epoch: 0, sequence: 0), leaderEpoch: 0, nowMs: now)
        _ = try log.append(makeBatch(count: 1, timestamp: Int64.max, producerID: 10, epoch: 0, sequence: 0), leaderEpoch: 0, nowMs: now)
        #expect(log.producers.map(\.producerID) == [7, 8, 9, 10])
        manager.runMaintenance(nowMs: now)
        #expect(log.producers.map(\.producerID) == [8, 10], "two days silent and Int64.min are past a day; the future is not")
        manager.runMaintenance(nowMs: now + 2 * day)
        #expect(log.producers.map(\.producerID) == [10])
        try manager.shutdown(nowMs: now + 2 * day)
    }

    @Test("deleted partitions and segments are removed after file.delete.delay.ms")
    func delayedDeletes() throws {
        let dir = TemporaryDirectory()
        var config = LogConfig()
        config.segmentBytes = 2048
        config.retentionBytes = 0
        config.fileDeleteDelayMs = 1000
        let (manager, _) = try LogManager.open(directory: dir.path, nowMs: now) { _ in config }
        let tp = TopicPartition(topic: "t", partition: 0)
        let log = try manager.getOrCreateLog(tp, topicID: .random(), config: config, nowMs: now)
        for _ in 0..<20 { _ = try log.append(makeBatch(count: 3, valueSize: 200), leaderEpoch: 0, nowMs: now) }
        log.highWatermark = HighWatermark(log.logEndOffset)
        let report = manager.runMaintenance(nowMs: now)
        #expect(report.errors.isEmpty)
        #expect(!report.deletedSegments.isEmpty)
        var names = try FileManager.default.contentsOfDirectory(atPath: dir.file("t-0").path)
        #expect(names.contains { $0.hasSuffix(".log.deleted") })
        manager.runMaintenance(nowMs: now + 2000)
        names = try FileManager.default.contentsOfDirectory(atPath: dir.file("t-0").path)
        #expect(!names.contains { $0.hasSuffix(".deleted") })

        try manager.deleteLog(tp, nowMs: now)
        #expect(manager.log(for: tp) == nil)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.url.path).contains { $0.hasSuffix("-delete") })
        manager.runMaintenance(nowMs: now + 5000)
        #expect(!(try FileManager.default.contentsOfDirectory(atPath: dir.url.path).contains { $0.hasSuffix("-delete") }))
    }
}
