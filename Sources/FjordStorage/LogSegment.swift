#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import FjordProtocol
import NIOCore
import SystemPackage

/// One segment of a partition log (Kafka's `LogSegment`): a `.log` file of record batches exactly
/// as producers sent them (with broker-assigned offsets), plus its `OffsetIndex` and `TimeIndex`.
///
/// Invariants: batches are contiguous from position 0 with strictly increasing offsets starting
/// at or after `baseOffset`; every offset in the segment is < the next segment's base offset;
/// `size` is the byte length of the valid prefix of the file. Appends write the batch bytes
/// untouched except the first 16 bytes (base offset, length, partition leader epoch: all outside
/// the CRC), which are written from a patched copy, so a produce's bytes are never re-encoded or
/// copied in memory. Reads return `FileSlice`s. Not thread-safe: the owning `UnifiedLog` serialises
/// access.
final class LogSegment {
    let baseOffset: Int64
    let directory: FilePath
    private(set) var file: SegmentFile
    let offsetIndex: OffsetIndex
    let timeIndex: TimeIndex
    private let indexIntervalBytes: Int
    /// Bytes of valid batches in the `.log` file.
    private(set) var size: Int64
    /// The offset after the last batch, or `baseOffset` when the segment is empty.
    private(set) var nextOffset: Int64
    private var bytesSinceLastIndexEntry = 0
    /// The largest batch timestamp in the segment and the last offset of the batch holding it.
    private(set) var maxTimestampSoFar: Int64 = RecordBatch.noTimestamp
    private(set) var offsetOfMaxTimestampSoFar: Int64 = -1
    /// The first batch's max timestamp, which `segment.ms` rolling is measured from (Kafka's
    /// `rollingBasedTimestamp`); nil when it has none (then creation time is used).
    private(set) var rollingBasedTimestamp: Int64?
    let createdMs: Int64

    static func fileName(_ baseOffset: Int64, _ suffix: String) -> String {
        var digits = String(baseOffset)
        if digits.count < 20 { digits = String(repeating: "0", count: 20 - digits.count) + digits }
        return digits + suffix
    }

    static func logPath(_ directory: FilePath, _ baseOffset: Int64) -> FilePath {
        directory.appending(fileName(baseOffset, ".log"))
    }

    /// Opens or creates the segment's files. `size` is the file's length; callers recover or
    /// sanity-check before trusting it.
    init(directory: FilePath, baseOffset: Int64, config: LogConfig, nowMs: Int64, preallocateIndexes: Bool) throws(StorageError) {
        self.directory = directory
        self.baseOffset = baseOffset
        self.indexIntervalBytes = config.indexIntervalBytes
        self.createdMs = nowMs
        self.file = try SegmentFile.open(Self.logPath(directory, baseOffset), create: true)
        self.offsetIndex = try OffsetIndex(
            path: directory.appending(Self.fileName(baseOffset, ".index")), baseOffset: baseOffset,
            maxIndexSize: config.segmentIndexBytes, preallocate: preallocateIndexes)
        self.timeIndex = try TimeIndex(
            path: directory.appending(Self.fileName(baseOffset, ".timeindex")), baseOffset: baseOffset,
            maxIndexSize: config.segmentIndexBytes, preallocate: preallocateIndexes)
        self.size = try file.size()
        self.nextOffset = baseOffset
    }

    var logPath: FilePath { file.path }

    // MARK: Append

    /// Whether `offset` can be stored relative to this segment's base (as an int32 delta).
    func canHold(offset: Int64) -> Bool {
        offset - baseOffset <= Int64(Int32.max) && offset >= baseOffset
    }

