public import FjordPostgresReplication
import Synchronization

/// The WAL position a connector may confirm to PostgreSQL: the end of the newest transaction
/// whose every event, and every earlier transaction's, the broker acknowledged (Kafka Connect's
/// "submitted records" bookkeeping, keyed by commit LSN).
///
/// Transactions are opened in WAL commit order, as pgoutput sends them. Each counts its events
/// in flight; `sealed` gives it the LSN to confirm once it is complete. `confirmable` only ever
/// moves forward and never past a transaction with an event in flight, so a crash at any point
/// loses nothing and repeats at most what was not yet confirmed. A failed delivery is kept as
/// `failure` and stops the position for good: nothing after it may be confirmed.
///
/// Sendable: every field sits behind one `Mutex`; delivery callbacks come from any thread.
public final class AcknowledgedPosition: Sendable {
    public struct Transaction: Sendable, Hashable {
        let sequence: UInt64
    }

    fileprivate struct Entry {
        var sequence: UInt64
        var inFlight = 0
        var end: LSN? = nil
        var commitTimeMs: Int64 = 0
    }

    fileprivate struct State {
        var entries: [Entry] = []  // few: the transactions in flight
        var nextSequence: UInt64 = 0
        var confirmable: LSN
        var confirmedCommitTimeMs: Int64 = 0
        var delivered = 0
        var failure: String? = nil
    }

    private let state: Mutex<State>

    /// Starts at `start`: what PostgreSQL already has as the slot's confirmed position.
    public init(start: LSN) {
        state = Mutex(State(confirmable: start))
    }

    /// Opens the next transaction (in commit order).
    public func open() -> Transaction {
        state.withLock { state in
            let sequence = state.nextSequence
            state.nextSequence += 1
            state.entries.append(Entry(sequence: sequence))
            return Transaction(sequence: sequence)
        }
    }

    /// One more event of `transaction` was handed to the producer.
    public func submitted(_ transaction: Transaction) {
        state.withLock { state in
            guard let index = state.index(of: transaction) else { return }
            state.entries[index].inFlight += 1
        }
    }

    /// The broker answered one event of `transaction`; an error stops the position.
    public func completed(_ transaction: Transaction, error: (any Error)?) {
        state.withLock { state in
            if let error {
                if state.failure == nil { state.failure = "\(error)" }
                return
            }
            state.delivered += 1
            guard let index = state.index(of: transaction) else { return }
            state.entries[index].inFlight -= 1
            state.advance()
        }
    }

    /// `transaction` has all its events: once they are acknowledged, `end` may be confirmed.
    public func seal(_ transaction: Transaction, end: LSN, commitTimeMs: Int64) {
        state.withLock { state in
            guard let index = state.index(of: transaction) else { return }
            state.entries[index].end = end
            state.entries[index].commitTimeMs = commitTimeMs
            state.advance()
        }
    }

    /// The position to confirm now.
    public var confirmable: LSN { state.withLock { $0.confirmable } }
    /// The commit time (ms since the epoch) of the newest confirmable transaction.
    public var confirmedCommitTimeMs: Int64 { state.withLock { $0.confirmedCommitTimeMs } }
    /// Events the broker acknowledged.
    public var delivered: Int { state.withLock { $0.delivered } }
    /// The first delivery error, if any.
    public var failure: String? { state.withLock { $0.failure } }
    /// Whether every opened transaction is sealed and acknowledged.
    public var isIdle: Bool { state.withLock { $0.entries.isEmpty } }
}

extension AcknowledgedPosition.State {
    func index(of transaction: AcknowledgedPosition.Transaction) -> Int? {
        guard let first = entries.first?.sequence, transaction.sequence >= first else { return nil }
        let index = Int(transaction.sequence - first)
        return index < entries.count ? index : nil
    }

    mutating func advance() {
        guard failure == nil else { return }
        while let first = entries.first, first.inFlight == 0, let end = first.end {
            if end > confirmable {
                confirmable = end
                confirmedCommitTimeMs = first.commitTimeMs
            }
            entries.removeFirst()
        }
    }
}
