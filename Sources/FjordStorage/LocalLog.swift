#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
public import FjordProtocol
public import NIOCore
import Synchronization
public import SystemPackage

/// Where an append came from: client appends get offsets assigned and producer checks;
/// replication appends keep the leader's offsets (a follower's fetch).
public enum AppendOrigin: Sendable {
    case client
    case replication
}

/// The result of an append (Kafka's `LogAppendInfo`).
public struct LogAppendInfo: Sendable, Equatable {
    public var firstOffset: Offset
    public var lastOffset: Offset
    /// The largest timestamp appended and the offset holding it.
    public var maxTimestamp: Int64
    public var offsetOfMaxTimestamp: Offset
    /// The broker's append time when the topic uses LogAppendTime, else -1.
    public var logAppendTime: Int64
    public var batchCount: Int
    public var recordCount: Int
    public var validBytes: Int
    /// True when the batch was a retried duplicate: nothing was written, the offsets are the originals.
    public var isDuplicate: Bool
}

/// What a read returns: a file region to send and the offsets a fetch response reports.
public struct LogReadResult: Sendable {
    /// The records to send, or nil when there is nothing to read below the upper bound.
    public var records: FileSlice?
    public var highWatermark: HighWatermark
    public var logStartOffset: Offset
    public var logEndOffset: Offset
    public var lastStableOffset: Offset
}

/// How far a read may go.
public enum ReadUpperBound: Sendable {
    /// Up to the high watermark (consumers).
    case highWatermark
    /// Up to the last stable offset (read_committed consumers).
    case lastStableOffset
    /// Up to the log end offset (followers).
    case logEndOffset
}

/// A partition's log on local disk (Kafka's `UnifiedLog` with `LocalLog`; Fjord has no tiered
/// storage): append, read and truncate over `LogSegments`, opened by `LogLoader`, made durable
/// by `LogFlusher`.
///
/// Invariants: `logStartOffset ≤ highWatermark ≤ logEndOffset`; only the active segment is
/// appended to. Offsets are assigned on append (client origin) by writing the batch's base
/// offset, never by re-encoding. Leader epochs (`leader-epoch-checkpoint`) and producer state
/// (`.snapshot`) live with the log, so truncation for replication keeps them consistent.
///
/// Thread-safety: every operation takes the log's mutex, and what runs under it never waits on
/// the disk: a `pwritev` to the page cache, a few `pread`s of batch headers, checkpoint files
/// written without an fsync. Every fsync (flush.messages, rolls, flush.ms, group commit for
/// `log.flush.on.ack`, close) runs after the lock is released (`LogFlusher`; checked by
/// `LogLockProbe` in debug builds). Structural changes to closed segments (truncation,
/// retention, DeleteRecords, the cleaner's swap) also serialise on `cleanerSwap`, so a swap can
/// fsync its renames without the log's lock and without racing a truncation.
///
/// Crash behaviour: records below the recovery point are on disk with their indexes; recovery
/// (`LogLoader`) scans from it and truncates a torn tail.
public final class LocalLog: Sendable {
    public let topicPartition: TopicPartition
    public let directory: FilePath
    private let state: Mutex<State>
    private let flusher: LogFlusher
    /// Held by structural changes to closed segments (see the type's doc).
    let cleanerSwap = Mutex(())

    struct State {
        var config: LogConfig
        var segments: LogSegments
        var logStartOffset: Int64
        var highWatermark: Int64
        var recoveryPoint: Int64
        var leaderEpochCache: LeaderEpochFileCache
        var producerState: ProducerStateManager
        /// `fjord.stream.versioning` partitions: stream → event offsets (nil otherwise).
        var streams: StreamIndex? = nil
        var unflushedMessages: Int64 = 0
        var lastFlushMs: Int64
        /// Compacted logs: where the part the cleaner has not yet read for its key map begins
        /// (Kafka's cleaner checkpoint); records below it are clean.
        var firstDirtyOffset: Int64 = 0
        /// Bumped by every truncation: a cleaning pass that began before one is abandoned.
        var truncations = 0
        /// When a tombstone the last cleaning pass kept may be removed (nil: none known).
        var nextTombstoneExpiryMs: Int64? = nil
        var closed = false
        /// Runs fsyncs of rolled segments off the append path (set by the LogManager); nil runs
        /// them on the appending thread once it has released the lock.
        var backgroundRunner: (@Sendable (@escaping @Sendable () -> Void) -> Void)? = nil
        /// Checkpoints written under the lock without an fsync; the next flush syncs them.
        var unsyncedCheckpoints: [SegmentFile] = []
        /// Rolled segments to fsync once the lock is released (no background runner).
        var pendingRollFlushes: [FlushTarget] = []

