@testable import FjordBroker
import FjordProtocol
import FjordStorage
import Foundation
import Logging
import NIOCore
import SystemPackage
import Testing

@Suite("__consumer_offsets replay")
struct CoordinatorLoaderTests {
    /// A `__consumer_offsets-0` log in a fresh directory, removed afterwards.
    final class GroupLog {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("fjord-groups-\(UUID().uuidString)")
        let log: LocalLog

        init() throws {
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            (log, _) = try LocalLog.open(directory: FilePath(url.path), topicPartition: TopicPartition(topic: "__consumer_offsets", partition: 0),
                                         config: LogConfig(), recoveryPoint: 0, logStartOffset: 0, cleanShutdown: true, nowMs: 0)
        }

        deinit { try? FileManager.default.removeItem(at: url) }

        /// Appends one batch holding `records`, and commits it (high watermark = log end).
        func append(_ records: [(key: ByteBuffer, value: ByteBuffer?)]) throws {
            var builder = RecordBatchBuilder()
            for record in records { builder.append(timestamp: 1, key: record.key, value: record.value) }
            _ = try log.append(try builder.build().bytes, leaderEpoch: 0, nowMs: 1)
            log.highWatermark = HighWatermark(log.logEndOffset)
        }
    }

    static func commit(_ group: String, _ tp: TopicPartition, _ offset: Int64) throws -> (key: ByteBuffer, value: ByteBuffer?) {
        var value = OffsetCommitValue()
        value.offset = offset
        value.commitTimestamp = 1
        return (try CoordinatorRecordSerde.offsetCommitKey(group: group, partition: tp), try CoordinatorRecordSerde.offsetCommitValue(value))
    }

    /// A value whose bytes were flipped: its version no longer exists, so it cannot decode.
    static func damaged(_ record: (key: ByteBuffer, value: ByteBuffer?)) -> (key: ByteBuffer, value: ByteBuffer?) {
        let bytes = record.value.map { Array($0.readableBytesView) } ?? []
        return (record.key, ByteBuffer(bytes: bytes.map { $0 ^ 0xFF }))
    }

    func replay(_ groupLog: GroupLog) -> ([String: Int64], [String: Int32], CoordinatorLoader.Summary) {
        var offsets: [String: Int64] = [:]
        var groups: [String: Int32] = [:]
        let summary = CoordinatorLoader(logger: Logger(label: "test")).load(groupLog.log) { record in
            switch record {
            case .offsetCommit(let group, let tp, let value): offsets["\(group)/\(tp)"] = value?.offset ?? -1  // -1: deleted
            case .groupMetadata(let group, let value): groups[group] = value?.generation
            case .consumerGroup: break
            }
        }
        return (offsets, groups, summary)
    }

    @Test("a value that does not decode is skipped: the commit before it stands, the ones after it load")
    func undecodableValueIsNotATombstone() throws {
        let groupLog = try GroupLog()
        let t0 = TopicPartition(topic: "t", partition: 0)
        let t1 = TopicPartition(topic: "t", partition: 1)
        try groupLog.append([try Self.commit("g", t0, 5), try Self.commit("g", t1, 9)])
        try groupLog.append([Self.damaged(try Self.commit("g", t0, 7))])
        var generation = GroupMetadataValue()
        generation.generation = 4
        generation.protocolType = "consumer"
        try groupLog.append([(try CoordinatorRecordSerde.groupMetadataKey(group: "g"), try CoordinatorRecordSerde.groupMetadataValue(generation, group: "g"))])
        try groupLog.append([Self.damaged((try CoordinatorRecordSerde.groupMetadataKey(group: "g"), try CoordinatorRecordSerde.groupMetadataValue(generation, group: "g")))])
        try groupLog.append([try Self.commit("h", t0, 11)])

        let (offsets, groups, summary) = replay(groupLog)
        #expect(offsets == ["g/t-0": 5, "g/t-1": 9, "h/t-0": 11])
        #expect(groups == ["g": 4])
        #expect(summary.skippedRecords == 2)
        #expect(summary.records == 4)
        #expect(summary.completed)
    }

    @Test("a tombstone still deletes")
    func tombstoneDeletes() throws {
        let groupLog = try GroupLog()
        let t0 = TopicPartition(topic: "t", partition: 0)
        try groupLog.append([try Self.commit("g", t0, 5)])
        try groupLog.append([(try CoordinatorRecordSerde.offsetCommitKey(group: "g", partition: t0), nil)])
        let (offsets, _, summary) = replay(groupLog)
        #expect(offsets == ["g/t-0": -1])
        #expect(summary.skippedRecords == 0)
    }

    @Test("an unknown key version is skipped, not fatal")
    func unknownKeyVersion() throws {
        let groupLog = try GroupLog()
        var key = ByteBuffer()
        key.writeInteger(Int16(99), endianness: .big)
        key.writeString("future")
        try groupLog.append([(key, ByteBuffer(string: "x")), try Self.commit("g", TopicPartition(topic: "t", partition: 0), 3)])
        let (offsets, _, summary) = replay(groupLog)
        #expect(offsets == ["g/t-0": 3])
        #expect(summary.skippedRecords == 1)
    }

    @Test("encoders round-trip through the decoder")
    func roundTrip() throws {
        let tp = TopicPartition(topic: "orders", partition: 7)
        let record = try Self.commit("billing", tp, 42)
        guard case .offsetCommit(let group, let partition, let value) = try CoordinatorRecordSerde.decode(key: record.key, value: record.value) else {
            Issue.record("not an offset commit")
            return
        }
        #expect(group == "billing")
        #expect(partition == tp)
        #expect(value?.offset == 42)
    }
}
