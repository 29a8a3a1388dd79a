// An event-sourced bank on Fjord: commands decide on an aggregate folded from its stream (from its
// latest snapshot on a compacted topic, every 50 events), the broker enforces expected versions,
// and a projection keeps balances in SQLite.
//   tools/fjord serve &
//   swift run fjord-example-bank demo            # or: open NAME | deposit NAME CENTS | withdraw NAME CENTS | balances
import FjordEventSourcing
import FjordProjections
import Foundation
import GRDB
import NIOCore

struct Opened: Event { static let eventType = "AccountOpened"; var owner: String }
struct Deposited: Event { static let eventType = "MoneyDeposited"; var cents: Int }
struct Withdrew: Event { static let eventType = "MoneyWithdrawn"; var cents: Int }

struct Account: SnapshottableAggregate {
    var isOpen = false
    var balance = 0
    init() {}
    mutating func apply(_ event: any Event) {
        switch event {
        case is Opened: isOpen = true
        case let e as Deposited: balance += e.cents
        case let e as Withdrew: balance -= e.cents
        default: break
        }
    }
}

struct BankError: Error, CustomStringConvertible { let description: String }

/// The read model: one row per account.
struct Balances: Projection {
    let name = "balances"
    let topic = "bank"
    func setUp(_ db: Database) throws {
        try db.execute(sql: "CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY, cents INTEGER NOT NULL)")
    }
    func apply(_ event: RecordedEvent, in db: Database) throws {
        let delta: Int
        switch event.type {
        case Deposited.eventType: delta = try JSONDecoder().decode(Deposited.self, from: Data(event.data.readableBytesView)).cents
        case Withdrew.eventType: delta = -(try JSONDecoder().decode(Withdrew.self, from: Data(event.data.readableBytesView)).cents)
        default: delta = 0
        }
        try db.execute(sql: "INSERT INTO balances (account, cents) VALUES (?, ?) ON CONFLICT (account) DO UPDATE SET cents = cents + excluded.cents",
                       arguments: [event.stream, delta])
    }
}

let bootstrap = ProcessInfo.processInfo.environment["FJORD_BOOTSTRAP"] ?? "127.0.0.1:9092"
var registry = EventTypeRegistry()
registry.register(Opened.self)
registry.register(Deposited.self)
registry.register(Withdrew.self)
let bank = try await EventStore.connect(bootstrap: bootstrap, topic: "bank", partitions: 3)
let snapshots = try await SnapshotStore.connect(bootstrap: bootstrap, topic: "bank-snapshots", partitions: 3)

func run(_ command: [String]) async throws {
    switch (command.first, command.count) {
    case ("open", 2):
        try await bank.execute(Account.self, stream: command[1], registry: registry, snapshots: snapshots, snapshotEvery: 50) { account in
            guard !account.isOpen else { throw BankError(description: "\(command[1]) is already open") }
            return [Opened(owner: command[1])]
        }
    case ("deposit", 3), ("withdraw", 3):
        guard let cents = Int(command[2]), cents > 0 else { throw BankError(description: "amount must be a positive number of cents") }
        try await bank.execute(Account.self, stream: command[1], registry: registry, snapshots: snapshots, snapshotEvery: 50) { account in
            guard account.isOpen else { throw BankError(description: "\(command[1]) is not open") }
            if command[0] == "deposit" { return [Deposited(cents: cents)] }
            guard account.balance >= cents else { throw BankError(description: "insufficient funds: \(account.balance) cents") }
            return [Withdrew(cents: cents)]
        }
    case ("balances", 1):
        let runner = try ProjectionRunner(projection: Balances(), bootstrap: bootstrap, path: "bank-balances.sqlite")
        try await runner.start()
        while try await runner.status().lag > 0 { try await Task.sleep(for: .milliseconds(50)) }
        try await Task.sleep(for: .milliseconds(100))
        let rows = try await runner.read { db in
            try Row.fetchAll(db, sql: "SELECT account, cents FROM balances ORDER BY account").map { ($0["account"] as String, $0["cents"] as Int) }
        }
        for (account, cents) in rows { print("\(account): \(cents) cents") }
        await runner.stop()
    case ("demo", 1):
        let alice = "alice-\(Int.random(in: 1000...9999))"
        for step in [["open", alice], ["deposit", alice, "1000"], ["withdraw", alice, "300"]] {
            try await run(step)
            print("ok: \(step.joined(separator: " "))")
        }
        do { try await run(["withdraw", alice, "5000"]) } catch { print("refused: \(error)") }
        try await run(["balances"])
    default:
        throw BankError(description: "usage: fjord-example-bank demo | open NAME | deposit NAME CENTS | withdraw NAME CENTS | balances")
    }
}

do {
    try await run(Array(CommandLine.arguments.dropFirst()))
} catch {
    FileHandle.standardError.write(Data("fjord-example-bank: \(error)\n".utf8))
    await snapshots.close()
    await bank.close()
    exit(1)
}
await snapshots.close()
await bank.close()