        var active: LogSegment { segments.active }
        var logEndOffset: Int64 { segments.logEndOffset }

        mutating func writeEpochCheckpoint() throws(StorageError) {
            if let file = try leaderEpochCache.write() { unsyncedCheckpoints.append(file) }
        }

        /// Everything a flush through the log end must sync; takes the unsynced checkpoints.
        mutating func flushTarget(directory: FilePath) -> FlushTarget {
            defer { unsyncedCheckpoints = [] }
            return FlushTarget(segmentFiles: segments.segments(after: recoveryPoint).flatMap(\.durableFiles),
                               checkpointFiles: unsyncedCheckpoints, directory: directory, offset: logEndOffset,
                               messages: unflushedMessages)
        }

        mutating func completeFlush(_ target: FlushTarget, nowMs: Int64?) {
            recoveryPoint = Swift.max(recoveryPoint, Swift.min(target.offset, logEndOffset))
            unflushedMessages = Swift.max(0, unflushedMessages - target.messages)
            if let nowMs { lastFlushMs = nowMs }
        }

        /// A failed sync: its checkpoints are still unsynced.
        mutating func failedFlush(_ target: FlushTarget) {
            unsyncedCheckpoints = target.checkpointFiles + unsyncedCheckpoints
        }
    }

    public var config: LogConfig { locked { $0.config } }

    /// Runs `body` under the log's lock, marked for `LogLockProbe`.
    func locked<Result, E: Error>(_ body: (inout sending State) throws(E) -> sending Result) throws(E) -> sending Result {
        try state.withLock { (s: inout sending State) throws(E) -> sending Result in
            LogLockProbe.enter()
            defer { LogLockProbe.exit() }
            return try body(&s)
        }
    }

    // MARK: Opening

    /// Opens the log in `directory`, recovering as needed (see `LogLoader`).
    public static func open(
        directory: FilePath, topicPartition: TopicPartition, config: LogConfig, recoveryPoint: Int64,
        logStartOffset: Int64, cleanShutdown: Bool, nowMs: Int64
    ) throws(StorageError) -> (LocalLog, LogLoadReport) {
        let loaded = try LogLoader.load(directory: directory, topicPartition: topicPartition, config: config, recoveryPoint: recoveryPoint,
                                        logStartOffset: logStartOffset, cleanShutdown: cleanShutdown, nowMs: nowMs)
        var report = loaded.report
        let logEnd = loaded.segments.logEndOffset
        var state = State(
            config: config, segments: loaded.segments, logStartOffset: loaded.logStartOffset, highWatermark: loaded.logStartOffset,
            recoveryPoint: loaded.recoveryPoint, leaderEpochCache: loaded.leaderEpochCache,
            producerState: loaded.producerState, lastFlushMs: nowMs)
        if config.streamVersioning {
            let (streams, scanned) = try LogLoader.rebuildStreamIndex(segments: loaded.segments, directory: directory, useCheckpoint: true)
            state.streams = streams
            if scanned > 0 { report.problems.append("\(topicPartition) stream index: scanned \(scanned) records after the checkpoint") }
        }
        let log = LocalLog(topicPartition: topicPartition, directory: directory, state: state,
                           flushedOffset: cleanShutdown ? logEnd : loaded.recoveryPoint)
        return (log, report)
    }

    private init(topicPartition: TopicPartition, directory: FilePath, state: consuming sending State, flushedOffset: Int64) {
        self.topicPartition = topicPartition
        self.directory = directory
        self.state = Mutex(state)
        self.flusher = LogFlusher(flushedOffset: flushedOffset)
    }

    // MARK: Offsets

    public var logStartOffset: Offset { Offset(locked { $0.logStartOffset }) }
    public var logEndOffset: Offset { Offset(locked { $0.logEndOffset }) }
    public var recoveryPoint: Offset { Offset(locked { $0.recoveryPoint }) }
    public var segmentCount: Int { locked { $0.segments.count } }
    public var sizeInBytes: Int64 { locked { $0.segments.sizeInBytes } }
    public var latestLeaderEpoch: LeaderEpoch? { locked { $0.leaderEpochCache.latestEpoch }.map { LeaderEpoch($0) } }

    /// The high watermark: the offset below which records are committed (replicated to the ISR).
    /// The broker (its `Partition`) sets it; the log keeps it within [logStartOffset, logEndOffset].
    public var highWatermark: HighWatermark {
        get { HighWatermark(Offset(locked { $0.highWatermark })) }
        set {
            locked { s in
                s.highWatermark = Swift.min(Swift.max(newValue.offset.rawValue, s.logStartOffset), s.logEndOffset)
            }
        }
    }

