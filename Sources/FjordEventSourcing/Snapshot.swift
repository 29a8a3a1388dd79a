public import NIOCore

/// A stream's state at one version, so that loading it folds only the events after that version.
public struct Snapshot: Sendable, Equatable {
    /// The stream's version the state includes (the revision of the last event folded in).
    public var version: Int64
    /// The state's encoding version: a snapshot whose schema differs from the aggregate's
    /// current one is ignored and the stream folded from its start.
    public var schemaVersion: Int
    public var data: ByteBuffer

    public init(version: Int64, schemaVersion: Int, data: ByteBuffer) {
        self.version = version
        self.schemaVersion = schemaVersion
        self.data = data
    }
}
