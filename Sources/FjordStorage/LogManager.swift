#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
public import FjordProtocol
import Synchronization
public import SystemPackage

/// A partition log that was opened at start-up, with what recovery found.
public struct LoadedLog: Sendable {
    public var topicPartition: TopicPartition
    public var topicID: KafkaUUID?
    public var report: LogLoadReport
}

/// All partition logs of one broker and the files that describe them (Kafka's `LogManager`).
///
/// Data directory layout (`log.dirs`; Fjord uses one directory):
/// ```
/// <log.dir>/
///   .kafka_cleanshutdown                 present only while the broker is cleanly stopped
///   recovery-point-offset-checkpoint     topic partition offset: fsynced up to here
///   log-start-offset-checkpoint          topic partition offset: the log start offsets
///   cleaner-offset-checkpoint            topic partition offset: compacted logs' cleaner checkpoints
///   replication-offset-checkpoint        topic partition offset: the high watermarks
///   <topic>-<partition>/                 one LocalLog (see LocalLog, LogSegment)
///   <topic>-<partition>.<uuid>-delete/   a deleted partition awaiting removal
/// ```
/// At open the clean-shutdown marker is read and removed, so a crash from then on is seen as
/// unclean at the next start. `shutdown` closes every log, writes the checkpoints, then the
/// marker. `runMaintenance` applies retention, compaction (of logs whose dirty ratio reached
/// `min.cleanable.dirty.ratio`), producer expiry (`producer.id.expiration.ms`), `flush.ms`,
/// checkpointing and the
/// delayed removal of `.deleted` files; `startBackgroundTasks` runs it on a timer.
public final class LogManager: Sendable {
    public static let cleanShutdownFileName = ".kafka_cleanshutdown"
    public static let recoveryPointCheckpoint = "recovery-point-offset-checkpoint"
    public static let logStartOffsetCheckpoint = "log-start-offset-checkpoint"
    public static let cleanerOffsetCheckpoint = "cleaner-offset-checkpoint"
    /// Kafka's name: the high watermarks, so a restarted replica exposes nothing it had not
    /// seen committed and a restarted leader does not start from zero.
    public static let replicationOffsetCheckpoint = "replication-offset-checkpoint"

    public let directory: FilePath
    /// `log.cleaner.dedupe.buffer.size`: the most memory one cleaning pass's key map may take.
    public let cleanerDedupeBufferBytes: Int
    /// `producer.id.expiration.ms`: idempotent producers silent this long are forgotten.
    public let producerIDExpirationMs: Int64
    private let logs: Mutex<[TopicPartition: LocalLog]>
    private let pendingDeletes: Mutex<[(path: FilePath, atMs: Int64)]>
    /// True while background maintenance is scheduled.
    private let backgroundRunning: Mutex<Bool>
    /// Runs fsyncs and maintenance off the callers' threads (group commit uses it).
    private let ioQueue = DispatchQueue(label: "fjord.storage.io")
    private let maintenanceQueue = DispatchQueue(label: "fjord.storage.maintenance")

