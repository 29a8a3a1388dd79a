import FjordClient
import FjordEventSourcing
import FjordProtocol
import Foundation
public import GRDB
import Logging
import NIOCore
import Synchronization

/// Runs a `Projection` into SQLite (GRDB): catches up from the checkpoint, then follows live
/// events, one task per partition.
///
/// Exactly once: each poll's events of a partition are applied in one write transaction that
/// also stores, in `fjord_projection_checkpoints`, the next offset of that partition and, in
/// `fjord_projection_streams`, the version of every stream touched. A crash before the commit
/// loses the transaction and the events are applied again after restart; a crash after it finds
/// them already counted. Nothing is applied twice and nothing is skipped.
///
/// `rebuild()` builds a fresh model in a second database file from the start of the topic while
/// the current one keeps serving `read`; once the new one has caught up, reads switch to it and
/// the old file is removed.
public actor ProjectionRunner {
    /// Where a projection stands in one partition.
    public struct PartitionStatus: Sendable, Equatable {
        public var partition: Int32
        /// The next offset to apply.
        public var position: Int64
        /// Events in the partition not applied yet (end offset − position).
        public var lag: Int64
    }

    public struct Status: Sendable {
        public var projection: String
        public var partitions: [PartitionStatus]
        public var eventsApplied: Int
        /// Applied events per second since `start`.
        public var eventsPerSecond: Double
        public var rebuilding: Bool
        public var lag: Int64 { partitions.reduce(0) { $0 + $1.lag } }
    }

    public nonisolated let projection: any Projection
    nonisolated let bootstrap: String
    public nonisolated let path: String
    private var database: DatabasePool
    private var tasks: [Task<Void, any Error>] = []
    private var consumers: [KafkaConsumer] = []
    private var applied = 0
    private var startedAt: ContinuousClock.Instant? = nil
    private var rebuilding = false
    private var failure: (any Error)? = nil
    let logger = Logger(label: "fjord.projections")

    /// Opens (or creates) the read model at `path` and runs `setUp`.
    public init(projection: any Projection, bootstrap: String, path: String) throws {
        self.projection = projection
        self.bootstrap = bootstrap
        self.path = path
        self.database = try Self.open(path, projection)
    }

    static func open(_ path: String, _ projection: any Projection) throws -> DatabasePool {
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        let pool = try DatabasePool(path: path, configuration: configuration)
        try pool.write { db in
            try db.execute(sql: """
                CREATE TABLE IF NOT EXISTS fjord_projection_checkpoints (
                    projection TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
                    next_offset INTEGER NOT NULL, PRIMARY KEY (projection, topic, partition));
                CREATE TABLE IF NOT EXISTS fjord_projection_streams (
                    projection TEXT NOT NULL, stream TEXT NOT NULL, version INTEGER NOT NULL,
                    PRIMARY KEY (projection, stream));
                """)
            try projection.setUp(db)
        }
        return pool
    }

    /// Queries the read model (the current one, also during a rebuild).
    public func read<T: Sendable>(_ body: @Sendable (Database) throws -> T) async throws -> T {
        let current = database
        do {
            return try await current.read(body)
        } catch let error as DatabaseError where error.resultCode == .SQLITE_MISUSE && current !== database {
            // The model was switched (rebuild) while this read started: ask the new one.
            return try await database.read(body)
        }
    }

    /// Starts one task per partition: catch up from the checkpoint, then follow.
    public func start() async throws {
        guard tasks.isEmpty else { return }
        startedAt = .now
        try await run(on: database, onCaughtUp: nil)
    }

    /// Stops the tasks (the checkpoint is whatever the last transaction stored).
    public func stop() async {
        for task in tasks { task.cancel() }
        for consumer in consumers { await consumer.close() }
        for task in tasks { _ = try? await task.value }
        tasks = []
        consumers = []
    }

    /// The first error a partition task met, if any (the task stops on errors).
    public func lastError() -> (any Error)? { failure }

    private func run(on database: DatabasePool, onCaughtUp: (@Sendable () async -> Void)?) async throws {
        let projection = self.projection
        let started = try await PartitionFollower.startAll(
            bootstrap: bootstrap, projection: projection.name, topic: projection.topic, onCaughtUp: onCaughtUp,
            store: { _ in SQLiteProjectionStore(projection: projection, database: database) },
            counted: { count in await self.count(count) }, failed: { error in await self.recordFailure(error) })
        consumers += started.consumers
        tasks += started.tasks
    }

    private func count(_ events: Int) { applied += events }
    private func recordFailure(_ error: any Error) {
        if failure == nil { failure = error }
        logger.error("projection stopped", metadata: ["projection": "\(projection.name)", "error": "\(error)"])
    }

    /// Position and lag per partition, events applied and their rate.
    public func status() async throws -> Status {
        let name = projection.name
        let topic = projection.topic
        let rows = try await read { db in
            try Row.fetchAll(db, sql: "SELECT partition, next_offset FROM fjord_projection_checkpoints WHERE projection = ? AND topic = ?",
                             arguments: [name, topic]).map { ($0["partition"] as Int32, $0["next_offset"] as Int64) }
        }
        var positions: [Int32: Int64] = [:]
        for (partition, offset) in rows { positions[partition] = offset }
        return try await Status.measure(projection: name, topic: topic, bootstrap: bootstrap, positions: positions, applied: applied,
                                        startedAt: startedAt, rebuilding: rebuilding)
    }

    /// Rebuilds the read model from the start of the topic into a new file while the current
    /// one keeps answering `read`; switches when the new one has caught up, then keeps following.
    public func rebuild() async throws {
        guard !rebuilding else { return }
        rebuilding = true
        defer { rebuilding = false }
        let fresh = path + ".rebuild"
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: fresh + suffix) }
        let freshDatabase = try Self.open(fresh, projection)
        let previousTasks = tasks
        let previousConsumers = consumers
        tasks = []
        consumers = []
        let done = AsyncStream<Void>.makeStream()
        try await run(on: freshDatabase, onCaughtUp: { done.continuation.yield(); done.continuation.finish() })
        for await _ in done.stream { break }
        // Caught up: stop every follower, move the new file into place, reopen and follow again.
        // Reads keep using the old model until this point.
        for task in previousTasks { task.cancel() }
        for consumer in previousConsumers { await consumer.close() }
        await stop()
        // The old pool is not closed here: reads still running on it finish on the old model;
        // it closes when the last of them lets go of it.
        // Fold the write-ahead log into the main file before moving it.
        try await freshDatabase.writeWithoutTransaction { db in _ = try db.checkpoint(.truncate) }
        try freshDatabase.close()
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        try FileManager.default.moveItem(atPath: fresh, toPath: path)
        for suffix in ["-wal", "-shm"] { try? FileManager.default.removeItem(atPath: fresh + suffix) }
        database = try Self.open(path, projection)
        try await run(on: database, onCaughtUp: nil)
    }
}


