@testable import FjordBroker
import FjordProtocol
import NIOCore
import Testing

/// The classic group protocol driven directly (no sockets), with a clock the test moves.
@Suite("GroupCoordinator (classic groups, manual clock)")
struct GroupCoordinatorTests {
    static func joinRequest(_ group: String, member: String = "", instance: String? = nil, sessionMs: Int32 = 1_000,
                            rebalanceMs: Int32 = 5_000) -> JoinGroupRequest {
        var request = JoinGroupRequest()
        request.groupId = group
        request.memberId = member
        request.groupInstanceId = instance
        request.sessionTimeoutMs = sessionMs
        request.rebalanceTimeoutMs = rebalanceMs
        request.protocolType = "consumer"
        var range = JoinGroupRequest.JoinGroupRequestProtocol()
        range.name = "range"
        range.metadata = ByteBuffer(string: "subscription")
        request.protocols = [range]
        return request
    }

    /// Joins as a new member: MEMBER_ID_REQUIRED (KIP-394), then the join with that id.
    static func join(_ coordinator: GroupCoordinator, _ group: String, instance: String? = nil, sessionMs: Int32 = 1_000,
                     rebalanceMs: Int32 = 5_000) async -> JoinGroupResponse {
        let first = await coordinator.join(joinRequest(group, instance: instance, sessionMs: sessionMs, rebalanceMs: rebalanceMs),
                                           version: 9, clientID: "test", clientHost: "/127.0.0.1")
        guard first.errorCode == KafkaError.memberIdRequired.code else { return first }
        return await coordinator.join(joinRequest(group, member: first.memberId, instance: instance, sessionMs: sessionMs, rebalanceMs: rebalanceMs),
                                      version: 9, clientID: "test", clientHost: "/127.0.0.1")
    }

    static func sync(_ coordinator: GroupCoordinator, _ group: String, _ joined: JoinGroupResponse, instance: String? = nil,
                     assignment: String? = nil) async -> SyncGroupResponse {
        var request = SyncGroupRequest()
        request.groupId = group
        request.generationId = joined.generationId
        request.memberId = joined.memberId
        request.groupInstanceId = instance
        if let assignment {
            var entry = SyncGroupRequest.SyncGroupRequestAssignment()
            entry.memberId = joined.memberId
            entry.assignment = ByteBuffer(string: assignment)
            request.assignments = [entry]
        }
        return await coordinator.sync(request)
    }

    static func heartbeat(_ coordinator: GroupCoordinator, _ group: String, _ joined: JoinGroupResponse) async -> KafkaError {
        var request = HeartbeatRequest()
        request.groupId = group
        request.generationId = joined.generationId
        request.memberId = joined.memberId
        return await coordinator.heartbeat(request)
    }

    @Test("join, sync and heartbeat: one member leads generation 1 and gets the assignment it sent")
    func joinSyncHeartbeat() async throws {
        try await withBrokerCore { core in
            let joined = await Self.join(core.coordinator, "g")
            #expect(joined.errorCode == 0)
            #expect(joined.generationId == 1)
            #expect(joined.leader == joined.memberId)
            #expect(joined.members.map(\.memberId) == [joined.memberId])
            let synced = await Self.sync(core.coordinator, "g", joined, assignment: "t-0,t-1")
            #expect(synced.errorCode == 0)
            #expect(String(buffer: synced.assignment) == "t-0,t-1")
            #expect(await Self.heartbeat(core.coordinator, "g", joined) == .noError)
            #expect(await core.coordinator.describe("g")?.state == "Stable")
        }
    }

    @Test("a member that stops heartbeating is removed once session.timeout.ms has passed on the clock")
    func sessionExpiry() async throws {
        try await withBrokerCore { core in
            let joined = await Self.join(core.coordinator, "g", sessionMs: 1_000)
            _ = await Self.sync(core.coordinator, "g", joined, assignment: "a")
            core.clock.advance(by: 900)
            await core.coordinator.expireSessions()
            #expect(await Self.heartbeat(core.coordinator, "g", joined) == .noError, "still within its session")
            core.clock.advance(by: 1_001)
            await core.coordinator.expireSessions()
            #expect(await Self.heartbeat(core.coordinator, "g", joined) == .unknownMemberId)
            #expect(await core.coordinator.describe("g")?.state == "Empty")
        }
    }

