import FjordBroker
import FjordClient
import FjordEventSourcing
import FjordProtocol
import FjordStorage
import FjordTesting
import NIOCore
import Synchronization
import Testing

/// A counter shared by concurrent tasks.
final class Counter: Sendable {
    private let value = Mutex(0)
    func increment() { value.withLock { $0 += 1 } }
    var count: Int { value.withLock { $0 } }
}

/// How many record batches the in-process broker's logs of `topic` hold.
func recordBatches(in broker: InProcessBroker, topic: String) throws -> Int {
    var batches = 0
    for log in broker.broker.logManager.allLogs where log.topicPartition.topic == topic {
        var offset = log.logStartOffset
        while offset < log.logEndOffset {
            guard var bytes = try log.read(from: offset, maxBytes: 1 << 20, upperBound: .logEndOffset, minOneMessage: true).records?.readBytes()
            else { break }
            while let batch = try RecordBatch.read(from: &bytes) {
                batches += 1
                offset = Offset(batch.nextOffset)
            }
        }
    }
    return batches
}

@Suite("EventStore against a real broker (in-process, or a fjord serve process when it must be killed)")
struct EventStoreTests {
    func event(_ type: String, _ body: String, id: String? = nil) -> EventData {
        EventData(id: id, type: type, data: ByteBuffer(string: body))
    }

