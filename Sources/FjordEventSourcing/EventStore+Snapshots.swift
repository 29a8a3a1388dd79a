import Foundation
import NIOCore

/// An aggregate whose state can be snapshotted (encoded as JSON).
public protocol SnapshottableAggregate: Aggregate, Codable {
    /// Bump when the encoded state changes shape: older snapshots are then ignored.
    static var snapshotSchemaVersion: Int { get }
}

extension SnapshottableAggregate {
    public static var snapshotSchemaVersion: Int { 1 }
}

extension EventStore {
    /// Loads an aggregate from its latest snapshot (if one of the current schema exists), then
    /// folds the events after it. Returns the state, the stream's version and the version of the
    /// snapshot used (-1: none).
    public func load<A: SnapshottableAggregate>(_ type: A.Type, stream: String, registry: EventTypeRegistry,
                                                snapshots: SnapshotStore) async throws -> (state: A, version: Int64, snapshotVersion: Int64) {
        var state = A()
        var snapshotVersion: Int64 = -1
        if let snapshot = try await snapshots.latest(stream: stream), snapshot.schemaVersion == A.snapshotSchemaVersion,
           let decoded = try? JSONDecoder().decode(A.self, from: Data(snapshot.data.readableBytesView)) {
            state = decoded
            snapshotVersion = snapshot.version
        }
        let (folded, version) = try await fold(state, stream: stream, from: snapshotVersion + 1, registry: registry)
        return (folded, Swift.max(version, snapshotVersion), snapshotVersion)
    }

    /// `execute` with snapshots: after a command whose events bring the stream `snapshotEvery`
    /// or more events past the snapshot it was loaded from, the new state is saved as the
    /// stream's snapshot. A failed save does not fail the command (its events are appended);
    /// the next command tries again, since the stream is then still past the interval.
    @discardableResult
    public func execute<A: SnapshottableAggregate>(_ type: A.Type, stream: String, registry: EventTypeRegistry, snapshots: SnapshotStore,
                                                   snapshotEvery: Int64 = 100, retries: Int = 3,
                                                   decide: (A) throws -> [any Event]) async throws -> Int64 {
        var attempt = 0
        while true {
            let (state, version, snapshotVersion) = try await load(type, stream: stream, registry: registry, snapshots: snapshots)
            let events = try decide(state)
            let data = try events.map { try registry.encodeAny($0) }
            let newVersion: Int64
            do {
                newVersion = try await append(to: stream, data, expectedVersion: version < 0 ? .noStream : .exact(version))
            } catch let conflict as WrongExpectedVersion {
                attempt += 1
                if attempt > retries { throw conflict }
                continue
            }
            if newVersion - snapshotVersion >= snapshotEvery {
                var next = state
                for event in events { next.apply(event) }
                if let encoded = try? JSONEncoder().encode(next) {
                    try? await snapshots.save(stream: stream, Snapshot(version: newVersion, schemaVersion: A.snapshotSchemaVersion,
                                                                       data: ByteBuffer(bytes: encoded)))
                }
            }
            return newVersion
        }
    }
}
