@testable import FjordBroker
import FjordMetadata
import FjordProtocol
import FjordStorage
import Foundation
import NIOCore
import SystemPackage
import Testing

/// The leader's replication state (`Partition`) and the follower's batch selection
/// (`ReplicaFetcher.batches`) on real logs in a temporary directory.
@Suite("Replication state")
struct PartitionReplicationTests {
    let now: Int64 = 1_700_000_000_000

    /// A log manager in a fresh directory and a cluster partition led by broker 1 with
    /// followers 2 and 3, all in the ISR, at leader epoch 5.
    func makeLeader(_ directory: URL) throws -> Partition {
        let (manager, _) = try LogManager.open(directory: FilePath(directory.path), nowMs: now) { _ in LogConfig() }
        let tp = TopicPartition(topic: "t", partition: 0)
        let log = try manager.getOrCreateLog(tp, topicID: .random(), config: LogConfig(), nowMs: now)
        let partition = Partition(topicPartition: tp, topicID: .random(), log: log, localID: 1)
        let change = try partition.apply(PartitionRegistration(replicas: [1, 2, 3], isr: [1, 2, 3], leader: 1, leaderEpoch: 5, partitionEpoch: 1),
                                         nowMs: now)
        #expect(change == .role && partition.isLeader && partition.leaderEpoch == LeaderEpoch(5))
        return partition
    }

    func batch(_ count: Int, baseOffset: Int64 = 0) throws -> ByteBuffer {
        var builder = RecordBatchBuilder(baseOffset: baseOffset)
        for i in 0..<count { builder.append(timestamp: now, key: nil, value: ByteBuffer(string: "v\(i)")) }
        return try builder.build().bytes
    }

    func temporaryDirectory() -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("fjord-partition-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    @Test("the high watermark is the smallest log end over the ISR and never moves back")
    func highWatermark() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let partition = try makeLeader(directory)
        _ = try partition.log.append(try batch(10), leaderEpoch: partition.leaderEpoch, origin: .client, nowMs: now)
        #expect(!partition.maybeIncrementHighWatermark(), "followers have not fetched: nothing is committed")
        #expect(partition.log.highWatermark.offset.rawValue == 0)

        let first = try #require(partition.followerFetched(replicaID: 2, fetchOffset: 10, nowMs: now))
        #expect(!first.highWatermarkMoved, "follower 3 lacks the records")
        let second = try #require(partition.followerFetched(replicaID: 3, fetchOffset: 4, nowMs: now))
        #expect(second.highWatermarkMoved && partition.log.highWatermark.offset.rawValue == 4)
        _ = partition.followerFetched(replicaID: 3, fetchOffset: 10, nowMs: now)
        #expect(partition.log.highWatermark.offset.rawValue == 10)
        // A follower that truncated and fetches from lower down does not move the HW back.
        _ = partition.followerFetched(replicaID: 2, fetchOffset: 3, nowMs: now)
        #expect(partition.log.highWatermark.offset.rawValue == 10)
        #expect(partition.followerFetched(replicaID: 9, fetchOffset: 10, nowMs: now) == nil, "not a replica")
    }

    @Test("a follower that stops catching up leaves the ISR; one that reaches the HW in this epoch is proposed back")
    func shrinkAndExpand() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let partition = try makeLeader(directory)
        _ = try partition.log.append(try batch(10), leaderEpoch: partition.leaderEpoch, origin: .client, nowMs: now)
        _ = partition.followerFetched(replicaID: 2, fetchOffset: 10, nowMs: now + 1000)
        _ = partition.followerFetched(replicaID: 3, fetchOffset: 0, nowMs: now + 1000)
        #expect(partition.shrinkOutOfSyncReplicas(nowMs: now + 5000, lagMaxMs: 10_000) == nil, "within the lag time")
        _ = partition.followerFetched(replicaID: 2, fetchOffset: 10, nowMs: now + 15_000)
        let (shrink, removed) = try #require(partition.shrinkOutOfSyncReplicas(nowMs: now + 20_000, lagMaxMs: 10_000))
        #expect(removed == [3] && shrink == Partition.ISRChange(isr: [1, 2], leaderEpoch: 5, partitionEpoch: 1))
        #expect(partition.shrinkOutOfSyncReplicas(nowMs: now + 20_000, lagMaxMs: 10_000) == nil, "one change in flight at a time")
        // While the shrink is in flight the HW is still computed over the old ISR (3 lags at 0).
        #expect(partition.log.highWatermark.offset.rawValue == 0)