    @Test("a static member that rejoins a stable group gets a new member id and its assignment, without a rebalance")
    func staticRejoin() async throws {
        try await withBrokerCore { core in
            let joined = await Self.join(core.coordinator, "g", instance: "worker-1")
            #expect(joined.errorCode == 0)
            _ = await Self.sync(core.coordinator, "g", joined, instance: "worker-1", assignment: "t-3")
            // The process restarts: a join with no member id and the same instance id.
            let rejoined = await core.coordinator.join(Self.joinRequest("g", instance: "worker-1"), version: 9,
                                                       clientID: "test", clientHost: "/127.0.0.1")
            #expect(rejoined.errorCode == 0)
            #expect(rejoined.memberId != joined.memberId)
            #expect(rejoined.generationId == joined.generationId, "no rebalance")
            let synced = await Self.sync(core.coordinator, "g", rejoined, instance: "worker-1")
            #expect(String(buffer: synced.assignment) == "t-3")
            #expect(await Self.heartbeat(core.coordinator, "g", joined) != .noError, "the old member id is fenced")
        }
    }

    @Test("a rebalance completes without a member that does not rejoin within the rebalance timeout")
    func rebalanceTimeout() async throws {
        try await withBrokerCore { core in
            let first = await Self.join(core.coordinator, "g", sessionMs: 10_000, rebalanceMs: 300)
            _ = await Self.sync(core.coordinator, "g", first, assignment: "all")
            // A second member joins; the first never rejoins (its heartbeats would say REBALANCE_IN_PROGRESS).
            let second = await Self.join(core.coordinator, "g", sessionMs: 10_000, rebalanceMs: 300)
            #expect(second.errorCode == 0)
            #expect(second.generationId == 2)
            #expect(second.members.map(\.memberId) == [second.memberId], "the first member was removed")
            #expect(await Self.heartbeat(core.coordinator, "g", first) == .unknownMemberId)
        }
    }

    @Test("four members joining at once (kafka-python's classic loop) reach one stable generation in a few rounds")
    func fourMembersBecomeStable() async throws {
        // An initial delay as Kafka has one (3 s by default, shortened here): the joins that
        // arrive within it form the first generation together. Promptness is counted in rounds
        // (a member that has to rejoin costs a round trip and a rebalance), not in wall time,
        // which a loaded test machine stretches.
        try await withBrokerCore(["group.initial.rebalance.delay.ms": "300"]) { core in
            let coordinator = core.coordinator
            // Each member: join, sync (the leader assigns), then heartbeat; a heartbeat that says
            // REBALANCE_IN_PROGRESS sends it back to join, as kafka-python's coordinator does.
            let outcomes = await withTaskGroup(of: (generation: Int32, rounds: Int, assignment: String).self) { group in
                for index in 0..<4 {
                    group.addTask {
                        var memberID = ""
                        var rounds = 0
                        while rounds < 10 {
                            rounds += 1
                            var request = Self.joinRequest("four", member: memberID, sessionMs: 3_000, rebalanceMs: 5_000)
                            var joined = await coordinator.join(request, version: 9, clientID: "c\(index)", clientHost: "/127.0.0.1")
                            if joined.errorCode == KafkaError.memberIdRequired.code {
                                memberID = joined.memberId
                                request.memberId = memberID
                                joined = await coordinator.join(request, version: 9, clientID: "c\(index)", clientHost: "/127.0.0.1")
                            }
                            guard joined.errorCode == 0 else { continue }
                            memberID = joined.memberId
                            var sync = SyncGroupRequest()
                            sync.groupId = "four"
                            sync.generationId = joined.generationId
                            sync.memberId = joined.memberId
                            if joined.leader == joined.memberId {
                                sync.assignments = joined.members.map { member in
                                    var entry = SyncGroupRequest.SyncGroupRequestAssignment()
                                    entry.memberId = member.memberId
                                    entry.assignment = ByteBuffer(string: "gen-\(joined.generationId)")
                                    return entry
                                }
                            }
                            let synced = await coordinator.sync(sync)
                            guard synced.errorCode == 0 else { continue }
                            // Three heartbeats 100 ms apart (real time: the coordinator's timers
                            // are real; the manual clock only stands still, so no session expires).
                            var stable = true
                            for _ in 0..<3 {
                                try? await Task.sleep(for: .milliseconds(100))
                                if await Self.heartbeat(coordinator, "four", joined) != .noError { stable = false; break }
                            }
                            if stable { return (joined.generationId, rounds, String(buffer: synced.assignment)) }
                        }
                        return (-1, rounds, "")
                    }
                }
                var all: [(generation: Int32, rounds: Int, assignment: String)] = []
                for await outcome in group { all.append(outcome) }
                return all
            }
            #expect(Set(outcomes.map(\.generation)).count == 1 && outcomes[0].generation > 0, "one generation: \(outcomes)")
            #expect(outcomes.allSatisfy { $0.assignment == "gen-\(outcomes[0].generation)" }, "everyone got the leader's assignment")
            #expect(outcomes.allSatisfy { $0.rounds <= 2 }, "a member rejoins at most once: \(outcomes)")
            #expect(await coordinator.describe("four")?.state == "Stable")
        }
    }

