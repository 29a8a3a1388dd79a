public import NIOCore

/// An event as stored: its stream, revision in the stream and position in the partition.
public struct RecordedEvent: Sendable, Equatable {
    public var stream: String
    /// The event's revision in its stream (0, 1, 2, …).
    public var revision: Int64
    public var partition: Int32
    public var offset: Int64
    public var timestamp: Int64
    public var id: String
    public var type: String
    public var data: ByteBuffer
    public var metadata: [String: String]
}