        // The controller applied the shrink: the HW is now over {1, 2}.
        _ = try partition.apply(PartitionRegistration(replicas: [1, 2, 3], isr: [1, 2], leader: 1, leaderEpoch: 5, partitionEpoch: 2), nowMs: now)
        #expect(partition.log.highWatermark.offset.rawValue == 10)
        #expect(partition.inSyncReplicas == [1, 2])

        // 3 catches up to the HW: proposed for the ISR, at the current epochs.
        let partial = try #require(partition.followerFetched(replicaID: 3, fetchOffset: 5, nowMs: now + 21_000))
        #expect(partial.expansion == nil, "below the HW")
        // KIP-841: while 3 is not eligible (gone from the cluster, or shutting down) it is not proposed.
        let ineligible = try #require(partition.followerFetched(replicaID: 3, fetchOffset: 10, nowMs: now + 21_500, isrEligible: false))
        #expect(ineligible.expansion == nil, "an ineligible follower is not proposed")
        let caughtUp = try #require(partition.followerFetched(replicaID: 3, fetchOffset: 10, nowMs: now + 22_000))
        #expect(caughtUp.expansion == Partition.ISRChange(isr: [1, 2, 3], leaderEpoch: 5, partitionEpoch: 2))
        // Refused (say, a stale epoch): it may be proposed again.
        partition.isrChangeFinished(caughtUp.expansion!)
        #expect(partition.followerFetched(replicaID: 3, fetchOffset: 10, nowMs: now + 23_000)?.expansion != nil)
    }

    @Test("an older registration changes nothing; a new leader epoch makes the broker follow")
    func registrations() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let partition = try makeLeader(directory)
        #expect(try partition.apply(PartitionRegistration(replicas: [1, 2, 3], isr: [1, 2, 3], leader: 2, leaderEpoch: 4, partitionEpoch: 9),
                                    nowMs: now) == .none)
        #expect(partition.isLeader)
        #expect(try partition.apply(PartitionRegistration(replicas: [1, 2, 3], isr: [2, 3], leader: 2, leaderEpoch: 6, partitionEpoch: 3),
                                    nowMs: now) == .role)
        #expect(!partition.isLeader && partition.leaderID == 2)
        // A follower's appends run only at the epoch it follows.
        #expect(try partition.whileFollowing(epoch: LeaderEpoch(6)) {})
        #expect(try !partition.whileFollowing(epoch: LeaderEpoch(5)) {})
        #expect(partition.followerFetched(replicaID: 3, fetchOffset: 0, nowMs: now) == nil, "a follower tracks no followers")
    }

    @Test("a fetched record set yields its complete batches at or after the log end")
    func batchSelection() throws {
        var records = try batch(3, baseOffset: 0)       // 0…2
        var second = try batch(4, baseOffset: 3)        // 3…6
        var third = try batch(2, baseOffset: 7)         // 7…8
        let firstSize = records.readableBytes
        records.writeBuffer(&second)
        records.writeBuffer(&third)
        let all = records

        let (fromStart, cutAtStart) = try ReplicaFetcher.batches(in: all, after: 0)
        #expect(fromStart?.readableBytes == all.readableBytes && cutAtStart == nil)

        let (tail, cut) = try ReplicaFetcher.batches(in: all, after: 3)
        #expect(tail?.readableBytes == all.readableBytes - firstSize && cut == nil)
        var rest = try #require(tail)
        #expect(try RecordBatch.read(from: &rest)?.baseOffset == 3)

        // The log ends inside the second batch: the log is cut back to that batch's base first.
        let (straddling, cutBack) = try ReplicaFetcher.batches(in: all, after: 5)
        #expect(cutBack == 3)
        var straddled = try #require(straddling)
        #expect(try RecordBatch.read(from: &straddled)?.baseOffset == 3)

        // A partial last batch (cut by the response's byte limit) is left for the next fetch.
        let partial = all.getSlice(at: all.readerIndex, length: all.readableBytes - 5)!
        var complete = try #require(try ReplicaFetcher.batches(in: partial, after: 0).records)
        #expect(try RecordBatch.read(from: &complete)?.baseOffset == 0)
        #expect(try RecordBatch.read(from: &complete)?.baseOffset == 3)
        #expect(try RecordBatch.read(from: &complete) == nil)

        #expect(try ReplicaFetcher.batches(in: all, after: 9).records == nil, "nothing new")
    }
}