    /// The last stable offset: the first offset of the oldest open transaction, capped by the HW.
    public var lastStableOffset: Offset { Offset(locked { Self.lastStable($0) }) }

    private static func lastStable(_ s: borrowing State) -> Int64 {
        var first = s.highWatermark
        for entry in s.producerState.producers.values where entry.currentTransactionFirstOffset >= 0 {
            first = Swift.min(first, entry.currentTransactionFirstOffset)
        }
        return first
    }

    /// Forgets the producers whose last batch is older than `expirationMs`
    /// (`producer.id.expiration.ms`); their next batch starts a new sequence, as in Kafka.
    public func removeExpiredProducers(nowMs: Int64, expirationMs: Int64) {
        locked { $0.producerState.removeExpired(nowMs: nowMs, expirationMs: expirationMs) }
    }

    public var producers: [ProducerStateEntry] {
        locked { Array($0.producerState.producers.values).sorted { $0.producerID < $1.producerID } }
    }

    /// Applies a changed topic config. Turning `fjord.stream.versioning` on indexes the log's
    /// existing records (under the lock: appends wait); turning it off drops the index.
    public func updateConfig(_ config: LogConfig) throws(StorageError) {
        try locked { (s) throws(StorageError) in
            let wasVersioning = s.config.streamVersioning
            s.config = config
            if config.streamVersioning && !wasVersioning {
                s.streams = try LogLoader.rebuildStreamIndex(segments: s.segments, directory: directory, useCheckpoint: false).0
            } else if !config.streamVersioning && wasVersioning {
                s.streams = nil
                StreamIndex.removeCheckpoint(in: directory)
            }
        }
    }

    // MARK: Append

    /// Validates and appends the batches in `records` (a produce's partition data).
    ///
    /// Client appends are checked (CRC and header, size limits, keys on compacted topics, producer
    /// epoch and sequence) and get offsets from the log end; a retried duplicate batch writes
    /// nothing and returns its original offsets. The batches are written as received except the
    /// base offset and partition leader epoch (and, for LogAppendTime topics, the timestamp).
    public func append(
        _ records: ByteBuffer, leaderEpoch: LeaderEpoch, origin: AppendOrigin = .client, nowMs: Int64
    ) throws(StorageError) -> LogAppendInfo {
        var remaining = records
        var batches: [RecordBatch] = []
        do {
            while let batch = try RecordBatch.read(from: &remaining) {
                try batch.validate()
                batches.append(batch)
            }
        } catch {
            throw StorageError.corruptRecord("\(error)")
        }
        guard remaining.readableBytes == 0 else {
            throw StorageError.corruptRecord("\(remaining.readableBytes) trailing bytes are not a complete record batch")
        }
        guard !batches.isEmpty else { throw StorageError.corruptRecord("no record batches") }
        let config = locked { $0.config }
        for batch in batches {
            if batch.sizeInBytes > config.maxMessageBytes + RecordBatch.logOverhead || batch.sizeInBytes > config.segmentBytes {
                throw StorageError.recordTooLarge(size: batch.sizeInBytes, limit: Swift.min(config.maxMessageBytes, config.segmentBytes))
            }
            if config.compactEnabled && origin == .client && !batch.attributes.isControl {
                try Self.requireKeys(batch)
            }
        }
        let (info, rolled, flushDue) = try locked { (s) throws(StorageError) -> (LogAppendInfo, [FlushTarget], Bool) in
            guard !s.closed else { throw StorageError.logClosed("\(topicPartition)") }
            let info = try Self.appendLocked(&s, log: self, batches: batches, leaderEpoch: leaderEpoch.rawValue, origin: origin, nowMs: nowMs)
            defer { s.pendingRollFlushes = [] }
            return (info, s.pendingRollFlushes, s.unflushedMessages >= s.config.flushMessages)
        }
        // The lock is released: the fsyncs that this append made due run now.
        for target in rolled { try syncRolled(target) }
        if flushDue { try flush(nowMs: nowMs) }
        return info
    }

    private static func requireKeys(_ batch: RecordBatch) throws(StorageError) {
        do {
            var iterator = try batch.makeRecordIterator()
            while let record = try iterator.next() {
                if record.key == nil {
                    throw StorageError.invalidRecord("compacted topic cannot accept a record without a key")
                }
            }
        } catch let error as StorageError {
            throw error
        } catch {
            throw StorageError.corruptRecord("\(error)")
        }
    }

