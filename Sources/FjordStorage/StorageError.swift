public import SystemPackage

/// Why a storage operation failed. The broker maps these to Kafka error codes in one place.
public enum StorageError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A system call failed.
    case io(operation: String, path: String, errno: Errno)
    /// A fetch or truncation asked for an offset outside [logStartOffset, logEndOffset].
    case offsetOutOfRange(requested: Int64, logStartOffset: Int64, logEndOffset: Int64)
    /// A batch (or a produce's records) is larger than `max.message.bytes` / the segment size.
    case recordTooLarge(size: Int, limit: Int)
    /// Bytes from a client or disk are not a valid record batch.
    case corruptRecord(String)
    /// A record is invalid for the log's policy (e.g. a null key on a compacted topic).
    case invalidRecord(String)
    /// A `fjord.stream.versioning` append with records whose expected version does not match
    /// their stream's version: every such record of the produce, in record order (never empty).
    case wrongExpectedVersion([StreamVersionConflict])
    /// The producer's epoch is older than the one the log has seen (a zombie producer).
    case invalidProducerEpoch(producerID: Int64, epoch: Int16, current: Int16)
    /// The batch's sequence does not follow the producer's last sequence.
    case outOfOrderSequence(producerID: Int64, epoch: Int16, sequence: Int32, expected: Int32)
    /// A log config value does not parse; the message names the key and what was expected.
    case invalidConfig(String)
    /// The log or segment was closed or deleted.
    case logClosed(String)
    /// An on-disk file did not parse (checkpoint, metadata); the message says which and why.
    case corruptFile(path: String, reason: String)

    public var description: String {
        switch self {
        case .io(let operation, let path, let errno):
            return "\(operation) \(path): \(errno)"
        case .offsetOutOfRange(let requested, let start, let end):
            return "offset \(requested) is outside the log's range [\(start), \(end)]"
        case .recordTooLarge(let size, let limit):
            return "record batch of \(size) bytes exceeds the limit of \(limit) bytes"
        case .corruptRecord(let why):
            return "corrupt record: \(why)"
        case .invalidRecord(let why):
            return "invalid record: \(why)"
        case .wrongExpectedVersion(let conflicts):
            let first = conflicts.first.map(\.description) ?? "wrong expected version"
            return conflicts.count > 1 ? "\(first) (and \(conflicts.count - 1) more records)" : first
        case .invalidProducerEpoch(let producerID, let epoch, let current):
            return "producer \(producerID) epoch \(epoch) is older than the current epoch \(current)"
        case .outOfOrderSequence(let producerID, let epoch, let sequence, let expected):
            return "producer \(producerID) epoch \(epoch): sequence \(sequence), expected \(expected)"
        case .invalidConfig(let why):
            return why
        case .logClosed(let what):
            return "\(what) is closed"
        case .corruptFile(let path, let reason):
            return "\(path): \(reason)"
        }
    }
}
