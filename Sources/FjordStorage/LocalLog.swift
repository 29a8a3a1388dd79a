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
    public var firstOffset: Int64
    public var lastOffset: Int64
    /// The largest timestamp appended and the offset holding it.
    public var maxTimestamp: Int64
    public var offsetOfMaxTimestamp: Int64
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
    public var highWatermark: Int64
    public var logStartOffset: Int64
    public var logEndOffset: Int64
    public var lastStableOffset: Int64
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

/// What opening a log found and fixed.
public struct LogLoadReport: Sendable {
    public var recoveredSegments: Int = 0
    public var truncatedBytes: Int64 = 0
    public var problems: [String] = []
    public var rebuiltIndexes: Int = 0
}

/// A partition's log on local disk (Kafka's `UnifiedLog` with `LocalLog`; Fjord has no tiered
/// storage): an ordered list of `LogSegment`s, the last one active.
///
/// Invariants: segments are sorted by base offset with no overlapping offsets;
/// `logStartOffset ≤ highWatermark ≤ logEndOffset`; only the active segment is appended to.
/// Offsets are assigned on append (client origin) by writing the batch's base offset, never by
/// re-encoding. Leader epochs (`leader-epoch-checkpoint`) and producer state (`.snapshot`) live
/// with the log, so truncation for replication keeps them consistent.
///
/// Thread-safety: every operation takes the log's mutex; operations are short (a `pwritev` to the
/// page cache, a few `pread`s of batch headers). `fsync` for `log.flush.on.ack` runs outside the
/// lock through `flushed(through:)`.
public final class LocalLog: Sendable {
    public let topicPartition: TopicPartition
    public let directory: FilePath
    private let state: Mutex<State>
    private let durability: Mutex<DurabilityState>

    struct State {
        var config: LogConfig
        var segments: [LogSegment]
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
        /// them inline.
        var backgroundRunner: (@Sendable (@escaping @Sendable () -> Void) -> Void)? = nil

        var active: LogSegment { segments[segments.count - 1] }
        var logEndOffset: Int64 { active.nextOffset }
    }

    struct DurabilityState {
        var flushedOffset: Int64
        var flushing = false
        var waiters: [(offset: Int64, continuation: CheckedContinuation<Void, any Error>)] = []
    }

    public var config: LogConfig { state.withLock { $0.config } }

    // MARK: Opening and recovery