    /// Appends one batch at `position == size`, with its base offset and leader epoch replaced
    /// by `assignedBaseOffset` and `leaderEpoch` in the written copy of its first 16 bytes.
    func append(_ batch: RecordBatch, assignedBaseOffset: Int64, leaderEpoch: Int32) throws(StorageError) {
        let position = size
        let header = batch.header
        let lastOffset = assignedBaseOffset + Int64(header.lastOffsetDelta)
        try batch.bytes.withUnsafeReadableBytes { (raw) throws(StorageError) in
            try withUnsafeTemporaryAllocation(byteCount: 16, alignment: 8) { (patched) throws(StorageError) in
                patched.storeBytes(of: assignedBaseOffset.bigEndian, toByteOffset: 0, as: Int64.self)
                patched.storeBytes(of: header.batchLength.bigEndian, toByteOffset: 8, as: Int32.self)
                patched.storeBytes(of: leaderEpoch.bigEndian, toByteOffset: 12, as: Int32.self)
                try file.write(at: position, [UnsafeRawBufferPointer(patched), UnsafeRawBufferPointer(rebasing: raw[16...])])
            }
        }
        size += Int64(batch.sizeInBytes)
        nextOffset = lastOffset + 1
        noteBatch(lastOffset: lastOffset, maxTimestamp: header.maxTimestamp, position: position, size: batch.sizeInBytes)
    }

    /// Index bookkeeping shared by append, recovery and rebuilds.
    private func noteBatch(lastOffset: Int64, maxTimestamp: Int64, position: Int64, size batchSize: Int) {
        if rollingBasedTimestamp == nil {
            rollingBasedTimestamp = maxTimestamp >= 0 ? maxTimestamp : nil
        }
        if maxTimestamp > maxTimestampSoFar {
            maxTimestampSoFar = maxTimestamp
            offsetOfMaxTimestampSoFar = lastOffset
        }
        if bytesSinceLastIndexEntry > indexIntervalBytes {
            offsetIndex.append(offset: lastOffset, position: position)
            if maxTimestampSoFar >= 0 {
                timeIndex.maybeAppend(timestamp: maxTimestampSoFar, offset: offsetOfMaxTimestampSoFar)
            }
            bytesSinceLastIndexEntry = 0
        }
        bytesSinceLastIndexEntry += batchSize
    }

    // MARK: Read

    /// Where a batch lies in the file.
    struct BatchPosition {
        var baseOffset: Int64
        var lastOffset: Int64
        var position: Int64
        var size: Int
    }

    /// Reads the batch header at `position`; nil past the end of the valid data.
    func readHeader(at position: Int64) throws(StorageError) -> RecordBatchHeader? {
        guard position + Int64(RecordBatch.headerSize) <= size else { return nil }
        return try withUnsafeTemporaryAllocation(byteCount: RecordBatch.headerSize, alignment: 8) { (raw) throws(StorageError) -> RecordBatchHeader? in
            var done = 0
            while done < RecordBatch.headerSize {
                let n = pread(file.descriptor.rawValue, raw.baseAddress! + done, RecordBatch.headerSize - done, off_t(position) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw StorageError.io(operation: "pread", path: file.path.string, errno: Errno(rawValue: errno))
                }
                if n == 0 { return nil }
                done += n
            }
            do {
                return try RecordBatchHeader(parsing: UnsafeRawBufferPointer(raw))
            } catch {
                throw StorageError.corruptRecord("\(file.path.string) at \(position): \(error)")
            }
        }
    }

    /// The first batch whose last offset is ≥ `offset`, scanning headers from the index's hint.
    ///
    /// If the hint does not land on a batch (a damaged index that passed the open-time sanity
    /// check), the index is dropped and the scan restarts from the segment's first byte, so a
    /// bad index costs time, never data.
    func translateOffset(_ offset: Int64, startingAtPosition start: Int64 = 0) throws(StorageError) -> BatchPosition? {
        let hint = offsetIndex.lookup(offset)
        var position = Swift.max(start, hint.position)
        var trusted = position == start
        while true {
            let header: RecordBatchHeader?
            do {
                header = try readHeader(at: position)
            } catch let error {
                guard case .corruptRecord = error, !trusted else { throw error }
                offsetIndex.reset()
                timeIndex.reset()
                position = start
                trusted = true
                continue
            }
            guard let header else { return nil }
            if header.lastOffset >= offset {
                return BatchPosition(baseOffset: header.baseOffset, lastOffset: header.lastOffset, position: position, size: header.sizeInBytes)
            }
            position += Int64(header.sizeInBytes)
        }
    }