    @Test("expected versions, atomic multi-event appends, idempotent retries, reads both ways", .timeLimit(.minutes(2)))
    func basics() async throws {
        let broker = try await InProcessBroker.start()
        let store = try await EventStore.connect(bootstrap: broker.bootstrap, topic: "accounts", partitions: 3)
        #expect(try await store.version(of: "acct-1") == -1)
        #expect(try await store.append(to: "acct-1", [event("Opened", "{}")], expectedVersion: .noStream) == 0)
        let deposits = [event("Deposited", "10"), event("Deposited", "20"), event("Deposited", "30")]
        #expect(try await store.append(to: "acct-1", deposits, expectedVersion: .exact(0)) == 3)

        // A stale writer: refused with the actual version, nothing appended.
        await #expect(throws: WrongExpectedVersion(stream: "acct-1", expected: .exact(1), actual: 3)) {
            try await store.append(to: "acct-1", [self.event("Withdrew", "5")], expectedVersion: .exact(1))
        }
        await #expect(throws: WrongExpectedVersion(stream: "acct-1", expected: .noStream, actual: 3)) {
            try await store.append(to: "acct-1", [self.event("Opened", "{}")], expectedVersion: .noStream)
        }
        await #expect(throws: WrongExpectedVersion(stream: "acct-2", expected: .exists, actual: -1)) {
            try await store.append(to: "acct-2", [self.event("Deposited", "1")], expectedVersion: .exists)
        }
        // A retried append that already landed (same event ids) returns its version.
        #expect(try await store.append(to: "acct-1", deposits, expectedVersion: .exact(0)) == 3)
        #expect(try await store.append(to: "acct-1", [event("Closed", "{}")], expectedVersion: .any) == 4)

        let all = try await store.read(stream: "acct-1")
        #expect(all.map(\.revision) == [0, 1, 2, 3, 4])
        #expect(all.map(\.type) == ["Opened", "Deposited", "Deposited", "Deposited", "Closed"])
        #expect(all[1].id == deposits[0].id && String(buffer: all[2].data) == "20")
        let lastTwo = try await store.read(stream: "acct-1", from: -1, direction: .backwards, limit: 2)
        #expect(lastTwo.map(\.revision) == [4, 3])
        #expect(try await store.read(stream: "acct-1", from: 2, limit: 2).map(\.revision) == [2, 3])
        await store.close()
        try await broker.stop()
    }

    /// `writers` tasks each make `appends` attempts on streams s0…s9, reading the version and
    /// appending with it as the exact expectation. Returns (won, lost) races.
    func race(bootstrap: String, writers: Int, appends: Int) async throws -> (won: Int, lost: Int) {
        let conflicts = Counter()
        let successes = Counter()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<writers {
                group.addTask {
                    let store = try await EventStore.connect(bootstrap: bootstrap, topic: "contended", createTopic: false)
                    for attempt in 0..<appends {
                        let stream = "s\((writer + attempt) % 10)"
                        let version = try await store.version(of: stream)
                        do {
                            try await store.append(to: stream, [self.event("Tick", "\(writer)-\(attempt)")],
                                                   expectedVersion: version < 0 ? .noStream : .exact(version))
                            successes.increment()
                        } catch is WrongExpectedVersion {
                            conflicts.increment()  // lost the race: another writer appended first
                        }
                    }
                    await store.close()
                }
            }
            try await group.waitForAll()
        }
        return (successes.count, conflicts.count)
    }

    /// Every stream s0…s9 holds revisions 0…n−1 with distinct event ids; returns the total.
    func checkStreams(_ store: EventStore) async throws -> Int {
        var total = 0
        for index in 0..<10 {
            let events = try await store.read(stream: "s\(index)", limit: 100_000)
            #expect(events.map(\.revision) == Array(0..<Int64(events.count)), "s\(index): no gap")
            #expect(Set(events.map(\.id)).count == events.count, "s\(index): no duplicate")
            #expect(try await store.version(of: "s\(index)") == Int64(events.count) - 1)
            total += events.count
        }
        return total
    }

    @Test("8 writers × 500 appends race on 10 streams: versions 0…n−1 without gap or duplicate; after a SIGKILL of the broker they continue",
          .timeLimit(.minutes(3)))
    func concurrentWriters() async throws {
        // A real `fjord serve` process, so that it can be killed without a shutdown.
        try await BrokerProcess.with { broker in
            let setup = try await EventStore.connect(bootstrap: broker.bootstrap, topic: "contended", partitions: 4)
            await setup.close()
            let first = try await race(bootstrap: broker.bootstrap, writers: 8, appends: 500)
            #expect(first.won + first.lost == 4_000)
            #expect(first.lost > 0, "the writers did race")
            let store = try await EventStore.connect(bootstrap: broker.bootstrap, topic: "contended", createTopic: false)
            #expect(try await checkStreams(store) == first.won, "every won race is exactly one event")
            await store.close()

            // SIGKILL: no shutdown, no checkpoint; the restarted broker rebuilds the versions from
            // its stream-index checkpoint and the log tail.
            await broker.kill()
            try await broker.start()
            let after = try await EventStore.connect(bootstrap: broker.bootstrap, topic: "contended", createTopic: false)
            #expect(try await checkStreams(after) == first.won, "nothing lost or duplicated by the crash")
            let second = try await race(bootstrap: broker.bootstrap, writers: 8, appends: 100)
            #expect(second.won + second.lost == 800)
            #expect(try await checkStreams(after) == first.won + second.won, "versions continue after the crash")
            await after.close()
            #expect(broker.log.contains("stream index"), "recovery reports how it rebuilt the stream index")
        }
    }

    @Test("concurrent appends share Produce requests; a conflict refuses only its own append", .timeLimit(.minutes(2)))
    func sharedRequests() async throws {
        let broker = try await InProcessBroker.start()
        let store = try await EventStore.connect(bootstrap: broker.bootstrap, topic: "shared", partitions: 2)
        for index in 0..<20 {
            try await store.append(to: "taken-\(index)", [event("Created", "first")], expectedVersion: .noStream)
        }
        // 300 appends at once: 260 to new streams (two events each), 40 that must conflict.
        let results = try await withThrowingTaskGroup(of: (String, Result<Int64, WrongExpectedVersion>).self) { group in
            for index in 0..<300 {
                group.addTask {
                    let stream = index % 15 == 0 ? "taken-\(index / 15)" : index % 15 == 1 ? "taken-\(index / 15)" : "new-\(index)"
                    do {
                        let version = try await store.append(to: stream, [self.event("Created", "\(index)"), self.event("Named", "\(index)")],
                                                             expectedVersion: .noStream)
                        return (stream, .success(version))
                    } catch let conflict as WrongExpectedVersion {
                        return (stream, .failure(conflict))
                    }
                }
            }
            var out: [(String, Result<Int64, WrongExpectedVersion>)] = []
            for try await result in group { out.append(result) }
            return out
        }
        for (stream, result) in results {
            if stream.hasPrefix("new-") {
                #expect(try result.get() == 1, "\(stream) appended")
            } else {
                #expect(throws: WrongExpectedVersion.self) { try result.get() }
            }
        }
        for index in 0..<20 {
            #expect(try await store.read(stream: "taken-\(index)").map(\.type) == ["Created"], "refused appends wrote nothing")
        }
        #expect(try await store.read(stream: "new-7").map(\.revision) == [0, 1])
        #expect(try recordBatches(in: broker, topic: "shared") < 20 + 260 / 2, "appends shared record batches")

        // Twenty writers expect the same version of one stream: one wins, the others see its append.
        try await store.append(to: "hot", [event("Created", "0")], expectedVersion: .noStream)
        let outcomes = await withTaskGroup(of: Int64?.self) { group in
            for index in 0..<20 {
                group.addTask {
                    do {
                        return try await store.append(to: "hot", [self.event("Bid", "\(index)")], expectedVersion: .exact(0))
                    } catch let conflict as WrongExpectedVersion {
                        return conflict.actual == 1 ? nil : -99
                    } catch {
                        return -98
                    }
                }
            }
            var out: [Int64?] = []
            for await outcome in group { out.append(outcome) }
            return out
        }
        #expect(outcomes.compactMap { $0 } == [1], "exactly one winner; every loser saw version 1")
        #expect(try await store.version(of: "hot") == 1)
        await store.close()
        try await broker.stop()
    }

    @Test("concurrent appends without expectations learn their versions from the stream index", .timeLimit(.minutes(2)))
    func unconditionalVersions() async throws {
        let broker = try await InProcessBroker.start()
        let store = try await EventStore.connect(bootstrap: broker.bootstrap, topic: "loose", partitions: 2)
        try await store.append(to: "log-1", [event("Started", "0")], expectedVersion: .noStream)
        let returned = try await withThrowingTaskGroup(of: (String, Int64).self) { group in
            for index in 0..<200 {
                group.addTask {
                    let stream = index % 2 == 0 ? "log-1" : "log-2"
                    let data = self.event("Line", "\(index)", id: "line-\(index)")
                    return (data.id, try await store.append(to: stream, [data], expectedVersion: index % 4 == 0 ? .exists : .any))
                }
            }
            var out: [String: Int64] = [:]
            for try await (id, version) in group { out[id] = version }
            return out
        }
        for stream in ["log-1", "log-2"] {
            let stored = try await store.read(stream: stream)
            for event in stored where event.type == "Line" {
                #expect(returned[event.id] == event.revision, "\(event.id): the version append returned is its revision")
            }
        }
        #expect(try await store.version(of: "log-1") == 100)
        #expect(try await store.version(of: "log-2") == 99)

        // FjordStreamRevisions itself (the appender falls back to reading the index without it).
        let cluster = try await KafkaCluster.connect(ClientConfiguration(bootstrap: broker.bootstrap))
        let partition = store.partition(of: "log-1")
        let stored = try await store.read(stream: "log-1", limit: 3)
        var request = FjordStreamRevisionsRequest()
        request.topic = "loose"
        request.partition = partition
        for (stream, offset) in stored.map({ ("log-1", $0.offset) }) + [("nobody", stored[0].offset), ("log-1", 1_000_000)] {
            var position = FjordStreamRevisionsRequest.EventPosition()
            position.streamKey = ByteBuffer(string: stream)
            position.offset = offset
            request.events.append(position)
        }
        let response = try await cluster.leader(topic: "loose", partition: partition).connection.send(request)
        #expect(response.errorCode == 0 && response.revisions == [0, 1, 2, -1, -1])
        request.topic = "no-such-topic"
        #expect(try await cluster.leader(topic: "loose", partition: partition).connection.send(request).errorCode
                == KafkaError.unknownTopicOrPartition.code)
        await cluster.close()
        await store.close()
        try await broker.stop()
    }

    @Test("subscriptions catch up, then follow live events", .timeLimit(.minutes(2)))
    func subscriptions() async throws {
        let broker = try await InProcessBroker.start()
        let store = try await EventStore.connect(bootstrap: broker.bootstrap, topic: "orders", partitions: 2)
        try await store.append(to: "order-1", [event("Created", "a"), event("Paid", "b")], expectedVersion: .noStream)
        try await store.append(to: "order-2", [event("Created", "c")], expectedVersion: .noStream)
        let follower = Task {
            var seen: [RecordedEvent] = []
            for try await event in store.subscribe(to: "order-1") {
                seen.append(event)
                if seen.count == 3 { break }
            }
            return seen
        }
        try await Task.sleep(for: .milliseconds(300))
        try await store.append(to: "order-1", [event("Shipped", "d")], expectedVersion: .exact(1))
        let seen = try await follower.value
        #expect(seen.map(\.type) == ["Created", "Paid", "Shipped"])
        #expect(seen.map(\.revision) == [0, 1, 2])

        var everything: [RecordedEvent] = []
        for try await event in store.subscribeToAll() {
            everything.append(event)
            if everything.count == 4 { break }
        }
        #expect(everything.filter { $0.stream == "order-1" }.map(\.revision) == [0, 1, 2])
        #expect(everything.filter { $0.stream == "order-2" }.map(\.revision) == [0])

        // Resuming mid-partition: revisions come from the stream index.
        let paid = try #require(everything.first { $0.stream == "order-1" && $0.revision == 1 })
        var resumed: [RecordedEvent] = []
        for try await event in store.subscribeToAll(from: .offsets([paid.partition: paid.offset])) {
            resumed.append(event)
            if resumed.count == 3 { break }
        }
        #expect(resumed.filter { $0.stream == "order-1" }.map(\.revision) == [1, 2])
        #expect(resumed.filter { $0.stream == "order-2" }.map(\.revision) == [0], "a partition not listed starts at its beginning")

        // From the end: only new events, with their revisions. Probe events are appended until
        // the subscription shows it is live (it starts at the end it finds when it connects).
        let probesSeen = Counter()
        let live = Task {
            var seen: [RecordedEvent] = []
            for try await event in store.subscribeToAll(from: .end) {
                if event.stream == "probe" { probesSeen.increment() }
                seen.append(event)
                if seen.filter({ $0.stream.hasPrefix("order-") }).count == 2 { break }
            }
            return seen
        }
        for attempt in 0..<100 where probesSeen.count == 0 {
            try await store.append(to: "probe", [event("Probe", "\(attempt)")], expectedVersion: .any)
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(probesSeen.count > 0, "the subscription went live")
        try await store.append(to: "order-1", [event("Delivered", "e")], expectedVersion: .exact(2))
        try await store.append(to: "order-2", [event("Paid", "f")], expectedVersion: .exact(0))
        let fresh = try await live.value
        #expect(Set(fresh.filter { $0.stream.hasPrefix("order-") }.map { "\($0.stream)@\($0.revision)" }) == ["order-1@3", "order-2@1"])
        #expect(fresh.allSatisfy { $0.stream != "order-1" || $0.revision >= 3 }, "nothing from before the end")
        await store.close()
        try await broker.stop()
    }
}