    private static func appendLocked(
        _ s: inout State, log: LocalLog, batches: [RecordBatch], leaderEpoch: Int32, origin: AppendOrigin, nowMs: Int64
    ) throws(StorageError) -> LogAppendInfo {
        // Idempotence: a single retried batch is answered with its original offsets.
        if origin == .client {
            for batch in batches {
                if case .duplicate(let first, let last) = try s.producerState.check(batch.header) {
                    guard batches.count == 1 else {
                        throw StorageError.outOfOrderSequence(producerID: batch.producerID, epoch: batch.producerEpoch,
                                                              sequence: batch.baseSequence, expected: -1)
                    }
                    return LogAppendInfo(firstOffset: Offset(first), lastOffset: Offset(last), maxTimestamp: -1, offsetOfMaxTimestamp: .none,
                                         logAppendTime: -1, batchCount: 1, recordCount: Int(batch.recordCount),
                                         validBytes: 0, isDuplicate: true)
                }
            }
        }
        // Stream topics: every expected version is checked before anything is written, so a
        // produce either appends all its records or none.
        var streamKeys: [[(key: [UInt8], offsetDelta: Int32)]] = []
        if origin == .client, let streams = s.streams {
            var pending: [[UInt8]: Int64] = [:]  // versions after this produce's earlier records
            var conflicts: [StreamVersionConflict] = []
            var recordIndex = 0
            for batch in batches where !batch.attributes.isControl {
                let keys = try streams.check(batch, recordIndexBase: recordIndex, pending: &pending, conflicts: &conflicts)
                recordIndex += Int(batch.recordCount)
                streamKeys.append(keys)
            }
            guard conflicts.isEmpty else { throw StorageError.wrongExpectedVersion(conflicts) }
        }
        var info = LogAppendInfo(firstOffset: .none, lastOffset: .none, maxTimestamp: RecordBatch.noTimestamp, offsetOfMaxTimestamp: .none,
                                 logAppendTime: s.config.logAppendTime ? nowMs : -1, batchCount: batches.count,
                                 recordCount: 0, validBytes: 0, isDuplicate: false)
        var checkedBatch = 0
        for var batch in batches {
            let logEnd = s.logEndOffset
            let base: Int64
            let epoch: Int32
            switch origin {
            case .client:
                base = logEnd
                epoch = leaderEpoch
                if s.config.logAppendTime { batch.setLogAppendTime(nowMs) }
            case .replication:
                guard batch.baseOffset >= logEnd else {
                    throw StorageError.corruptRecord("replicated batch at \(batch.baseOffset) is below the log end \(logEnd)")
                }
                base = batch.baseOffset
                epoch = batch.partitionLeaderEpoch
            }
            var header = batch.header
            header.baseOffset = base
            header.partitionLeaderEpoch = epoch
            try log.maybeRoll(&s, incomingSize: batch.sizeInBytes, lastOffset: header.lastOffset, maxTimestamp: header.maxTimestamp, nowMs: nowMs)
            try s.active.append(batch, assignedBaseOffset: base, leaderEpoch: epoch)
            if s.leaderEpochCache.assign(epoch: epoch, startOffset: base) {
                try s.writeEpochCheckpoint()
            }
            s.producerState.update(header)
            if s.streams != nil {
                if origin == .client && !batch.attributes.isControl && checkedBatch < streamKeys.count {
                    for entry in streamKeys[checkedBatch] { s.streams!.append(key: entry.key, offset: base + Int64(entry.offsetDelta)) }
                    s.streams!.advance(to: header.lastOffset + 1)
                    checkedBatch += 1
                } else {
                    try s.streams!.index(batch, baseOffset: base)
                }
            }
            if info.firstOffset == .none { info.firstOffset = Offset(base) }
            info.lastOffset = Offset(header.lastOffset)
            if header.maxTimestamp > info.maxTimestamp {
                info.maxTimestamp = header.maxTimestamp
                info.offsetOfMaxTimestamp = Offset(header.lastOffset)
            }
            info.recordCount += Int(header.recordCount)
            info.validBytes += batch.sizeInBytes
            s.unflushedMessages += Int64(header.recordCount)
        }
        return info
    }

    /// Rolls to a new active segment when the incoming batch would overflow it, its index is
    /// full, it is older than `segment.ms`, or the offset no longer fits a relative offset.
    ///
    /// Age is measured as Kafka's `timeWaitedForRoll`: the incoming batch's max timestamp minus
    /// the segment's first batch timestamp, or wall-clock time since creation when batches carry
    /// no timestamps, so producers with old CreateTime timestamps do not roll every batch.
    private func maybeRoll(_ s: inout State, incomingSize: Int, lastOffset: Int64, maxTimestamp: Int64, nowMs: Int64) throws(StorageError) {
        let active = s.active
        guard active.size > 0 else { return }
        let full = active.size + Int64(incomingSize) > Int64(s.config.segmentBytes)
        let waited: Int64
        if let first = active.rollingBasedTimestamp, first >= 0, maxTimestamp >= 0 {
            waited = maxTimestamp - first
        } else {
            waited = nowMs - active.createdMs
        }
        let aged = waited > s.config.segmentMs
        guard full || aged || active.isIndexFull || !active.canHold(offset: lastOffset) else { return }
        try self.roll(&s, nowMs: nowMs)
    }

