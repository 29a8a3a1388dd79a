/// `fjord.stream.versioning` reads: per-stream versions and event offsets from the log's
/// `StreamIndex` (kept up to date by appends and truncations under the log's lock).
extension LocalLog {
    /// A stream's version and events (revision, offset) on a `fjord.stream.versioning` log;
    /// nil when the log does not version streams.
    public func streamEvents(key: [UInt8], from revision: Int64, limit: Int, forwards: Bool)
        -> (version: Int64, events: [(revision: Int64, offset: Int64)])? {
        locked { s in
            guard let streams = s.streams else { return nil }
            return (streams.version(of: key), streams.events(of: key, from: revision, limit: limit, forwards: forwards))
        }
    }

    /// The revisions of events given by (stream, offset), nil for an event that is not there;
    /// nil altogether when the log does not version streams.
    public func streamRevisions(_ events: [(key: [UInt8], offset: Int64)]) -> [Int64?]? {
        locked { s in
            guard let streams = s.streams else { return nil }
            return events.map { streams.revision(of: $0.key, at: $0.offset) }
        }
    }

    /// The version of one stream (-1: no event), or nil when the log does not version streams.
    public func streamVersion(key: [UInt8]) -> Int64? {
        locked { $0.streams?.version(of: key) }
    }
}
