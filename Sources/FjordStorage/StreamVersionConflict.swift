
/// One record of a stream-topic produce whose expected version did not match its stream.
public struct StreamVersionConflict: Sendable, Equatable, CustomStringConvertible {
    /// The record's index across all batches of the produce (Kafka's `batch_index`).
    public var recordIndex: Int
    public var stream: String
    /// The expectation as the header spelled it (`no-stream`, `exists`, a number).
    public var expected: String
    /// The stream's version the record was checked against (-1: no event).
    public var actual: Int64

    public init(recordIndex: Int, stream: String, expected: String, actual: Int64) {
        self.recordIndex = recordIndex
        self.stream = stream
        self.expected = expected
        self.actual = actual
    }

    public var description: String {
        "wrong expected version for stream '\(stream)': expected \(expected), actual version \(actual)"
    }
}