    /// Opens every partition log in `directory`, recovering after an unclean shutdown.
    /// `configFor` supplies each topic's effective log config.
    public static func open(
        directory: FilePath, nowMs: Int64, cleanerDedupeBufferBytes: Int = LogCleaner.defaultDedupeBufferBytes,
        producerIDExpirationMs: Int64 = 86_400_000, configFor: (String) -> LogConfig
    ) throws(StorageError) -> (LogManager, [LoadedLog]) {
        mkdirs(directory)
        let marker = directory.appending(cleanShutdownFileName)
        let cleanShutdown = access(marker.string, F_OK) == 0
        let recoveryPoints = (try? readCheckpoint(directory.appending(recoveryPointCheckpoint))) ?? [:]
        let startOffsets = (try? readCheckpoint(directory.appending(logStartOffsetCheckpoint))) ?? [:]
        let cleanerOffsets = (try? readCheckpoint(directory.appending(cleanerOffsetCheckpoint))) ?? [:]
        let highWatermarks = (try? readCheckpoint(directory.appending(replicationOffsetCheckpoint))) ?? [:]
        var opened: [TopicPartition: LocalLog] = [:]
        var loaded: [LoadedLog] = []
        var deletes: [(path: FilePath, atMs: Int64)] = []
        for name in try LogLoader.listDirectory(directory) {
            let path = directory.appending(name)
            guard isDirectory(path) else { continue }
            if name.hasSuffix("-delete") {
                deletes.append((path, nowMs))
                continue
            }
            guard let tp = TopicPartition(directoryName: name) else { continue }
            let (log, report) = try LocalLog.open(
                directory: path, topicPartition: tp, config: configFor(tp.topic),
                recoveryPoint: recoveryPoints[tp] ?? 0, logStartOffset: startOffsets[tp] ?? 0,
                cleanShutdown: cleanShutdown, nowMs: nowMs)
            if let cleaned = cleanerOffsets[tp] { log.setCleanerCheckpoint(Offset(cleaned)) }
            // Clamped to the recovered log: a truncated tail lowers it.
            if let highWatermark = highWatermarks[tp] { log.highWatermark = HighWatermark(Offset(highWatermark)) }
            opened[tp] = log
            loaded.append(LoadedLog(topicPartition: tp, topicID: readPartitionMetadata(path), report: report))
        }
        unlink(marker.string)
        CheckpointFile.syncDirectory(directory)
        let manager = LogManager(directory: directory, logs: opened, deletes: deletes, cleanerDedupeBufferBytes: cleanerDedupeBufferBytes,
                                 producerIDExpirationMs: producerIDExpirationMs)
        for log in opened.values { log.setBackgroundRunner(manager.flushRunner) }
        return (manager, loaded.sorted { $0.topicPartition < $1.topicPartition })
    }

    private init(directory: FilePath, logs: [TopicPartition: LocalLog], deletes: [(path: FilePath, atMs: Int64)],
                 cleanerDedupeBufferBytes: Int, producerIDExpirationMs: Int64) {
        self.directory = directory
        self.cleanerDedupeBufferBytes = cleanerDedupeBufferBytes
        self.producerIDExpirationMs = producerIDExpirationMs
        self.logs = Mutex(logs)
        self.pendingDeletes = Mutex(deletes)
        self.backgroundRunning = Mutex(false)
    }

    /// Whether the data directory holds a clean-shutdown marker (i.e. no broker runs on it).
    public static func wasCleanlyShutDown(_ directory: FilePath) -> Bool {
        access(directory.appending(cleanShutdownFileName).string, F_OK) == 0
    }

    // MARK: Logs

    public func log(for partition: TopicPartition) -> LocalLog? {
        logs.withLock { $0[partition] }
    }

    public var allLogs: [LocalLog] {
        logs.withLock { Array($0.values) }.sorted { $0.topicPartition < $1.topicPartition }
    }

    /// The log of `partition`, created (with `partition.metadata` naming `topicID`) if absent.
    public func getOrCreateLog(_ partition: TopicPartition, topicID: KafkaUUID, config: LogConfig, nowMs: Int64) throws(StorageError) -> LocalLog {
        if let existing = log(for: partition) { return existing }
        let path = directory.appending(partition.directoryName)
        let (log, _) = try LocalLog.open(directory: path, topicPartition: partition, config: config, recoveryPoint: 0,
                                         logStartOffset: 0, cleanShutdown: true, nowMs: nowMs)
        try Self.writePartitionMetadata(path, topicID: topicID)
        log.setBackgroundRunner(flushRunner)
        return logs.withLock { logs in
            if let raced = logs[partition] { return raced }
            logs[partition] = log
            return log
        }
    }

