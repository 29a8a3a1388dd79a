/// A topic partition's identity (Kafka's `TopicPartition`): the one type every module uses for
/// it, from the log's directory name to the client's assignments.
///
/// Ordered by topic, then partition. `directoryName` is Kafka's `<topic>-<partition>` log
/// directory; since topic names may contain '-', parsing splits at the last one.
public struct TopicPartition: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32

    public init(topic: String, partition: Int32) {
        self.topic = topic
        self.partition = partition
    }

    public init(_ topic: String, _ partition: Int32) {
        self.init(topic: topic, partition: partition)
    }

    /// Kafka's directory name: `<topic>-<partition>`.
    public var directoryName: String { "\(topic)-\(partition)" }
    public var description: String { directoryName }

    /// Parses `<topic>-<partition>` (topics may contain '-'; the last one separates); nil for
    /// anything else.
    public init?(directoryName: String) {
        guard let dash = directoryName.lastIndex(of: "-"), let partition = Int32(directoryName[directoryName.index(after: dash)...]),
            partition >= 0, dash != directoryName.startIndex
        else { return nil }
        self.topic = String(directoryName[..<dash])
        self.partition = partition
    }

    public static func < (lhs: TopicPartition, rhs: TopicPartition) -> Bool {
        lhs.topic != rhs.topic ? lhs.topic < rhs.topic : lhs.partition < rhs.partition
    }
}