    /// Opens the log in `directory`, recovering as needed (Kafka's `LogLoader`).
    ///
    /// The active (last) segment is always scanned batch by batch (length, CRC, contiguous
    /// offsets) with its indexes rebuilt. Closed segments are trusted after an index sanity check
    /// when `cleanShutdown`; otherwise every segment from the one holding `recoveryPoint` on is
    /// scanned. The first bad batch and everything after it are truncated and reported. Leftover
    /// `.deleted`, `.cleaned`, `.swap` and `.tmp` files are removed or completed.
    public static func open(
        directory: FilePath, topicPartition: TopicPartition, config: LogConfig, recoveryPoint: Int64,
        logStartOffset: Int64, cleanShutdown: Bool, nowMs: Int64
    ) throws(StorageError) -> (LocalLog, LogLoadReport) {
        mkdir(directory.string, 0o755)
        var report = LogLoadReport()
        let names = try listDirectory(directory)
        var baseOffsets: [Int64] = []
        for name in names {
            if name == "cleaning" {
                // Scratch space of a compaction that did not finish: its output was never swapped in.
                LogCleaner.removeDirectory(directory.appending(name))
                continue
            }
            if name.hasSuffix(".deleted") || name.hasSuffix(".cleaned") || name.hasSuffix(".tmp") {
                unlink(directory.appending(name).string)
                continue
            }
            if name.hasSuffix(".swap") {
                // A compaction that crashed after writing its replacement: finish the swap.
                let final = String(name.dropLast(".swap".count))
                rename(directory.appending(name).string, directory.appending(final).string)
            }
        }
        for name in try listDirectory(directory) where name.hasSuffix(".log") {
            if let offset = Int64(name.dropLast(4)), name.count == 24 {
                baseOffsets.append(offset)
            }
        }
        // Index files without a log are orphans.
        for name in try listDirectory(directory) where name.hasSuffix(".index") || name.hasSuffix(".timeindex") {
            let stem = name.hasSuffix(".index") ? name.dropLast(6) : name.dropLast(10)
            if let offset = Int64(stem), !baseOffsets.contains(offset) {
                unlink(directory.appending(name).string)
            }
        }
        baseOffsets.sort()
        let epochCache = try LeaderEpochFileCache(path: directory.appending("leader-epoch-checkpoint"))
        let epochCacheWasEmpty = epochCache.entries.isEmpty
        let producerState = ProducerStateManager(directory: directory)
        var segments: [LogSegment] = []
        let maxBatch = Swift.max(config.maxMessageBytes, config.segmentBytes) + RecordBatch.logOverhead
        var needsRecovery = !cleanShutdown
        for (index, base) in baseOffsets.enumerated() {
            let isLast = index == baseOffsets.count - 1
            let segment = try LogSegment(directory: directory, baseOffset: base, config: config, nowMs: nowMs, preallocateIndexes: false)
            let nextBase = isLast ? Int64.max : baseOffsets[index + 1]
            // The active segment is always scanned (mmap + CRC32C: well under a second even for
            // a full 1 GiB segment), since that is where torn writes and tail damage live; closed
            // segments are scanned only past the recovery point after an unclean shutdown.
            var recover = isLast || (needsRecovery && nextBase > recoveryPoint)
            if !recover {
                if try !segment.loadAfterCleanShutdown(maxBatchSize: maxBatch) {
                    report.problems.append("\(topicPartition) segment \(base): index inconsistent with log, rebuilding")
                    report.rebuiltIndexes += 1
                    recover = true
                }
            }
            if recover {
                report.recoveredSegments += 1
                let result = try segment.recover(maxBatchSize: maxBatch, contiguousOffsets: !config.compactEnabled) { header in
                    if epochCacheWasEmpty || !cleanShutdown {
                        epochCache.assign(epoch: header.partitionLeaderEpoch, startOffset: header.baseOffset)
                    }
                }
                if result.truncatedBytes > 0 {
                    report.truncatedBytes += result.truncatedBytes
                    report.problems.append(
                        "\(topicPartition) segment \(base): truncated \(result.truncatedBytes) bytes at position \(result.validBytes) (offsets from \(segment.nextOffset) on): \(result.problem ?? "incomplete batch")")
                    // Everything after a damaged segment is unreachable: drop later segments.
                    for later in baseOffsets[(index + 1)...] {
                        for suffix in [".log", ".index", ".timeindex"] {
                            unlink(directory.appending(LogSegment.fileName(later, suffix)).string)
                        }
                        report.problems.append("\(topicPartition) segment \(later): removed, it followed a truncated segment")
                    }
                    segments.append(segment)
                    needsRecovery = true
                    break
                }
            }
            segments.append(segment)
        }
        // Drop empty non-active segments that recovery emptied, keep at least one segment.
        if segments.isEmpty {
            let start = Swift.max(0, logStartOffset)
            segments.append(try LogSegment(directory: directory, baseOffset: start, config: config, nowMs: nowMs, preallocateIndexes: true))
        } else {
            try segments[segments.count - 1].reopenAsActive(maxIndexSize: config.segmentIndexBytes)
        }
        let logEnd = segments[segments.count - 1].nextOffset
        var start = Swift.max(logStartOffset, segments[0].baseOffset)
        if start > logEnd { start = logEnd }
        epochCache.truncateFromEnd(logEnd)
        epochCache.truncateFromStart(start)
        try epochCache.flush()

        // Producer state: newest snapshot ≤ log end, then replay batch headers after it.
        let snapshotOffset = producerState.loadLatestSnapshot(upTo: logEnd)
        var replayFrom = Swift.max(snapshotOffset, segments[0].baseOffset)
        if snapshotOffset < segments[0].baseOffset { producerState.reset(at: segments[0].baseOffset) }
        for segment in segments where segment.nextOffset > replayFrom {
            var position: Int64 = 0
            if let found = try segment.translateOffset(replayFrom) { position = found.position } else { continue }
            while let header = try segment.readHeader(at: position) {
                if header.baseOffset >= replayFrom { producerState.update(header) }
                position += Int64(header.sizeInBytes)
            }
            replayFrom = segment.nextOffset
        }

        let log = LocalLog(
            topicPartition: topicPartition, directory: directory,
            state: State(
                config: config, segments: segments, logStartOffset: start, highWatermark: start,
                recoveryPoint: Swift.min(recoveryPoint, logEnd), leaderEpochCache: epochCache,
                producerState: producerState, lastFlushMs: nowMs),
            flushedOffset: cleanShutdown ? logEnd : Swift.min(recoveryPoint, logEnd))
        if config.streamVersioning {
            try log.state.withLock { (s) throws(StorageError) in
                let scanned = try Self.rebuildStreams(&s, directory: directory, useCheckpoint: true)
                if scanned > 0 { report.problems.append("\(topicPartition) stream index: scanned \(scanned) records after the checkpoint") }
            }
        }
        return (log, report)
    }

