import Synchronization
import SystemPackage

/// What one flush makes durable: files a log picked under its lock, to be synced outside it.
///
/// `offset` is the recovery point once every file is synced: the log's records below it, with
/// their indexes and the checkpoints written before the flush began, are on disk.
struct FlushTarget: Sendable {
    /// Segment logs and indexes holding offsets at or after the recovery point.
    var segmentFiles: [SegmentFile] = []
    /// Checkpoints written without an fsync since the last flush (epochs, producer snapshots,
    /// the stream index); their renames need the directory synced too.
    var checkpointFiles: [SegmentFile] = []
    var directory: FilePath? = nil
    var offset: Int64
    /// The appended messages this flush covers (`flush.messages` accounting).
    var messages: Int64 = 0

    var isEmpty: Bool { segmentFiles.isEmpty && checkpointFiles.isEmpty }
}

/// A partition log's durability (Kafka's flush scheduling in `UnifiedLog.flush` and the log
/// manager's flusher): the fsyncs of its segments and checkpoints, and group commit for
/// `log.flush.on.ack`.
///
/// Invariant: every fsync runs outside the log's lock. The log picks a `FlushTarget` under its
/// lock (cheap: references to open files), the fsyncs run here with no lock held, so appends and
/// reads continue meanwhile, and the log then advances its recovery point under its lock. An
/// fsync keeps its files open by reference, so a concurrent roll, retention pass or close cannot
/// invalidate a descriptor mid-sync. `LogLockProbe` checks the invariant in debug builds.
///
/// Group commit: `flushed(through:)` callers queue while one flush runs; the next flush covers
/// all of them, so N acks waiting on the same partition share one fsync.
///
/// Crash behaviour: `flushedOffset` only moves after a successful fsync of everything below it;
/// a failed fsync fails every waiter it was meant to cover (the records stay unacknowledged).
final class LogFlusher: Sendable {
    private struct State {
        var flushedOffset: Int64
        var flushing = false
        var waiters: [(offset: Int64, continuation: CheckedContinuation<Void, any Error>)] = []
    }

    private let state: Mutex<State>

    init(flushedOffset: Int64) {
        state = Mutex(State(flushedOffset: flushedOffset))
    }

    /// Told the duration of every flush (`LogManager.observeFlushes`), for the flush-latency metric.
    static let observer = Mutex<(@Sendable (Duration) -> Void)?>(nil)

    /// fsyncs a target's files and, when it has checkpoints, their directory. No lock is held.
    static func sync(_ target: FlushTarget) throws(StorageError) {
        let started = ContinuousClock.now
        for file in target.segmentFiles { try file.sync() }
        for file in target.checkpointFiles { try file.sync() }
        if let directory = target.directory, !target.checkpointFiles.isEmpty { CheckpointFile.syncDirectory(directory) }
        if let observe = observer.withLock({ $0 }) { observe(started.duration(to: .now)) }
    }

    /// Records that everything below `offset` is on disk.
    func markFlushed(through offset: Int64) {
        state.withLock { $0.flushedOffset = Swift.max($0.flushedOffset, offset) }
    }

    /// After a truncation: nothing at or above `offset` is on disk any more.
    func lower(to offset: Int64) {
        state.withLock { $0.flushedOffset = Swift.min($0.flushedOffset, offset) }
    }

    /// After a restart from `offset` (the log was emptied): nothing below it is unflushed.
    func reset(to offset: Int64) {
        state.withLock { $0.flushedOffset = offset }
    }

    /// Suspends until everything below `offset` is on disk, sharing fsyncs between callers.
    /// `flush` performs one flush and returns the offset it made durable; `runFlush` runs it off
    /// the caller's thread (the log manager's I/O queue).
    func flushed(
        through offset: Int64, runFlush: @escaping @Sendable (@escaping @Sendable () -> Void) -> Void,
        flush: @escaping @Sendable () throws(StorageError) -> Int64
    ) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let start: Bool = state.withLock { d in
                if d.flushedOffset >= offset {
                    continuation.resume()
                    return false
                }
                d.waiters.append((offset, continuation))
                if d.flushing { return false }
                d.flushing = true
                return true
            }
            if start { schedule(runFlush, flush) }
        }
    }

    private func schedule(
        _ runFlush: @escaping @Sendable (@escaping @Sendable () -> Void) -> Void,
        _ flush: @escaping @Sendable () throws(StorageError) -> Int64
    ) {
        runFlush { [self] in
            var failure: StorageError? = nil
            var target: Int64 = -1
            do throws(StorageError) {
                target = try flush()
            } catch {
                failure = error
            }
            let (ready, again): ([CheckedContinuation<Void, any Error>], Bool) = state.withLock { d in
                if failure == nil { d.flushedOffset = Swift.max(d.flushedOffset, target) }
                var ready: [CheckedContinuation<Void, any Error>] = []
                var waiting: [(offset: Int64, continuation: CheckedContinuation<Void, any Error>)] = []
                for waiter in d.waiters {
                    if failure != nil || waiter.offset <= d.flushedOffset { ready.append(waiter.continuation) } else { waiting.append(waiter) }
                }
                d.waiters = waiting
                d.flushing = !waiting.isEmpty
                return (ready, !waiting.isEmpty)
            }
            for continuation in ready {
                if let failure { continuation.resume(throwing: failure) } else { continuation.resume() }
            }
            if again { schedule(runFlush, flush) }
        }
    }
}