    /// Starts a new active segment at the log end. The rolled segment, the producer snapshot and
    /// the stream checkpoint written here are fsynced off the lock (Kafka's scheduled
    /// "flush-log"): on the background runner, or by the caller once it releases the lock
    /// (`pendingRollFlushes`); the recovery point then moves past the rolled segment.
    private func roll(_ s: inout State, nowMs: Int64) throws(StorageError) {
        let newBase = s.logEndOffset
        let old = s.active
        try old.onBecomeInactive()
        let segment = try LogSegment(directory: old.directory, baseOffset: newBase, config: s.config, nowMs: nowMs, preallocateIndexes: true)
        s.segments.roll(to: segment)
        s.unsyncedCheckpoints.append(try s.producerState.takeSnapshot())
        if let streams = s.streams { s.unsyncedCheckpoints.append(try streams.write(to: directory)) }
        let recoveryPoint = s.recoveryPoint
        let rolled = s.segments.closed.filter { $0.nextOffset > recoveryPoint }.flatMap(\.durableFiles)
        let target = FlushTarget(segmentFiles: rolled, checkpointFiles: s.unsyncedCheckpoints, directory: directory, offset: newBase)
        s.unsyncedCheckpoints = []
        if let runner = s.backgroundRunner {
            runner { [self] in try? syncRolled(target) }
        } else {
            s.pendingRollFlushes.append(target)
        }
    }

    /// fsyncs what a roll made due (no lock held), then moves the recovery point past it.
    private func syncRolled(_ target: FlushTarget) throws(StorageError) {
        do {
            try LogFlusher.sync(target)
        } catch {
            locked { $0.failedFlush(target) }
            throw error
        }
        locked { $0.recoveryPoint = Swift.max($0.recoveryPoint, Swift.min(target.offset, $0.logEndOffset)) }
    }

    /// Lets the log flush rolled segments on `runner` instead of on the appending thread.
    public func setBackgroundRunner(_ runner: @escaping @Sendable (@escaping @Sendable () -> Void) -> Void) {
        locked { $0.backgroundRunner = runner }
    }

    /// Forces a roll (for tests and `segment.ms` checks by the log manager).
    public func roll(nowMs: Int64) throws(StorageError) {
        let rolled = try locked { (s) throws(StorageError) -> [FlushTarget] in
            if s.active.size > 0 { try self.roll(&s, nowMs: nowMs) }
            defer { s.pendingRollFlushes = [] }
            return s.pendingRollFlushes
        }
        for target in rolled { try syncRolled(target) }
    }

    // MARK: Read

    /// Reads from `offset` up to `maxBytes` (at least one whole batch with `minOneMessage`),
    /// never past `upperBound`. Throws `offsetOutOfRange` when `offset` is outside
    /// [logStartOffset, logEndOffset].
    public func read(from start: Offset, maxBytes: Int, upperBound: ReadUpperBound, minOneMessage: Bool) throws(StorageError) -> LogReadResult {
        let offset = start.rawValue
        return try locked { (s) throws(StorageError) -> LogReadResult in
            let logEnd = s.logEndOffset
            let bound: Int64
            switch upperBound {
            case .highWatermark: bound = s.highWatermark
            case .lastStableOffset: bound = Self.lastStable(s)
            case .logEndOffset: bound = logEnd
            }
            var result = LogReadResult(records: nil, highWatermark: HighWatermark(Offset(s.highWatermark)), logStartOffset: Offset(s.logStartOffset),
                                       logEndOffset: Offset(logEnd), lastStableOffset: Offset(Self.lastStable(s)))
            guard offset >= s.logStartOffset, offset <= logEnd else {
                throw StorageError.offsetOutOfRange(requested: offset, logStartOffset: s.logStartOffset, logEndOffset: logEnd)
            }
            guard offset < bound else { return result }
            var index = s.segments.floorIndex(offset)
            while index < s.segments.count {
                let segment = s.segments[index]
                guard segment.baseOffset < bound else { break }
                var maxPosition = segment.size
                if bound < segment.nextOffset, let position = try segment.translateOffset(bound) {
                    maxPosition = position.position
                }
                if let (slice, _) = try segment.read(startOffset: offset, maxSize: maxBytes, maxPosition: maxPosition, minOneMessage: minOneMessage) {
                    result.records = slice
                    return result
                }
                index += 1  // the offset lies in a gap at this segment's end (compaction): try the next
            }
            return result
        }
    }

