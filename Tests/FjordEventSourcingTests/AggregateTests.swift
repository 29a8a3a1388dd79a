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

struct Account: Aggregate {
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

    @Test("commands decide on the folded state; old event versions are upcast; conflicts are retried")
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
}