    /// Builds the stream index: the checkpoint when it is valid (not past the log end, not
    /// before its start), then the log after it; returns how many records were scanned.
    private static func rebuildStreams(_ s: inout State, directory: FilePath, useCheckpoint: Bool) throws(StorageError) -> Int64 {
        let first = s.segments[0].baseOffset
        var streams = StreamIndex(startingAt: first)
        if useCheckpoint, let loaded = try StreamIndex.load(from: directory), loaded.nextOffset <= s.logEndOffset, loaded.nextOffset >= first {
            streams = loaded
        }
        var from = streams.nextOffset
        var scanned: Int64 = 0
        for segment in s.segments where segment.nextOffset > from {
            guard let found = try segment.translateOffset(from) else { continue }
            var position = found.position
            while let header = try segment.readHeader(at: position) {
                if header.baseOffset >= from {
                    var bytes = ByteBuffer()
                    _ = try segment.file.read(at: position, count: header.sizeInBytes, into: &bytes)
                    let batch: RecordBatch
                    do {
                        guard let read = try RecordBatch.read(from: &bytes) else { break }
                        batch = read
                    } catch {
                        throw StorageError.corruptRecord("stream index rebuild at \(header.baseOffset): \(error)")
                    }
                    try streams.index(batch, baseOffset: header.baseOffset)
                    scanned += Int64(header.recordCount)
                }
                position += Int64(header.sizeInBytes)
            }
            from = segment.nextOffset
        }
        streams.advance(to: s.logEndOffset)
        s.streams = streams
        return scanned
    }

    /// A stream's version and events (revision, offset) on a `fjord.stream.versioning` log;
    /// nil when the log does not version streams.
    public func streamEvents(key: [UInt8], from revision: Int64, limit: Int, forwards: Bool)
        -> (version: Int64, events: [(revision: Int64, offset: Int64)])? {
        state.withLock { s in
            guard let streams = s.streams else { return nil }
            return (streams.version(of: key), streams.events(of: key, from: revision, limit: limit, forwards: forwards))
        }
    }

    /// The revisions of events given by (stream, offset), nil for an event that is not there;
    /// nil altogether when the log does not version streams.
    public func streamRevisions(_ events: [(key: [UInt8], offset: Int64)]) -> [Int64?]? {
        state.withLock { s in
            guard let streams = s.streams else { return nil }
            return events.map { streams.revision(of: $0.key, at: $0.offset) }
        }
    }

    /// The version of one stream (-1: no event), or nil when the log does not version streams.
    public func streamVersion(key: [UInt8]) -> Int64? {
        state.withLock { $0.streams?.version(of: key) }
    }

    private init(topicPartition: TopicPartition, directory: FilePath, state: consuming sending State, flushedOffset: Int64) {
        self.topicPartition = topicPartition
        self.directory = directory
        self.state = Mutex(state)
        self.durability = Mutex(DurabilityState(flushedOffset: flushedOffset))
    }