    /// Deletes a partition: the log is closed, its directory renamed `<tp>.<uuid>-delete` and
    /// removed after `file.delete.delay.ms`.
    public func deleteLog(_ partition: TopicPartition, nowMs: Int64) throws(StorageError) {
        guard let log = logs.withLock({ $0.removeValue(forKey: partition) }) else { return }
        let delay = log.config.fileDeleteDelayMs
        try? log.close(nowMs: nowMs)
        let renamed = directory.appending("\(partition.directoryName).\(KafkaUUID.random().description)-delete")
        guard rename(log.directory.string, renamed.string) == 0 else {
            throw StorageError.io(operation: "rename", path: log.directory.string, errno: Errno(rawValue: errno))
        }
        CheckpointFile.syncDirectory(directory)
        pendingDeletes.withLock { $0.append((renamed, nowMs.clampedPlus(delay))) }
    }

    /// Calls `observe` with the duration of every log flush (segments and checkpoints of one
    /// partition) from now on, in this process: Kafka's `LogFlushRateAndTimeMs`.
    public static func observeFlushes(_ observe: @escaping @Sendable (Duration) -> Void) {
        LogFlusher.observer.withLock { $0 = observe }
    }

    /// A flush runner for `LocalLog.flushed(through:runFlush:)` on the storage I/O queue.
    public var flushRunner: @Sendable (@escaping @Sendable () -> Void) -> Void {
        let queue = ioQueue
        return { work in queue.async(execute: work) }
    }

    // MARK: Maintenance

    /// What one maintenance pass did.
    public struct MaintenanceReport: Sendable {
        public var deletedSegments: [(TopicPartition, Int)] = []
        public var cleaned: [(TopicPartition, CleanerStats)] = []
        public var errors: [String] = []
    }

    /// Retention, compaction, `flush.ms` flushes, checkpoints and delayed file removal.
    @discardableResult
    public func runMaintenance(nowMs: Int64) -> MaintenanceReport {
        var report = MaintenanceReport()
        for log in allLogs {
            do {
                let deleted = try log.deleteOldSegments(nowMs: nowMs)
                if !deleted.isEmpty {
                    let delay = log.config.fileDeleteDelayMs
                    pendingDeletes.withLock { pending in
                        for path in deleted { pending.append((path, nowMs.clampedPlus(delay))) }
                    }
                    report.deletedSegments.append((log.topicPartition, deleted.count / 3))
                }
                if log.config.compactEnabled && LogCleaner.needsCleaning(log, nowMs: nowMs) {
                    let stats = try LogCleaner.clean(log, nowMs: nowMs, dedupeBufferBytes: cleanerDedupeBufferBytes)
                    if stats.segmentsCleaned > 0 { report.cleaned.append((log.topicPartition, stats)) }
                }
                log.removeExpiredProducers(nowMs: nowMs, expirationMs: producerIDExpirationMs)
                try log.flushIfDue(nowMs: nowMs)
            } catch {
                report.errors.append("\(log.topicPartition): \(error)")
            }
        }
        let due: [FilePath] = pendingDeletes.withLock { pending in
            let ready = pending.filter { $0.atMs <= nowMs }.map(\.path)
            pending.removeAll { $0.atMs <= nowMs }
            return ready
        }
        for path in due { Self.removeRecursively(path) }
        do {
            try checkpoint()
        } catch {
            report.errors.append("checkpoint: \(error)")
        }
        return report
    }

    /// Writes the recovery-point, log-start-offset, cleaner-offset and replication-offset
    /// (high watermark) checkpoints.
    public func checkpoint() throws(StorageError) {
        let all = allLogs
        try CheckpointFile.writeAtomically(
            CheckpointFile.format(all.map { "\($0.topicPartition.topic) \($0.topicPartition.partition) \($0.highWatermark.offset.rawValue)" }),
            to: directory.appending(Self.replicationOffsetCheckpoint))
        try CheckpointFile.writeAtomically(
            CheckpointFile.format(all.map { "\($0.topicPartition.topic) \($0.topicPartition.partition) \($0.recoveryPoint)" }),
            to: directory.appending(Self.recoveryPointCheckpoint))
        try CheckpointFile.writeAtomically(
            CheckpointFile.format(all.map { "\($0.topicPartition.topic) \($0.topicPartition.partition) \($0.logStartOffset)" }),
            to: directory.appending(Self.logStartOffsetCheckpoint))
        try CheckpointFile.writeAtomically(
            CheckpointFile.format(all.filter { $0.config.compactEnabled }.map {
                "\($0.topicPartition.topic) \($0.topicPartition.partition) \($0.cleanerCheckpoint)"
            }),
            to: directory.appending(Self.cleanerOffsetCheckpoint))
    }