    /// A slice of the log from the batch holding `startOffset`, at most `maxSize` bytes and ending
    /// before `maxPosition`; with `minOneMessage` the first batch is returned whole even when it is
    /// larger than `maxSize` (so a consumer always makes progress). As in Kafka, the slice may end
    /// inside a batch; clients discard a trailing partial batch.
    func read(startOffset: Int64, maxSize: Int, maxPosition: Int64, minOneMessage: Bool) throws(StorageError) -> (slice: FileSlice, firstBatch: BatchPosition)? {
        guard let first = try translateOffset(startOffset) else { return nil }
        let limit = Swift.min(maxPosition, size)
        guard first.position < limit else { return nil }
        let adjusted = minOneMessage ? Swift.max(maxSize, first.size) : maxSize
        let length = Int(Swift.min(limit - first.position, Int64(adjusted)))
        return (FileSlice(file: file, position: first.position, length: length), first)
    }

    /// The first record at or after `startingOffset` whose timestamp is ≥ `timestamp`, with its
    /// timestamp (Kafka's `LogSegment.findOffsetByTimestamp`): the time index finds where to
    /// start, batch headers skip batches whose max timestamp is older, and the first batch that
    /// may hold it is decoded to find the record itself. A batch that does not decode answers with
    /// its first offset and max timestamp (the batch-level answer) rather than failing the lookup.
    func findOffsetByTimestamp(_ timestamp: Int64, startingOffset: Int64) throws(StorageError) -> (offset: Int64, timestamp: Int64)? {
        let entry = timeIndex.lookup(timestamp)
        let from = Swift.max(entry.offset, startingOffset)
        let hint = offsetIndex.lookup(from)
        var position = hint.position
        while let header = try readHeader(at: position) {
            if header.maxTimestamp >= timestamp && header.lastOffset >= startingOffset {
                if let record = try firstRecord(at: position, size: header.sizeInBytes, where: { $0.timestamp >= timestamp && $0.offset >= startingOffset }) {
                    return (record.offset, record.timestamp)
                }
                return (Swift.max(header.baseOffset, startingOffset), header.maxTimestamp)
            }
            position += Int64(header.sizeInBytes)
        }
        return nil
    }

    /// The offset of the first record carrying the segment's max timestamp (KIP-734's
    /// MAX_TIMESTAMP, exact to the record as Kafka's broker answers since KAFKA-16310), with
    /// that timestamp; nil when no batch has a timestamp.
    func offsetOfMaxTimestamp() throws(StorageError) -> (offset: Int64, timestamp: Int64)? {
        guard offsetOfMaxTimestampSoFar >= 0, let batch = try translateOffset(offsetOfMaxTimestampSoFar) else { return nil }
        let maxTimestamp = maxTimestampSoFar
        if let record = try firstRecord(at: batch.position, size: batch.size, where: { $0.timestamp == maxTimestamp }) {
            return (record.offset, record.timestamp)
        }
        return (batch.baseOffset, maxTimestamp)
    }

    /// Decodes the batch at `position` and returns its first record matching `matches`; nil when
    /// none does or the batch does not decode (the caller falls back to the batch's header).
    private func firstRecord(at position: Int64, size: Int, where matches: (Record) -> Bool) throws(StorageError) -> Record? {
        var bytes = ByteBuffer()
        _ = try file.read(at: position, count: size, into: &bytes)
        do {
            guard let batch = try RecordBatch.read(from: &bytes) else { return nil }
            var records = try batch.makeRecordIterator()
            while let record = try records.next() {
                if matches(record) { return record }
            }
        } catch {
            return nil
        }
        return nil
    }

    // MARK: Recovery

    /// What recovery found.
    struct RecoveryResult {
        var validBytes: Int64
        var truncatedBytes: Int64
        /// Why the first bad batch was refused, if any.
        var problem: String?
    }