    // MARK: Offset retention

    static func commitOutsideGroup(_ core: BrokerCore, _ group: String, offset: Int64, version: Int16,
                                   retentionTimeMs: Int64 = -1) async -> Int16? {
        var request = OffsetCommitRequest()
        request.groupId = group
        request.generationIdOrMemberEpoch = -1
        request.retentionTimeMs = retentionTimeMs
        var topic = OffsetCommitRequest.OffsetCommitRequestTopic()
        topic.name = "t"
        var partition = OffsetCommitRequest.OffsetCommitRequestPartition()
        partition.partitionIndex = 0
        partition.committedOffset = offset
        topic.partitions = [partition]
        request.topics = [topic]
        return await core.apis.handleOffsetCommit(request, version: version).topics.first?.partitions.first?.errorCode
    }

    static func committed(_ core: BrokerCore, _ group: String) async -> Int64? {
        await core.coordinator.committed(groupID: group, partitions: [TopicPartition(topic: "t", partition: 0)]).first?.1?.offset
    }

    @Test("offsets.retention.minutes: an offset committed outside the group protocol expires that long after its commit")
    func offsetsRetention() async throws {
        try await withBrokerCore(["offsets.retention.minutes": "1"]) { core in
            _ = await core.createTopic("t")
            #expect(await Self.commitOutsideGroup(core, "g", offset: 7, version: 8) == 0)
            core.clock.advance(by: 59_000)
            await core.coordinator.expireOffsets(now: core.clock.milliseconds)
            #expect(await Self.committed(core, "g") == 7, "within the retention")
            core.clock.advance(by: 2_000)
            await core.coordinator.expireOffsets(now: core.clock.milliseconds)
            #expect(await Self.committed(core, "g") == nil)
        }
    }

    @Test("OffsetCommit v2's retention_time_ms sets the offset's own expiry, kept in its record (value version 1)")
    func retentionTimeMs() async throws {
        try await withBrokerCore(["offsets.retention.minutes": "1"]) { core in
            _ = await core.createTopic("t")
            #expect(await Self.commitOutsideGroup(core, "short", offset: 3, version: 2, retentionTimeMs: 5_000) == 0)
            #expect(await Self.commitOutsideGroup(core, "default", offset: 4, version: 2) == 0)
            // A version without the field ignores a value set in the request.
            #expect(await Self.commitOutsideGroup(core, "newer", offset: 5, version: 8, retentionTimeMs: 5_000) == 0)
            let stored = await core.coordinator.committed(groupID: "short", partitions: [TopicPartition(topic: "t", partition: 0)]).first?.1
            let expire = try #require(stored?.expireTimestamp)
            #expect(expire == core.clock.milliseconds + 5_000)
            // The record keeps it: value version 1 decodes to the same expiry, and replays it.
            let value = try GroupCoordinator.offsetValue(try #require(stored))
            #expect(value.getInteger(at: value.readerIndex, as: Int16.self) == 1)
            guard case .offsetCommit(_, _, let decoded?) = try CoordinatorRecordSerde.decode(
                key: try GroupCoordinator.offsetKey(group: "short", tp: TopicPartition(topic: "t", partition: 0)), value: value) else {
                Issue.record("not an offset commit record")
                return
            }
            #expect(decoded.expireTimestamp == expire && decoded.offset == 3)

            core.clock.advance(by: 4_999)
            await core.coordinator.expireOffsets(now: core.clock.milliseconds)
            #expect(await Self.committed(core, "short") == 3)
            core.clock.advance(by: 1)
            await core.coordinator.expireOffsets(now: core.clock.milliseconds)
            #expect(await Self.committed(core, "short") == nil, "expired at its own time")
            #expect(await Self.committed(core, "default") == 4, "offsets.retention.minutes still applies to the others")
            #expect(await Self.committed(core, "newer") == 5)
        }
    }
}