    /// Runs `runMaintenance` every `intervalMs` on a background queue until `shutdown`.
    /// `onReport` sees each pass's report (for logging).
    public func startBackgroundTasks(intervalMs: Int, clock: @escaping @Sendable () -> Int64,
                                     onReport: @escaping @Sendable (MaintenanceReport) -> Void) {
        backgroundRunning.withLock { $0 = true }
        scheduleMaintenance(intervalMs: intervalMs, clock: clock, onReport: onReport)
    }

    private func scheduleMaintenance(intervalMs: Int, clock: @escaping @Sendable () -> Int64,
                                     onReport: @escaping @Sendable (MaintenanceReport) -> Void) {
        maintenanceQueue.asyncAfter(deadline: .now() + .milliseconds(intervalMs)) { [weak self] in
            guard let self, self.backgroundRunning.withLock({ $0 }) else { return }
            onReport(self.runMaintenance(nowMs: clock()))
            self.scheduleMaintenance(intervalMs: intervalMs, clock: clock, onReport: onReport)
        }
    }

    /// Stops background work, closes every log (flush, trim indexes, snapshot producer state),
    /// writes the checkpoints and finally the clean-shutdown marker.
    public func shutdown(nowMs: Int64) throws(StorageError) {
        backgroundRunning.withLock { $0 = false }
        maintenanceQueue.sync {}  // wait for a pass in progress
        var firstError: StorageError? = nil
        for log in allLogs {
            do { try log.close(nowMs: nowMs) } catch { firstError = firstError ?? error }
        }
        try checkpoint()
        if let firstError { throw firstError }
        try CheckpointFile.writeAtomically("", to: directory.appending(Self.cleanShutdownFileName))
    }

    // MARK: Files

    /// `partition.metadata`: `version: 0` then `topic_id: <base64 uuid>`, as Kafka writes it.
    static func writePartitionMetadata(_ directory: FilePath, topicID: KafkaUUID) throws(StorageError) {
        try CheckpointFile.writeAtomically("version: 0\ntopic_id: \(topicID)\n", to: directory.appending("partition.metadata"))
    }

    static func readPartitionMetadata(_ directory: FilePath) -> KafkaUUID? {
        guard let text = try? CheckpointFile.read(directory.appending("partition.metadata")) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("topic_id:") {
            return KafkaUUID(line.dropFirst("topic_id:".count).trimmingCharacters())
        }
        return nil
    }

    static func readCheckpoint(_ path: FilePath) throws(StorageError) -> [TopicPartition: Int64] {
        guard let text = try CheckpointFile.read(path) else { return [:] }
        var out: [TopicPartition: Int64] = [:]
        for fields in try CheckpointFile.parseEntries(text, path: path, fieldsPerEntry: 3) {
            guard let partition = Int32(fields[1]), let offset = Int64(fields[2]) else {
                throw StorageError.corruptFile(path: path.string, reason: "bad entry \(fields.joined(separator: " "))")
            }
            out[TopicPartition(topic: String(fields[0]), partition: partition)] = offset
        }
        return out
    }

    static func isDirectory(_ path: FilePath) -> Bool {
        var info = stat()
        return stat(path.string, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    static func mkdirs(_ path: FilePath) {
        var current = FilePath(path.root?.string ?? "")
        for component in path.components {
            current.append(component)
            mkdir(current.string, 0o755)
        }
    }

    static func removeRecursively(_ path: FilePath) {
        if isDirectory(path) {
            if let names = try? LogLoader.listDirectory(path) {
                for name in names { removeRecursively(path.appending(name)) }
            }
            rmdir(path.string)
        } else {
            unlink(path.string)
        }
    }
}