    /// Rebuilds the indexes by scanning every batch from position 0, checking each batch's length
    /// and CRC, and truncates the file at the first bad or incomplete batch. `onBatch` sees each
    /// valid batch's header in order (for producer state and leader epochs).
    /// With `contiguousOffsets` (logs that are never compacted) each batch must start exactly
    /// where the previous one ended, which also catches damage to the base offset, a field the
    /// CRC does not cover.
    func recover(maxBatchSize: Int, contiguousOffsets: Bool, onBatch: (RecordBatchHeader) -> Void) throws(StorageError) -> RecoveryResult {
        offsetIndex.reset()
        timeIndex.reset()
        bytesSinceLastIndexEntry = 0
        maxTimestampSoFar = RecordBatch.noTimestamp
        offsetOfMaxTimestampSoFar = -1
        rollingBasedTimestamp = nil
        let fileSize = try file.size()
        var position: Int64 = 0
        var problem: String? = nil
        var expectedNext = baseOffset
        if fileSize > 0 {
            let mapping = mmap(nil, Int(fileSize), PROT_READ, MAP_PRIVATE, file.descriptor.rawValue, 0)
            guard let mapping, mapping != MAP_FAILED else {
                throw StorageError.io(operation: "mmap", path: file.path.string, errno: Errno(rawValue: errno))
            }
            defer { munmap(mapping, Int(fileSize)) }
            let all = UnsafeRawBufferPointer(start: mapping, count: Int(fileSize))
            while position < fileSize {
                let rest = UnsafeRawBufferPointer(rebasing: all[Int(position)...])
                let header: RecordBatchHeader
                do {
                    header = try RecordBatchHeader(parsing: rest)
                    guard header.sizeInBytes <= maxBatchSize else {
                        throw ProtocolError.corruptRecord("batch of \(header.sizeInBytes) bytes exceeds \(maxBatchSize)")
                    }
                    guard header.sizeInBytes <= rest.count else {
                        throw ProtocolError.truncated(need: header.sizeInBytes, have: rest.count)
                    }
                    guard header.baseOffset >= expectedNext, !contiguousOffsets || header.baseOffset == expectedNext || position == 0 else {
                        throw ProtocolError.corruptRecord("offset \(header.baseOffset) does not follow \(expectedNext - 1)")
                    }
                    guard position > 0 || !contiguousOffsets || header.baseOffset == baseOffset else {
                        throw ProtocolError.corruptRecord("first offset \(header.baseOffset) is not the segment's base offset \(baseOffset)")
                    }
                    try header.validate(batch: rest)
                } catch {
                    problem = "\(error)"
                    break
                }
                onBatch(header)
                noteBatch(lastOffset: header.lastOffset, maxTimestamp: header.maxTimestamp, position: position, size: header.sizeInBytes)
                expectedNext = header.nextOffset
                position += Int64(header.sizeInBytes)
            }
        }
        size = position
        nextOffset = expectedNext
        let truncated = fileSize - position
        if truncated > 0 {
            try file.truncate(to: position)
        }
        return RecoveryResult(validBytes: position, truncatedBytes: truncated, problem: problem)
    }

    /// Loads the segment's state from its (trusted) indexes after a clean shutdown: finds the
    /// last batch by scanning from the last index entry. Returns false when the indexes or the
    /// scan disagree with the file, and the caller recovers the segment instead.
    func loadAfterCleanShutdown(maxBatchSize: Int) throws(StorageError) -> Bool {
        guard offsetIndex.isSane(logSize: size) else { return false }
        var position = offsetIndex.entries > 0 ? offsetIndex.entry(offsetIndex.entries - 1).position : 0
        var next = baseOffset
        var lastHeader: RecordBatchHeader? = nil
        while position < size {
            guard let header = try? readHeader(at: position), position + Int64(header.sizeInBytes) <= size,
                header.sizeInBytes <= maxBatchSize
            else { return false }
            next = header.nextOffset
            lastHeader = header
            position += Int64(header.sizeInBytes)
        }
        guard position == size, timeIndex.isSane(nextOffset: Swift.max(next, baseOffset + 1)) else { return false }
        nextOffset = size == 0 ? baseOffset : next
        if let last = timeIndex.lastEntry {
            maxTimestampSoFar = last.timestamp
            offsetOfMaxTimestampSoFar = last.offset
        }
        if let lastHeader, lastHeader.maxTimestamp > maxTimestampSoFar {
            maxTimestampSoFar = lastHeader.maxTimestamp
            offsetOfMaxTimestampSoFar = lastHeader.lastOffset
        }
        if size > 0, let first = try? readHeader(at: 0) {
            rollingBasedTimestamp = first.maxTimestamp >= 0 ? first.maxTimestamp : nil
        }
        return true
    }

    // MARK: Truncation, rolling, deletion

