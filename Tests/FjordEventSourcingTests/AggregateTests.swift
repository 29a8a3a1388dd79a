import FjordEventSourcing
import FjordTesting
import Foundation
import NIOCore
import Testing

struct Opened: Event {
    static let eventType = "AccountOpened"
    var owner: String
}

/// Version 2 renamed `amount` (dollars) to `cents`.
struct Deposited: Event {
    static let eventType = "MoneyDeposited"
    static let schemaVersion = 2
    var cents: Int
}

struct DepositedV1: Event {
    static let eventType = "MoneyDeposited"
    var amount: Int
}

struct Account: SnapshottableAggregate {
    var owner: String? = nil
    var balanceCents = 0

    init() {}

    mutating func apply(_ event: any Event) {
        switch event {
        case let opened as Opened: owner = opened.owner
        case let deposit as Deposited: balanceCents += deposit.cents
        default: break
        }
    }
}

@Suite("Typed events and aggregates")
struct AggregateTests {
    var registry: EventTypeRegistry {
        var registry = EventTypeRegistry()
        registry.register(Opened.self)
        registry.register(Deposited.self)
        registry.registerUpcaster(type: "MoneyDeposited", fromVersion: 1) { data in
            let old = try JSONDecoder().decode(DepositedV1.self, from: data)
            return try JSONEncoder().encode(Deposited(cents: old.amount * 100))
        }
        return registry
    }

    @Test("commands decide on the folded state; old event versions are upcast; conflicts are retried", .timeLimit(.minutes(2)))
    func commands() async throws {
        let broker = try await InProcessBroker.start()
        let store = try await EventStore.connect(bootstrap: broker.bootstrap, topic: "bank")
        let registry = self.registry
        try await store.execute(Account.self, stream: "acct-9", registry: registry) { account in
            #expect(account.owner == nil)
            return [Opened(owner: "ada")]
        }
        // An event written by an older version of the application (schema 1, dollars).
        var old = EventTypeRegistry()
        old.register(DepositedV1.self)
        try await store.append(to: "acct-9", [try old.encode(DepositedV1(amount: 3))], expectedVersion: .exact(0))
        let version = try await store.execute(Account.self, stream: "acct-9", registry: registry) { account in
            #expect(account.balanceCents == 300, "the v1 event was upcast")
            return [Deposited(cents: 50)]
        }
        #expect(version == 2)
        let (account, loadedVersion) = try await store.load(Account.self, stream: "acct-9", registry: registry)
        #expect(account.owner == "ada" && account.balanceCents == 350 && loadedVersion == 2)

        // Two commands racing on one account: both land, one after a retry.
        async let first = store.execute(Account.self, stream: "acct-9", registry: registry) { _ in [Deposited(cents: 1)] }
        async let second = store.execute(Account.self, stream: "acct-9", registry: registry) { _ in [Deposited(cents: 2)] }
        _ = try await (first, second)
        #expect(try await store.load(Account.self, stream: "acct-9", registry: registry).state.balanceCents == 353)
        await store.close()
        try await broker.stop()
    }

    @Test("snapshots on a compacted topic: saved every N events, used by load, ignored when their schema changed", .timeLimit(.minutes(2)))
    func snapshots() async throws {
        let broker = try await InProcessBroker.start()
        let store = try await EventStore.connect(bootstrap: broker.bootstrap, topic: "ledger", partitions: 2)
        let snapshots = try await SnapshotStore.connect(bootstrap: broker.bootstrap, topic: "ledger-snapshots", partitions: 2)
        await #expect(throws: EventStoreError.self, "a topic that is not compacted is refused") {
            _ = try await SnapshotStore.connect(bootstrap: broker.bootstrap, topic: "ledger", createTopic: false)
        }
        let registry = self.registry
        try await store.execute(Account.self, stream: "acct-1", registry: registry, snapshots: snapshots, snapshotEvery: 10) { _ in
            [Opened(owner: "grace")]
        }
        for _ in 0..<24 {
            try await store.execute(Account.self, stream: "acct-1", registry: registry, snapshots: snapshots, snapshotEvery: 10) { _ in
                [Deposited(cents: 10)]
            }
        }
        // Versions 0…24; snapshots were saved at 9 and 19 (ten events past the previous one).
        #expect(try await snapshots.latest(stream: "acct-1")?.version == 19)
        let loaded = try await store.load(Account.self, stream: "acct-1", registry: registry, snapshots: snapshots)
        let folded = try await store.load(Account.self, stream: "acct-1", registry: registry)
        #expect(loaded.snapshotVersion == 19 && loaded.version == 24 && folded.version == 24)
        #expect(loaded.state.balanceCents == 240 && folded.state.balanceCents == 240 && loaded.state.owner == "grace")

        // Load starts from the snapshot: a doctored one shows through, plus the events after it.
        var doctored = Account()
        doctored.owner = "grace"
        doctored.balanceCents = 1_000_000
        try await snapshots.save(stream: "acct-1", Snapshot(version: 24, schemaVersion: 1,
                                                            data: ByteBuffer(bytes: try JSONEncoder().encode(doctored))))
        try await store.append(to: "acct-1", [try registry.encode(Deposited(cents: 5))], expectedVersion: .exact(24))
        let fromDoctored = try await store.load(Account.self, stream: "acct-1", registry: registry, snapshots: snapshots)
        #expect(fromDoctored.state.balanceCents == 1_000_005 && fromDoctored.version == 25 && fromDoctored.snapshotVersion == 24)

        // Another process's store reads the snapshot from the topic.
        let other = try await SnapshotStore.connect(bootstrap: broker.bootstrap, topic: "ledger-snapshots", createTopic: false)
        #expect(try await other.latest(stream: "acct-1")?.version == 24)
        #expect(try await other.latest(stream: "acct-2") == nil)

        // A snapshot of another schema is ignored: the stream is folded from its start.
        try await other.save(stream: "acct-1", Snapshot(version: 25, schemaVersion: 2, data: ByteBuffer(string: "{}")))
        let ignored = try await store.load(Account.self, stream: "acct-1", registry: registry, snapshots: snapshots)
        #expect(ignored.snapshotVersion == -1 && ignored.state.balanceCents == 245 && ignored.version == 25)

        try await snapshots.delete(stream: "acct-1")
        #expect(try await other.latest(stream: "acct-1") == nil, "a tombstone removes the snapshot")
        await other.close()
        await snapshots.close()
        await store.close()
        try await broker.stop()
    }
}