    // MARK: Offsets by time and epoch

    /// Kafka's ListOffsets special timestamps.
    public static let earliestTimestamp: Int64 = -2
    public static let latestTimestamp: Int64 = -1
    public static let maxTimestamp: Int64 = -3
    public static let earliestLocalTimestamp: Int64 = -4
    /// KIP-1005 (ListOffsets v9+): the last offset in tiered storage; Fjord has none.
    public static let latestTieredTimestamp: Int64 = -5

    /// ListOffsets: the offset for a timestamp (or -1/-2/-3/-4), with the timestamp found and the
    /// leader epoch of that offset; nil when no record has a timestamp ≥ the target.
    public func offset(forTimestamp timestamp: Int64) throws(StorageError) -> (offset: Offset, timestamp: Int64, leaderEpoch: LeaderEpoch)? {
        let found = try locked { (s) throws(StorageError) -> (offset: Int64, timestamp: Int64, leaderEpoch: Int32)? in
            func epoch(at offset: Int64) -> Int32 {
                var found: Int32 = -1
                for entry in s.leaderEpochCache.entries where entry.startOffset <= offset { found = entry.epoch }
                return found
            }
            switch timestamp {
            case Self.earliestTimestamp, Self.earliestLocalTimestamp:
                return (s.logStartOffset, -1, epoch(at: s.logStartOffset))
            case Self.latestTimestamp:
                return (s.logEndOffset, -1, s.leaderEpochCache.latestEpoch ?? -1)
            case Self.maxTimestamp:
                // The segment holding the largest timestamp (the first such, as Kafka), then the
                // first record in it that carries it.
                var holder: LogSegment? = nil
                for segment in s.segments where segment.offsetOfMaxTimestampSoFar >= 0 {
                    if holder.map({ segment.maxTimestampSoFar > $0.maxTimestampSoFar }) ?? true { holder = segment }
                }
                guard let holder, let found = try holder.offsetOfMaxTimestamp() else { return nil }
                let offset = Swift.max(found.offset, s.logStartOffset)
                return (offset, found.timestamp, epoch(at: offset))
            default:
                for segment in s.segments where segment.maxTimestampSoFar >= timestamp {
                    if let found = try segment.findOffsetByTimestamp(timestamp, startingOffset: s.logStartOffset) {
                        return (found.offset, found.timestamp, epoch(at: found.offset))
                    }
                }
                return nil
            }
        }
        return found.map { (Offset($0.offset), $0.timestamp, LeaderEpoch($0.leaderEpoch)) }
    }

    /// Records that `epoch` starts at the log end (Kafka's `maybeAssignEpochStartOffset`, when
    /// this replica becomes leader): OffsetsForLeaderEpoch can then answer where the previous
    /// epoch ended before the new leader has appended anything. The checkpoint is on disk when
    /// this returns. Older or equal epochs change nothing.
    public func assignLeaderEpoch(_ epoch: LeaderEpoch) throws(StorageError) {
        try locked { (s) throws(StorageError) in
            if s.leaderEpochCache.assign(epoch: epoch.rawValue, startOffset: s.logEndOffset) {
                try s.writeEpochCheckpoint()
            }
        }
        try syncCheckpoints()
    }

    /// OffsetForLeaderEpoch: the end offset of `epoch` in this log.
    public func endOffset(forLeaderEpoch epoch: LeaderEpoch) -> (leaderEpoch: LeaderEpoch, endOffset: Offset) {
        locked { s in
            let found = s.leaderEpochCache.endOffset(for: epoch.rawValue, logEndOffset: s.logEndOffset)
            return (LeaderEpoch(found.epoch), Offset(found.endOffset))
        }
    }

    // MARK: Truncation and deletion