    static func listDirectory(_ directory: FilePath) throws(StorageError) -> [String] {
        guard let dir = opendir(directory.string) else {
            throw StorageError.io(operation: "opendir", path: directory.string, errno: Errno(rawValue: errno))
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    // MARK: Offsets

    public var logStartOffset: Int64 { state.withLock { $0.logStartOffset } }
    public var logEndOffset: Int64 { state.withLock { $0.logEndOffset } }
    public var recoveryPoint: Int64 { state.withLock { $0.recoveryPoint } }
    public var segmentCount: Int { state.withLock { $0.segments.count } }
    public var sizeInBytes: Int64 { state.withLock { $0.segments.reduce(0) { $0 + $1.size } } }
    public var latestLeaderEpoch: Int32? { state.withLock { $0.leaderEpochCache.latestEpoch } }

    /// The high watermark: the offset below which records are committed (replicated to the ISR).
    /// The broker sets it; the log keeps it within [logStartOffset, logEndOffset].
    public var highWatermark: Int64 {
        get { state.withLock { $0.highWatermark } }
        set {
            state.withLock { s in
                s.highWatermark = Swift.min(Swift.max(newValue, s.logStartOffset), s.logEndOffset)
            }
        }
    }

    /// The last stable offset: the first offset of the oldest open transaction, capped by the HW.
    public var lastStableOffset: Int64 { state.withLock { Self.lastStable($0) } }

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
        state.withLock { $0.producerState.removeExpired(nowMs: nowMs, expirationMs: expirationMs) }
    }

    public var producers: [ProducerStateEntry] {
        state.withLock { Array($0.producerState.producers.values).sorted { $0.producerID < $1.producerID } }
    }

    /// Applies a changed topic config. Turning `fjord.stream.versioning` on indexes the log's
    /// existing records (under the lock: appends wait); turning it off drops the index.
    public func updateConfig(_ config: LogConfig) throws(StorageError) {
        try state.withLock { (s) throws(StorageError) in
            let wasVersioning = s.config.streamVersioning
            s.config = config
            if config.streamVersioning && !wasVersioning {
                _ = try Self.rebuildStreams(&s, directory: directory, useCheckpoint: false)
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
        _ records: ByteBuffer, leaderEpoch: Int32, origin: AppendOrigin = .client, nowMs: Int64
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
        let config = state.withLock { $0.config }
        for batch in batches {
            if batch.sizeInBytes > config.maxMessageBytes + RecordBatch.logOverhead || batch.sizeInBytes > config.segmentBytes {
                throw StorageError.recordTooLarge(size: batch.sizeInBytes, limit: Swift.min(config.maxMessageBytes, config.segmentBytes))
            }
            if config.compactEnabled && origin == .client && !batch.attributes.isControl {
                try Self.requireKeys(batch)
            }
        }
        return try state.withLock { (s) throws(StorageError) -> LogAppendInfo in
            guard !s.closed else { throw StorageError.logClosed("\(topicPartition)") }
            return try Self.appendLocked(&s, log: self, batches: batches, leaderEpoch: leaderEpoch, origin: origin, nowMs: nowMs)
        }
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
                    return LogAppendInfo(firstOffset: first, lastOffset: last, maxTimestamp: -1, offsetOfMaxTimestamp: -1,
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
        var info = LogAppendInfo(firstOffset: -1, lastOffset: -1, maxTimestamp: RecordBatch.noTimestamp, offsetOfMaxTimestamp: -1,
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
                try s.leaderEpochCache.flush()
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
            if info.firstOffset < 0 { info.firstOffset = base }
            info.lastOffset = header.lastOffset
            if header.maxTimestamp > info.maxTimestamp {
                info.maxTimestamp = header.maxTimestamp
                info.offsetOfMaxTimestamp = header.lastOffset
            }
            info.recordCount += Int(header.recordCount)
            info.validBytes += batch.sizeInBytes
            s.unflushedMessages += Int64(header.recordCount)
        }
        if s.unflushedMessages >= s.config.flushMessages {
            try flushLocked(&s, nowMs: nowMs)
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

    private func roll(_ s: inout State, nowMs: Int64) throws(StorageError) {
        let newBase = s.logEndOffset
        let old = s.active
        try old.onBecomeInactive()
        let directory = old.directory
        let segment = try LogSegment(directory: directory, baseOffset: newBase, config: s.config, nowMs: nowMs, preallocateIndexes: true)
        s.segments.append(segment)
        try s.producerState.takeSnapshot()
        try s.streams?.write(to: directory)
        // Flush the rolled segment off the append path (Kafka's scheduled "flush-log"), then
        // advance the recovery point past it.
        let files = s.segments.filter { $0.baseOffset < newBase && $0.nextOffset > s.recoveryPoint }.map(\.file)
        let flush: @Sendable () -> Void = { [self] in
            for file in files { try? file.sync() }
            state.withLock { $0.recoveryPoint = Swift.max($0.recoveryPoint, newBase) }
        }
        if let runner = s.backgroundRunner { runner(flush) } else {
            for file in files { try file.sync() }
            s.recoveryPoint = Swift.max(s.recoveryPoint, newBase)
        }
    }

    /// Lets the log flush rolled segments on `runner` instead of inline.
    public func setBackgroundRunner(_ runner: @escaping @Sendable (@escaping @Sendable () -> Void) -> Void) {
        state.withLock { $0.backgroundRunner = runner }
    }

    /// Forces a roll (for tests and `segment.ms` checks by the log manager).
    public func roll(nowMs: Int64) throws(StorageError) {
        try state.withLock { (s) throws(StorageError) in
            if s.active.size > 0 { try self.roll(&s, nowMs: nowMs) }
        }
    }

    // MARK: Read

    /// Reads from `offset` up to `maxBytes` (at least one whole batch with `minOneMessage`),
    /// never past `upperBound`. Throws `offsetOutOfRange` when `offset` is outside
    /// [logStartOffset, logEndOffset].
    public func read(from offset: Int64, maxBytes: Int, upperBound: ReadUpperBound, minOneMessage: Bool) throws(StorageError) -> LogReadResult {
        try state.withLock { (s) throws(StorageError) -> LogReadResult in
            let logEnd = s.logEndOffset
            let bound: Int64
            switch upperBound {
            case .highWatermark: bound = s.highWatermark
            case .lastStableOffset: bound = Self.lastStable(s)
            case .logEndOffset: bound = logEnd
            }
            var result = LogReadResult(records: nil, highWatermark: s.highWatermark, logStartOffset: s.logStartOffset,
                                       logEndOffset: logEnd, lastStableOffset: Self.lastStable(s))
            guard offset >= s.logStartOffset, offset <= logEnd else {
                throw StorageError.offsetOutOfRange(requested: offset, logStartOffset: s.logStartOffset, logEndOffset: logEnd)
            }
            guard offset < bound else { return result }
            var index = Self.segmentIndex(s.segments, containing: offset)
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

    private static func segmentIndex(_ segments: [LogSegment], containing offset: Int64) -> Int {
        var low = 0
        var high = segments.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if segments[mid].baseOffset <= offset { low = mid } else { high = mid - 1 }
        }
        return low
    }

    // MARK: Offsets by time and epoch

    /// Kafka's ListOffsets special timestamps.
    public static let earliestTimestamp: Int64 = -2
    public static let latestTimestamp: Int64 = -1
    public static let maxTimestamp: Int64 = -3
    public static let earliestLocalTimestamp: Int64 = -4

    /// ListOffsets: the offset for a timestamp (or -1/-2/-3/-4), with the timestamp found and the
    /// leader epoch of that offset; nil when no record has a timestamp ≥ the target.
    public func offset(forTimestamp timestamp: Int64) throws(StorageError) -> (offset: Int64, timestamp: Int64, leaderEpoch: Int32)? {
        try state.withLock { (s) throws(StorageError) -> (offset: Int64, timestamp: Int64, leaderEpoch: Int32)? in
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
                var best: (Int64, Int64) = (-1, -1)
                for segment in s.segments where segment.maxTimestampSoFar > best.1 {
                    best = (segment.offsetOfMaxTimestampSoFar, segment.maxTimestampSoFar)
                }
                guard best.0 >= 0 else { return nil }
                // Kafka answers with the first offset of the batch holding the max timestamp.
                let index = Self.segmentIndex(s.segments, containing: best.0)
                let batch = try s.segments[index].translateOffset(best.0)
                let offset = batch?.baseOffset ?? best.0
                return (Swift.max(offset, s.logStartOffset), best.1, epoch(at: offset))
            default:
                for segment in s.segments where segment.maxTimestampSoFar >= timestamp {
                    if let found = try segment.findOffsetByTimestamp(timestamp, startingOffset: s.logStartOffset) {
                        return (found.offset, found.timestamp, epoch(at: found.offset))
                    }
                }
                return nil
            }
        }
    }

    /// OffsetForLeaderEpoch: the end offset of `epoch` in this log.
    public func endOffset(forLeaderEpoch epoch: Int32) -> (leaderEpoch: Int32, endOffset: Int64) {
        state.withLock { s in
            let found = s.leaderEpochCache.endOffset(for: epoch, logEndOffset: s.logEndOffset)
            return (found.epoch, found.endOffset)
        }
    }

    // MARK: Truncation and deletion

    /// Removes every offset ≥ `offset` (a follower truncating to its leader). Segments wholly
    /// above are deleted; leader epochs and producer state are truncated to match.
    public func truncate(to offset: Int64) throws(StorageError) {
        try state.withLock { (s) throws(StorageError) in
            guard offset < s.logEndOffset else { return }
            let target = Swift.max(offset, s.logStartOffset)
            while s.segments.count > 1 && s.segments[s.segments.count - 1].baseOffset >= target {
                let removed = s.segments.removeLast()
                removed.close()
                removed.deleteFiles()
            }
            try s.active.truncate(to: target)
            try s.active.reopenAsActive(maxIndexSize: s.config.segmentIndexBytes)
            s.highWatermark = Swift.min(s.highWatermark, s.logEndOffset)
            s.recoveryPoint = Swift.min(s.recoveryPoint, s.logEndOffset)
            s.leaderEpochCache.truncateFromEnd(s.logEndOffset)
            try s.leaderEpochCache.flush()
            try Self.rebuildProducerState(&s)
            let end = s.logEndOffset
            s.streams?.truncate(from: end)
            s.firstDirtyOffset = Swift.min(s.firstDirtyOffset, end)
            s.truncations += 1
        }
        durability.withLock { $0.flushedOffset = Swift.min($0.flushedOffset, logEndOffset) }
    }

    private static func rebuildProducerState(_ s: inout State) throws(StorageError) {
        let end = s.logEndOffset
        s.producerState.deleteSnapshots(after: end)
        let snapshot = s.producerState.loadLatestSnapshot(upTo: end)
        var from = Swift.max(snapshot, s.segments[0].baseOffset)
        if snapshot < s.segments[0].baseOffset { s.producerState.reset(at: s.segments[0].baseOffset) }
        for segment in s.segments where segment.nextOffset > from {
            guard let found = try segment.translateOffset(from) else { continue }
            var position = found.position
            while let header = try segment.readHeader(at: position) {
                if header.baseOffset >= from { s.producerState.update(header) }
                position += Int64(header.sizeInBytes)
            }
            from = segment.nextOffset
        }
    }

    /// Deletes everything and restarts the log at `offset` (a follower far behind its leader's
    /// log start).
    public func truncateFullyAndStart(at offset: Int64, nowMs: Int64) throws(StorageError) {
        try state.withLock { (s) throws(StorageError) in
            for segment in s.segments {
                segment.close()
                segment.deleteFiles()
            }
            let directory = s.active.directory
            s.segments = [try LogSegment(directory: directory, baseOffset: offset, config: s.config, nowMs: nowMs, preallocateIndexes: true)]
            s.logStartOffset = offset
            s.firstDirtyOffset = offset
            s.truncations += 1
            s.highWatermark = offset
            s.recoveryPoint = offset
            s.leaderEpochCache.clear()
            try s.leaderEpochCache.flush()
            s.producerState.deleteSnapshots(after: -1)
            s.producerState.reset(at: offset)
            if s.streams != nil { s.streams = StreamIndex(startingAt: offset) }
        }
        durability.withLock { $0.flushedOffset = offset }
    }

    /// DeleteRecords: moves the log start offset up to `offset` (≤ high watermark) and deletes
    /// segments wholly below it. Returns the new log start offset and the deleted segments' files.
    public func deleteRecords(before offset: Int64) throws(StorageError) -> (logStartOffset: Int64, deletedFiles: [FilePath]) {
        try state.withLock { (s) throws(StorageError) -> (logStartOffset: Int64, deletedFiles: [FilePath]) in
            guard offset <= s.highWatermark else {
                throw StorageError.offsetOutOfRange(requested: offset, logStartOffset: s.logStartOffset, logEndOffset: s.highWatermark)
            }
            if offset > s.logStartOffset {
                s.logStartOffset = offset
                s.leaderEpochCache.truncateFromStart(offset)
                try s.leaderEpochCache.flush()
            }
            let start = s.logStartOffset
            let deleted = try Self.deleteSegments(&s) { _, next in next <= start }
            return (s.logStartOffset, deleted)
        }
    }

    /// Deletes closed segments (never the active one) while `shouldDelete(segment, nextSegmentBase)`
    /// holds, oldest first. Files are renamed `.deleted`; the caller removes them after
    /// `file.delete.delay.ms`.
    private static func deleteSegments(_ s: inout State, shouldDelete: (LogSegment, Int64) -> Bool) throws(StorageError) -> [FilePath] {
        var deleted: [FilePath] = []
        while s.segments.count > 1 {
            let segment = s.segments[0]
            let nextBase = s.segments[1].baseOffset
            guard shouldDelete(segment, nextBase) else { break }
            try segment.renameToDeleted()
            deleted.append(contentsOf: segment.deletedPaths)
            s.segments.removeFirst()
            s.logStartOffset = Swift.max(s.logStartOffset, nextBase)
        }
        if !deleted.isEmpty {
            s.highWatermark = Swift.max(s.highWatermark, s.logStartOffset)
            s.leaderEpochCache.truncateFromStart(s.logStartOffset)
            try s.leaderEpochCache.flush()
            s.producerState.deleteSnapshots(before: s.segments[0].baseOffset)
        }
        return deleted
    }

    /// Retention (`retention.ms`, `retention.bytes`, and segments below the log start offset):
    /// deletes whole closed segments, oldest first, and only below the high watermark.
    /// Returns the files renamed `.deleted`.
    public func deleteOldSegments(nowMs: Int64) throws(StorageError) -> [FilePath] {
        try state.withLock { (s) throws(StorageError) -> [FilePath] in
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
                var excess = s.segments.reduce(0) { $0 + $1.size } - config.retentionBytes
                deleted += try Self.deleteSegments(&s) { segment, next in
                    guard next <= highWatermark, excess - segment.size >= 0 else { return false }
                    excess -= segment.size
                    return true
                }
            }
            return deleted
        }
    }

    // MARK: Durability

    /// fsyncs everything appended so far (the active segment and any unflushed closed ones).
    public func flush(nowMs: Int64) throws(StorageError) {
        let end = try state.withLock { (s) throws(StorageError) -> Int64 in
            try Self.flushLocked(&s, nowMs: nowMs)
            return s.logEndOffset
        }
        durability.withLock { $0.flushedOffset = Swift.max($0.flushedOffset, end) }
    }

    private static func flushLocked(_ s: inout State, nowMs: Int64) throws(StorageError) {
        for segment in s.segments where segment.nextOffset > s.recoveryPoint {
            try segment.flush()
        }
        s.recoveryPoint = s.logEndOffset
        s.unflushedMessages = 0
        s.lastFlushMs = nowMs
    }

    /// Flushes when `flush.ms` has passed since the last flush (the log manager calls this).
    public func flushIfDue(nowMs: Int64) throws(StorageError) {
        let due = state.withLock { s in s.unflushedMessages > 0 && nowMs - s.lastFlushMs >= s.config.flushMs }
        if due { try flush(nowMs: nowMs) }
    }

    /// Suspends until everything below `offset` is on disk, sharing fsyncs between callers
    /// (group commit): while one fsync runs, later callers queue; the next fsync covers all of
    /// them. `runFlush` performs a flush off the caller's thread (the log manager's I/O queue).
    public func flushed(through offset: Int64, runFlush: @escaping @Sendable (@escaping @Sendable () -> Void) -> Void) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let start: Bool = durability.withLock { d in
                if d.flushedOffset >= offset {
                    continuation.resume()
                    return false
                }
                d.waiters.append((offset, continuation))
                if d.flushing { return false }
                d.flushing = true
                return true
            }
            if start { scheduleFlush(runFlush) }
        }
    }

    private func scheduleFlush(_ runFlush: @escaping @Sendable (@escaping @Sendable () -> Void) -> Void) {
        runFlush { [self] in
            var failure: (any Error)? = nil
            // Pick the files under the lock, fsync them outside it so appends continue meanwhile.
            let (files, target): ([SegmentFile], Int64) = state.withLock { s in
                (s.segments.filter { $0.nextOffset > s.recoveryPoint }.map(\.file), s.logEndOffset)
            }
            do {
                for file in files { try file.sync() }
                state.withLock { s in
                    s.recoveryPoint = Swift.max(s.recoveryPoint, target)
                }
            } catch {
                failure = error
            }
            let (ready, again): ([CheckedContinuation<Void, any Error>], Bool) = durability.withLock { d in
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
            if again { scheduleFlush(runFlush) }
        }
    }

    // MARK: Compaction support

    /// A closed segment as the cleaner sees it: immutable facts and a file to read.
    struct SegmentSnapshot: Sendable {
        var baseOffset: Int64
        var nextOffset: Int64
        var size: Int64
        var largestTimestamp: Int64
        var file: SegmentFile
    }

    /// The closed segments (never the active one) below the high watermark, the config, and the
    /// cleaner checkpoint (the first offset not yet in a key map; at least the log start).
    func closedSegmentsForCleaning() -> (segments: [SegmentSnapshot], config: LogConfig, firstDirtyOffset: Int64, truncations: Int) {
        state.withLock { s in
            let closed = s.segments.dropLast().filter { $0.nextOffset <= s.highWatermark }
            return (closed.map {
                SegmentSnapshot(baseOffset: $0.baseOffset, nextOffset: $0.nextOffset, size: $0.size,
                                largestTimestamp: $0.largestTimestamp(), file: $0.file)
            }, s.config, Swift.max(s.firstDirtyOffset, s.segments[0].baseOffset), s.truncations)
        }
    }

    /// Compacted logs: the first offset the cleaner has not yet read into a key map (records
    /// below it are clean). Kept in the log directory's `cleaner-offset-checkpoint`.
    public var cleanerCheckpoint: Int64 {
        get { state.withLock { Swift.max($0.firstDirtyOffset, $0.segments[0].baseOffset) } }
    }

    /// When a tombstone the last cleaning pass kept may be removed (nil: none known).
    public var nextTombstoneExpiryMs: Int64? {
        get { state.withLock { $0.nextTombstoneExpiryMs } }
        set { state.withLock { $0.nextTombstoneExpiryMs = newValue } }
    }

    /// Sets the cleaner checkpoint (from the checkpoint file at open, or after a cleaning pass);
    /// never beyond the log end.
    public func setCleanerCheckpoint(_ offset: Int64) {
        state.withLock { $0.firstDirtyOffset = Swift.min(offset, $0.logEndOffset) }
    }

    /// Swaps in cleaned segments written in `cleanedDirectory` (same file names) for the
    /// segments whose files are `originals`, crash-safely: cleaned files are renamed `<name>.swap`
    /// into the partition directory, the old files removed, then the `.swap` files renamed to
    /// their final names (`open` completes a swap interrupted by a crash). Segments that retention
    /// deleted meanwhile are skipped. Then the cleaner checkpoint moves to `cleanedThrough`.
    /// Returns how many segments were replaced; nil, with nothing changed, when the log was
    /// truncated since the pass began (`truncations` differs): its segments may be other ones.
    func swapInCleanedSegments(_ originals: [SegmentSnapshot], cleanedDirectory: FilePath, cleanedThrough: Int64, truncations: Int,
                               nowMs: Int64) throws(StorageError) -> Int? {
        try state.withLock { (s) throws(StorageError) -> Int? in
            guard !s.closed, s.truncations == truncations else { return nil }
            var replaced = 0
            for original in originals {
                guard let index = s.segments.firstIndex(where: { $0.file === original.file }), index < s.segments.count - 1 else {
                    continue
                }
                let old = s.segments[index]
                let names = [".log", ".index", ".timeindex"].map { LogSegment.fileName(original.baseOffset, $0) }
                for name in names {
                    let from = cleanedDirectory.appending(name).string
                    let to = directory.appending(name + ".swap").string
                    guard rename(from, to) == 0 else {
                        throw StorageError.io(operation: "rename", path: from, errno: Errno(rawValue: errno))
                    }
                }
                CheckpointFile.syncDirectory(directory)
                old.close()
                for name in names {
                    let final = directory.appending(name).string
                    guard rename(final + ".swap", final) == 0 else {
                        throw StorageError.io(operation: "rename", path: final + ".swap", errno: Errno(rawValue: errno))
                    }
                }
                CheckpointFile.syncDirectory(directory)
                let segment = try LogSegment(directory: directory, baseOffset: original.baseOffset, config: s.config,
                                             nowMs: nowMs, preallocateIndexes: false)
                let maxBatch = Swift.max(s.config.maxMessageBytes, s.config.segmentBytes) + RecordBatch.logOverhead
                if try !segment.loadAfterCleanShutdown(maxBatchSize: maxBatch) {
                    _ = try segment.recover(maxBatchSize: maxBatch, contiguousOffsets: false) { _ in }
                }
                s.segments[index] = segment
                replaced += 1
            }
            s.firstDirtyOffset = Swift.min(cleanedThrough, s.logEndOffset)
            return replaced
        }
    }

    // MARK: Close

    /// Flushes, trims the active segment's indexes and snapshots producer state. After `close()`
    /// appends fail with `logClosed`.
    public func close(nowMs: Int64) throws(StorageError) {
        try state.withLock { (s) throws(StorageError) in
            guard !s.closed else { return }
            try Self.flushLocked(&s, nowMs: nowMs)
            try s.active.onBecomeInactive()
            try s.leaderEpochCache.flush()
            try s.producerState.takeSnapshot()
            try s.streams?.write(to: directory)
            for segment in s.segments { segment.close() }
            s.closed = true
        }
    }

    /// Deletes the whole partition directory (topic deletion). The log must not be used after.
    public func deleteAll() {
        state.withLock { s in
            for segment in s.segments {
                segment.close()
                segment.deleteFiles()
            }
            s.closed = true
        }
        if let names = try? Self.listDirectory(directory) {
            for name in names { unlink(directory.appending(name).string) }
        }
        rmdir(directory.string)
    }
}
