/// An offset in a partition's log (Kafka's `long offset`): the position of one record. A log's
/// end offset is the offset the next record gets; `Offset.none` (-1) is Kafka's "no offset"
/// (`UNDEFINED_OFFSET`).
///
/// A named wrapper around `Int64` (Redpanda's `named_type`), so an offset is never passed where
/// an epoch, a producer id or a byte position is meant. Arithmetic wraps instead of trapping:
/// offsets can come from the wire.
public struct Offset: RawRepresentable, Sendable, Hashable, Comparable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    public var rawValue: Int64

    public init(rawValue: Int64) { self.rawValue = rawValue }
    public init(_ value: Int64) { self.rawValue = value }
    public init(integerLiteral value: Int64) { self.rawValue = value }

    /// Kafka's -1: no offset.
    public static let none = Offset(-1)

    public var description: String { String(rawValue) }

    public static func < (lhs: Offset, rhs: Offset) -> Bool { lhs.rawValue < rhs.rawValue }
    /// The offset `count` records later (earlier for a negative count).
    public static func + (lhs: Offset, count: Int64) -> Offset { Offset(lhs.rawValue &+ count) }
    public static func - (lhs: Offset, count: Int64) -> Offset { Offset(lhs.rawValue &- count) }
    /// How many offsets lie between two offsets.
    public static func - (lhs: Offset, rhs: Offset) -> Int64 { lhs.rawValue &- rhs.rawValue }
    public static func += (lhs: inout Offset, count: Int64) { lhs = lhs + count }
}

/// A partition's leader epoch (KIP-101/279): bumped by the controller on every leadership
/// change and stamped on every batch the leader appends; `LeaderEpoch.none` (-1) is Kafka's
/// "no epoch" (`RecordBatch.NO_PARTITION_LEADER_EPOCH`). Epochs of one partition only grow.
public struct LeaderEpoch: RawRepresentable, Sendable, Hashable, Comparable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    public var rawValue: Int32

    public init(rawValue: Int32) { self.rawValue = rawValue }
    public init(_ value: Int32) { self.rawValue = value }
    public init(integerLiteral value: Int32) { self.rawValue = value }

    /// Kafka's -1: no epoch known.
    public static let none = LeaderEpoch(-1)

    public var description: String { String(rawValue) }
    public static func < (lhs: LeaderEpoch, rhs: LeaderEpoch) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// An idempotent or transactional producer's id (InitProducerId); `ProducerID.none` (-1) marks
/// batches of producers without one. Unique in a cluster for as long as the producer's state is
/// kept (`producer.id.expiration.ms`).
public struct ProducerID: RawRepresentable, Sendable, Hashable, Comparable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    public var rawValue: Int64

    public init(rawValue: Int64) { self.rawValue = rawValue }
    public init(_ value: Int64) { self.rawValue = value }
    public init(integerLiteral value: Int64) { self.rawValue = value }

    /// Kafka's -1: no producer id.
    public static let none = ProducerID(-1)

    public var description: String { String(rawValue) }
    public static func < (lhs: ProducerID, rhs: ProducerID) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// A partition's high watermark (Kafka's `Partition.maybeIncrementLeaderHW`): the offset below
/// which records are committed, i.e. in the log of every in-sync replica; consumers read only
/// below it.
///
/// Invariants: `logStartOffset ≤ HW ≤ logEndOffset` of the local log, and on a leader
/// HW ≤ min(log end offset over the ISR) and the HW never moves backwards (`advanced(to:)`);
/// a follower takes its leader's HW, capped by its own log end, and lowers it only when it
/// truncates.
public struct HighWatermark: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var offset: Offset

    public init(_ offset: Offset) { self.offset = offset }

    public var description: String { offset.description }
    public static func < (lhs: HighWatermark, rhs: HighWatermark) -> Bool { lhs.offset < rhs.offset }

    /// The high watermark after a leader learns that `offset` is committed: never lower.
    public func advanced(to offset: Offset) -> HighWatermark {
        HighWatermark(Swift.max(self.offset, offset))
    }
}