    /// Removes every offset ≥ `offset` (a follower truncating to its leader). Segments wholly
    /// above are deleted; leader epochs and producer state are truncated to match, and their
    /// checkpoints are on disk when this returns.
    public func truncate(to end: Offset) throws(StorageError) {
        let offset = end.rawValue
        try cleanerSwap.withLock { _ throws(StorageError) in
            try locked { (s) throws(StorageError) in
                guard offset < s.logEndOffset else { return }
                let target = Swift.max(offset, s.logStartOffset)
                while s.segments.count > 1 && s.active.baseOffset >= target {
                    let removed = s.segments.removeActive()
                    removed.close()
                    removed.deleteFiles()
                }
                try s.active.truncate(to: target)
                try s.active.reopenAsActive(maxIndexSize: s.config.segmentIndexBytes)
                s.highWatermark = Swift.min(s.highWatermark, s.logEndOffset)
                s.recoveryPoint = Swift.min(s.recoveryPoint, s.logEndOffset)
                s.leaderEpochCache.truncateFromEnd(s.logEndOffset)
                try s.writeEpochCheckpoint()
                try LogLoader.replayProducerState(s.producerState, segments: s.segments)
                let end = s.logEndOffset
                s.streams?.truncate(from: end)
                s.firstDirtyOffset = Swift.min(s.firstDirtyOffset, end)
                s.truncations += 1
            }
        }
        flusher.lower(to: logEndOffset.rawValue)
        try syncCheckpoints()
    }

    /// Deletes everything and restarts the log at `offset` (a follower far behind its leader's
    /// log start).
    public func truncateFullyAndStart(at start: Offset, nowMs: Int64) throws(StorageError) {
        let offset = start.rawValue
        try cleanerSwap.withLock { _ throws(StorageError) in
            try locked { (s) throws(StorageError) in
                for segment in s.segments {
                    segment.close()
                    segment.deleteFiles()
                }
                s.segments.reset(to: try LogSegment(directory: directory, baseOffset: offset, config: s.config, nowMs: nowMs, preallocateIndexes: true))
                s.logStartOffset = offset
                s.firstDirtyOffset = offset
                s.truncations += 1
                s.highWatermark = offset
                s.recoveryPoint = offset
                s.leaderEpochCache.clear()
                try s.writeEpochCheckpoint()
                s.producerState.deleteSnapshots(after: -1)
                s.producerState.reset(at: offset)
                if s.streams != nil { s.streams = StreamIndex(startingAt: offset) }
            }
        }
        flusher.reset(to: offset)
        try syncCheckpoints()
    }

    /// DeleteRecords: moves the log start offset up to `offset` (≤ high watermark) and deletes
    /// segments wholly below it. Returns the new log start offset and the deleted segments' files.
    public func deleteRecords(before start: Offset) throws(StorageError) -> (logStartOffset: Offset, deletedFiles: [FilePath]) {
        let offset = start.rawValue
        let result = try cleanerSwap.withLock { _ throws(StorageError) -> (logStartOffset: Int64, deletedFiles: [FilePath]) in
            try locked { (s) throws(StorageError) -> (logStartOffset: Int64, deletedFiles: [FilePath]) in
                guard offset <= s.highWatermark else {
                    throw StorageError.offsetOutOfRange(requested: offset, logStartOffset: s.logStartOffset, logEndOffset: s.highWatermark)
                }
                if offset > s.logStartOffset {
                    s.logStartOffset = offset
                    s.leaderEpochCache.truncateFromStart(offset)
                    try s.writeEpochCheckpoint()
                }
                let start = s.logStartOffset
                let deleted = try Self.deleteSegments(&s) { _, next in next <= start }
                return (s.logStartOffset, deleted)
            }
        }
        try syncCheckpoints()
        return (Offset(result.logStartOffset), result.deletedFiles)
    }

    /// Deletes closed segments (never the active one) while `shouldDelete(segment, nextSegmentBase)`
    /// holds, oldest first. Files are renamed `.deleted`; the caller removes them after
    /// `file.delete.delay.ms`.
    private static func deleteSegments(_ s: inout State, shouldDelete: (LogSegment, Int64) -> Bool) throws(StorageError) -> [FilePath] {
        var deleted: [FilePath] = []
        while s.segments.count > 1 {
            let segment = s.segments.oldest
            let nextBase = s.segments[1].baseOffset
            guard shouldDelete(segment, nextBase) else { break }
            try segment.renameToDeleted()
            deleted.append(contentsOf: segment.deletedPaths)
            _ = s.segments.removeOldest()
            s.logStartOffset = Swift.max(s.logStartOffset, nextBase)
        }
        if !deleted.isEmpty {
            s.highWatermark = Swift.max(s.highWatermark, s.logStartOffset)
            s.leaderEpochCache.truncateFromStart(s.logStartOffset)
            try s.writeEpochCheckpoint()
            s.producerState.deleteSnapshots(before: s.segments.oldest.baseOffset)
        }
        return deleted
    }

