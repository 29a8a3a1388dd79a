public import NIOCore

/// A tagged field kept as raw bytes: one the generated schema does not define.
///
/// Decoders keep unknown tagged fields in wire order; encoders merge them with the known
/// tagged fields in ascending tag order, as Kafka's `RawTaggedFieldWriter` does, so a message
/// decoded and re-encoded is byte-identical.
public struct TaggedField: Sendable, Equatable {
    public var tag: UInt32
    /// The field's bytes, without the tag and size prefixes.
    public var data: ByteBuffer

    public init(tag: UInt32, data: ByteBuffer) {
        self.tag = tag
        self.data = data
    }
}