    /// Removes every batch with offsets ≥ `offset` (at batch granularity: the batch holding
    /// `offset` goes too). Returns the bytes removed.
    @discardableResult
    func truncate(to offset: Int64) throws(StorageError) -> Int64 {
        guard let found = try translateOffset(offset) else { return 0 }
        let removed = size - found.position
        try file.truncate(to: found.position)
        size = found.position
        offsetIndex.truncate(toOffset: offset)
        timeIndex.truncate(toOffset: offset)
        // Re-derive max timestamp and next offset from what remains.
        _ = try recoverStateAfterTruncation()
        return removed
    }

    private func recoverStateAfterTruncation() throws(StorageError) -> Bool {
        maxTimestampSoFar = RecordBatch.noTimestamp
        offsetOfMaxTimestampSoFar = -1
        var position: Int64 = 0
        var next = baseOffset
        rollingBasedTimestamp = nil
        while let header = try readHeader(at: position) {
            if rollingBasedTimestamp == nil { rollingBasedTimestamp = header.maxTimestamp >= 0 ? header.maxTimestamp : nil }
            if header.maxTimestamp > maxTimestampSoFar {
                maxTimestampSoFar = header.maxTimestamp
                offsetOfMaxTimestampSoFar = header.lastOffset
            }
            next = header.nextOffset
            position += Int64(header.sizeInBytes)
        }
        nextOffset = next
        bytesSinceLastIndexEntry = 0
        return true
    }

    /// Trims the indexes to their valid entries when the segment stops being the active one.
    func onBecomeInactive() throws(StorageError) {
        try offsetIndex.trimToValidSize()
        try timeIndex.trimToValidSize()
    }

    /// Makes the active segment's indexes writable again after a restart (trimmed files are
    /// grown back to `segment.index.bytes`).
    func reopenAsActive(maxIndexSize: Int) throws(StorageError) {
        try offsetIndex.resize(toBytes: maxIndexSize)
        try timeIndex.resize(toBytes: maxIndexSize)
    }

    var isIndexFull: Bool { offsetIndex.isFull || timeIndex.isFull }

    /// The files a flush makes durable: the log and both indexes. Synced outside the log's lock
    /// (see `LogFlusher`); each stays open while referenced, whatever happens to the segment.
    var durableFiles: [SegmentFile] { [file, offsetIndex.handle, timeIndex.handle] }

    /// fsyncs the log and flushes the index mappings.
    func flush() throws(StorageError) {
        try file.sync()
        try offsetIndex.flush()
        try timeIndex.flush()
    }

    /// The newest timestamp in the segment, for `retention.ms`: the max batch timestamp, or the
    /// file's modification time when batches carry none.
    func largestTimestamp() -> Int64 {
        if maxTimestampSoFar >= 0 { return maxTimestampSoFar }
        var info = stat()
        if fstat(file.descriptor.rawValue, &info) == 0 {
            return Int64(info.st_mtim.tv_sec) * 1000 + Int64(info.st_mtim.tv_nsec) / 1_000_000
        }
        return createdMs
    }

    /// Renames the segment's files to `<name>.deleted` (Kafka's two-step delete); open slices
    /// keep reading the log file through their descriptors.
    func renameToDeleted() throws(StorageError) {
        let log = file.path
        guard rename(log.string, log.string + ".deleted") == 0 else {
            throw StorageError.io(operation: "rename", path: log.string, errno: Errno(rawValue: errno))
        }
        offsetIndex.close()
        timeIndex.close()
        try offsetIndex.renameTo(FilePath(offsetIndex.path.string + ".deleted"))
        try timeIndex.renameTo(FilePath(timeIndex.path.string + ".deleted"))
    }

    /// The paths `renameToDeleted()` produced.
    var deletedPaths: [FilePath] {
        [FilePath(file.path.string + ".deleted"), FilePath(offsetIndex.path.string + ".deleted"),
         FilePath(timeIndex.path.string + ".deleted")]
    }

    func close() {
        offsetIndex.close()
        timeIndex.close()
    }

    /// Removes all files at once (for segments that never held data, and for tests).
    func deleteFiles() {
        offsetIndex.delete()
        timeIndex.delete()
        unlink(file.path.string)
    }
}