    /// Retention (`retention.ms`, `retention.bytes`, and segments below the log start offset):
    /// deletes whole closed segments, oldest first, and only below the high watermark.
    /// Returns the files renamed `.deleted`.
    public func deleteOldSegments(nowMs: Int64) throws(StorageError) -> [FilePath] {
        let deleted = try cleanerSwap.withLock { _ throws(StorageError) -> [FilePath] in
            try locked { (s) throws(StorageError) -> [FilePath] in
                guard !s.closed else { return [] }
                let config = s.config
                let highWatermark = s.highWatermark
                let start = s.logStartOffset
                var deleted = try Self.deleteSegments(&s) { _, next in next <= start }
                guard config.deleteEnabled else { return deleted }
                if config.retentionMs >= 0 {
                    deleted += try Self.deleteSegments(&s) { segment, next in
                        next <= highWatermark && nowMs - segment.largestTimestamp() > config.retentionMs
                    }
                }
                if config.retentionBytes >= 0 {
                    var excess = s.segments.sizeInBytes - config.retentionBytes
                    deleted += try Self.deleteSegments(&s) { segment, next in
                        guard next <= highWatermark, excess - segment.size >= 0 else { return false }
                        excess -= segment.size
                        return true
                    }
                }
                return deleted
            }
        }
        if !deleted.isEmpty { try syncCheckpoints() }
        return deleted
    }

    // MARK: Durability

    /// fsyncs everything appended so far (the active segment, any unflushed closed ones, and the
    /// checkpoints written since the last flush), without holding the log's lock.
    public func flush(nowMs: Int64) throws(StorageError) {
        _ = try performFlush(nowMs: nowMs)
    }

    /// One flush through the log end: pick under the lock, fsync outside it, then advance the
    /// recovery point. Returns the offset made durable.
    private func performFlush(nowMs: Int64?) throws(StorageError) -> Int64 {
        let target = locked { $0.flushTarget(directory: directory) }
        do {
            try LogFlusher.sync(target)
        } catch {
            locked { $0.failedFlush(target) }
            throw error
        }
        locked { $0.completeFlush(target, nowMs: nowMs) }
        flusher.markFlushed(through: target.offset)
        return target.offset
    }

    /// fsyncs the checkpoints written since the last flush (after a truncation or deletion).
    private func syncCheckpoints() throws(StorageError) {
        let target = locked { s in
            defer { s.unsyncedCheckpoints = [] }
            return FlushTarget(checkpointFiles: s.unsyncedCheckpoints, directory: directory, offset: -1)
        }
        guard !target.isEmpty else { return }
        do {
            try LogFlusher.sync(target)
        } catch {
            locked { $0.failedFlush(target) }
            throw error
        }
    }

    /// Flushes when `flush.ms` has passed since the last flush (the log manager calls this).
    public func flushIfDue(nowMs: Int64) throws(StorageError) {
        let due = locked { s in s.unflushedMessages > 0 && nowMs - s.lastFlushMs >= s.config.flushMs }
        if due { try flush(nowMs: nowMs) }
    }

    /// Suspends until everything below `offset` is on disk, sharing fsyncs between callers
    /// (group commit, see `LogFlusher`). `runFlush` performs a flush off the caller's thread
    /// (the log manager's I/O queue).
    public func flushed(through offset: Offset, runFlush: @escaping @Sendable (@escaping @Sendable () -> Void) -> Void) async throws {
        try await flusher.flushed(through: offset.rawValue, runFlush: runFlush) { [self] () throws(StorageError) -> Int64 in
            try performFlush(nowMs: nil)
        }
    }

    // MARK: Close

    /// Trims the active segment's indexes, writes the epoch, producer and stream checkpoints and
    /// fsyncs everything (outside the lock). Appends fail with `logClosed` from the moment
    /// `close()` begins.
    public func close(nowMs: Int64) throws(StorageError) {
        let target = try locked { (s) throws(StorageError) -> FlushTarget? in
            guard !s.closed else { return nil }
            s.closed = true
            try s.active.onBecomeInactive()
            try s.writeEpochCheckpoint()
            s.unsyncedCheckpoints.append(try s.producerState.takeSnapshot())
            if let streams = s.streams { s.unsyncedCheckpoints.append(try streams.write(to: directory)) }
            return s.flushTarget(directory: directory)
        }
        guard let target else { return }
        try LogFlusher.sync(target)
        locked { s in
            s.completeFlush(target, nowMs: nowMs)
            for segment in s.segments { segment.close() }
        }
        flusher.markFlushed(through: target.offset)
    }

    /// Deletes the whole partition directory (topic deletion). The log must not be used after.
    public func deleteAll() {
        locked { s in
            for segment in s.segments {
                segment.close()
                segment.deleteFiles()
            }
            s.closed = true
        }
        if let names = try? LogLoader.listDirectory(directory) {
            for name in names { unlink(directory.appending(name).string) }
        }
        rmdir(directory.string)
    }
}
