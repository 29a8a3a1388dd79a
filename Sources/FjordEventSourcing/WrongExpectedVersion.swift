
/// The stream was not at the expected version: another writer appended first.
public struct WrongExpectedVersion: Error, Sendable, Equatable, CustomStringConvertible {
    public var stream: String
    public var expected: ExpectedVersion
    /// The stream's version when the append was refused (-1: no event).
    public var actual: Int64

    public init(stream: String, expected: ExpectedVersion, actual: Int64) {
        self.stream = stream
        self.expected = expected
        self.actual = actual
    }

    public var description: String { "wrong expected version for stream '\(stream)': expected \(expected), actual version \(actual)" }
}
