/// The ordered segments of one partition log (Kafka's `LogSegments`): the floor lookup from an
/// offset to the segment holding it, rolls, and deletion from either end.
///
/// Invariants, checked with `precondition` on every change since they are our own: never empty;
/// sorted by base offset, each segment's base offset at or above the previous segment's next
/// offset (compaction may leave gaps, never overlaps); the last segment is the active one, the
/// only one appended to. Not thread-safe: the owning `LocalLog` keeps it under its lock.
///
/// Crash behaviour: this is an in-memory view. On disk the segments are the `<base>.log` files
/// of the partition directory, which `LogLoader` reads back in base-offset order.
struct LogSegments: RandomAccessCollection {
    private var segments: [LogSegment]

    init(_ segments: [LogSegment]) {
        precondition(!segments.isEmpty, "a log has at least one segment")
        for index in segments.indices.dropFirst() {
            precondition(segments[index].baseOffset >= segments[index - 1].nextOffset, "segments overlap")
        }
        self.segments = segments
    }

    var startIndex: Int { segments.startIndex }
    var endIndex: Int { segments.endIndex }
    subscript(position: Int) -> LogSegment { segments[position] }

    /// The segment appends go to.
    var active: LogSegment { segments[segments.count - 1] }
    /// The oldest segment; its base offset bounds the log start offset from below.
    var oldest: LogSegment { segments[0] }
    /// Every segment but the active one, oldest first.
    var closed: ArraySlice<LogSegment> { segments.dropLast() }
    /// The offset the next append gets.
    var logEndOffset: Int64 { active.nextOffset }
    var sizeInBytes: Int64 { segments.reduce(0) { $0 + $1.size } }

    /// The index of the segment whose base offset is the greatest ≤ `offset` (Kafka's
    /// `floorSegment`); the oldest segment when `offset` is below every base offset.
    func floorIndex(_ offset: Int64) -> Int {
        var low = 0
        var high = segments.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if segments[mid].baseOffset <= offset { low = mid } else { high = mid - 1 }
        }
        return low
    }

    /// The index of the segment using `file`, if it is still part of the log.
    func index(of file: SegmentFile) -> Int? {
        segments.firstIndex { $0.file === file }
    }

    /// The segments holding offsets at or after `offset` that may still be unflushed.
    func segments(after offset: Int64) -> [LogSegment] {
        segments.filter { $0.nextOffset > offset }
    }

    /// Adds a new active segment starting at the log end (a roll).
    mutating func roll(to segment: LogSegment) {
        precondition(segment.baseOffset >= logEndOffset, "a rolled segment starts at or after the log end")
        segments.append(segment)
    }

    /// Removes the oldest segment; the active one is never removed this way.
    mutating func removeOldest() -> LogSegment {
        precondition(segments.count > 1, "the active segment is never deleted from the front")
        return segments.removeFirst()
    }

    /// Removes the active segment, making the one before it active (truncation).
    mutating func removeActive() -> LogSegment {
        precondition(segments.count > 1, "a log keeps at least one segment")
        return segments.removeLast()
    }

    /// Puts `segment` (cleaned, same base offset) in place of the closed segment at `index`.
    mutating func replace(at index: Int, with segment: LogSegment) {
        precondition(index < segments.count - 1 && segments[index].baseOffset == segment.baseOffset,
                     "only a closed segment is replaced, by one with its base offset")
        segments[index] = segment
    }

    /// Replaces everything with one empty segment (a follower restarting from its leader's log start).
    mutating func reset(to segment: LogSegment) {
        segments = [segment]
    }
}