/// The SQLite read model of a `ProjectionRunner`: events, stream versions and checkpoint in one
/// GRDB write transaction.
struct SQLiteProjectionStore: ProjectionStore {
    let projection: any Projection
    let database: DatabasePool

    func checkpoint(partition: Int32) async throws -> Int64? {
        let name = projection.name
        let topic = projection.topic
        return try await database.read { db in
            try Int64.fetchOne(db, sql: "SELECT next_offset FROM fjord_projection_checkpoints WHERE projection = ? AND topic = ? AND partition = ?",
                               arguments: [name, topic, partition])
        }
    }

    func apply(_ records: [ConsumerRecord], partition: Int32, next: Int64, knownVersions: [String: Int64]) async throws -> [String: Int64] {
        let projection = self.projection
        let name = projection.name
        let topic = projection.topic
        return try await database.write { db -> [String: Int64] in
            let lookup = try db.cachedStatement(sql: "SELECT version FROM fjord_projection_streams WHERE projection = ? AND stream = ?")
            let (events, touched) = try PartitionFollower.events(records, partition: partition, known: knownVersions) { stream in
                try Int64.fetchOne(lookup, arguments: [name, stream])
            }
            for event in events { try projection.apply(event, in: db) }
            let upsertStream = try db.cachedStatement(
                sql: "INSERT INTO fjord_projection_streams (projection, stream, version) VALUES (?, ?, ?) "
                    + "ON CONFLICT (projection, stream) DO UPDATE SET version = excluded.version")
            for (stream, version) in touched { try upsertStream.execute(arguments: [name, stream, version]) }
            try db.cachedStatement(
                sql: "INSERT INTO fjord_projection_checkpoints (projection, topic, partition, next_offset) VALUES (?, ?, ?, ?) "
                    + "ON CONFLICT (projection, topic, partition) DO UPDATE SET next_offset = excluded.next_offset")
                .execute(arguments: [name, topic, partition, next])
            return touched
        }
    }
}
