import FjordClient
public import FjordEventSourcing
import FjordProtocol
public import Logging
public import PostgresNIO

/// A read model kept in PostgreSQL (CQRS's query side in the database a team already runs).
///
/// `setUp` creates the model's tables idempotently (it runs at every start); `apply` changes
/// the model for one event on the connection it is given, inside the runner's transaction,
/// which also moves the checkpoint. It must use only that connection.
public protocol PostgresProjection: Sendable {
    /// Names the projection's checkpoint rows; changing it starts over.
    var name: String { get }
    /// The stream topic it reads.
    var topic: String { get }
    func setUp(_ connection: PostgresConnection, logger: Logger) async throws
    func apply(_ event: RecordedEvent, on connection: PostgresConnection, logger: Logger) async throws
}

/// Runs a `PostgresProjection` into PostgreSQL (postgres-nio): catches up from the checkpoint,
/// then follows live events, one task and one connection per partition.
///
/// Exactly once, as `ProjectionRunner`'s SQLite store: each poll's events of a partition are
/// applied in one transaction (`BEGIN` … `COMMIT` on the partition's connection) that also
/// stores the partition's next offset in `fjord_projection_checkpoints` and every touched
/// stream's version in `fjord_projection_streams`. A crash before the commit loses the
/// transaction and the events are applied again after restart; after it, they count once.
public actor PostgresProjectionRunner {
    public nonisolated let projection: any PostgresProjection
    nonisolated let bootstrap: String
    private let configuration: PostgresConnection.Configuration
    private let logger: Logger
    private var connections: [PostgresConnection] = []
    /// The connection `start` set up the tables on, kept for `status`.
    private var control: PostgresConnection? = nil
    private var tasks: [Task<Void, any Error>] = []
    private var consumers: [KafkaConsumer] = []
    private var applied = 0
    private var startedAt: ContinuousClock.Instant? = nil
    private var failure: (any Error)? = nil

    public init(projection: any PostgresProjection, bootstrap: String, postgres: PostgresConnection.Configuration,
                logger: Logger = Logger(label: "fjord.projections")) {
        self.projection = projection
        self.bootstrap = bootstrap
        self.configuration = postgres
        self.logger = logger
    }

    /// Creates the checkpoint tables and the model's, then starts one task per partition.
    public func start() async throws {
        guard tasks.isEmpty else { return }
        startedAt = .now
        let setup = try await connect()
        control = setup
        try await setup.query("""
            CREATE TABLE IF NOT EXISTS fjord_projection_checkpoints (
                projection text NOT NULL, topic text NOT NULL, partition integer NOT NULL,
                next_offset bigint NOT NULL, PRIMARY KEY (projection, topic, partition))
            """, logger: logger)
        try await setup.query("""
            CREATE TABLE IF NOT EXISTS fjord_projection_streams (
                projection text NOT NULL, stream text NOT NULL, version bigint NOT NULL, PRIMARY KEY (projection, stream))
            """, logger: logger)
        try await projection.setUp(setup, logger: logger)

        let started = try await PartitionFollower.startAll(
            bootstrap: bootstrap, projection: projection.name, topic: projection.topic, onCaughtUp: nil,
            store: { [projection, logger] _ in PostgresProjectionStore(projection: projection, connection: try await self.connect(), logger: logger) },
            counted: { count in await self.count(count) }, failed: { error in await self.recordFailure(error) })
        consumers = started.consumers
        tasks = started.tasks
    }

    /// Stops the tasks and closes the connections (the checkpoint is the last committed one).
    public func stop() async {
        for task in tasks { task.cancel() }
        for consumer in consumers { await consumer.close() }
        for task in tasks { _ = try? await task.value }
        for connection in connections { try? await connection.close() }
        tasks = []
        consumers = []
        connections = []
        control = nil
    }

    /// The first error a partition task met, if any (the task stops on errors).
    public func lastError() -> (any Error)? { failure }

    /// Position and lag per partition, events applied and their rate.
    public func status() async throws -> ProjectionRunner.Status {
        let connection: PostgresConnection
        if let control {
            connection = control
        } else {
            connection = try await connect()
            control = connection
        }
        var positions: [Int32: Int64] = [:]
        let rows = try await connection.query(
            "SELECT partition, next_offset FROM fjord_projection_checkpoints WHERE projection = \(projection.name) AND topic = \(projection.topic)",
            logger: logger)
        for try await (partition, next) in rows.decode((Int32, Int64).self) { positions[partition] = next }
        return try await ProjectionRunner.Status.measure(projection: projection.name, topic: projection.topic, bootstrap: bootstrap,
                                                         positions: positions, applied: applied, startedAt: startedAt, rebuilding: false)
    }

    private func connect() async throws -> PostgresConnection {
        let connection = try await PostgresConnection.connect(configuration: configuration, id: connections.count + 1, logger: logger)
        connections.append(connection)
        return connection
    }

    private func count(_ events: Int) { applied += events }

    private func recordFailure(_ error: any Error) {
        if failure == nil { failure = error }
        logger.error("projection stopped", metadata: ["projection": "\(projection.name)", "error": "\(String(reflecting: error))"])
    }
}

/// One partition's PostgreSQL connection: a poll's events, their stream versions and the
/// checkpoint in one transaction.
struct PostgresProjectionStore: ProjectionStore {
    let projection: any PostgresProjection
    let connection: PostgresConnection
    let logger: Logger

    func checkpoint(partition: Int32) async throws -> Int64? {
        let rows = try await connection.query("""
            SELECT next_offset FROM fjord_projection_checkpoints
            WHERE projection = \(projection.name) AND topic = \(projection.topic) AND partition = \(partition)
            """, logger: logger)
        for try await next in rows.decode(Int64.self) { return next }
        return nil
    }

    func apply(_ records: [ConsumerRecord], partition: Int32, next: Int64, knownVersions: [String: Int64]) async throws -> [String: Int64] {
        try await connection.query("BEGIN", logger: logger)
        do {
            // The versions of streams this follower has not seen yet, in one query.
            var stored: [String: Int64] = [:]
            let unknown = PartitionFollower.streams(records).filter { knownVersions[$0] == nil }
            if !unknown.isEmpty {
                let rows = try await connection.query("""
                    SELECT stream, version FROM fjord_projection_streams WHERE projection = \(projection.name) AND stream = ANY(\(Array(unknown)))
                    """, logger: logger)
                for try await (stream, version) in rows.decode((String, Int64).self) { stored[stream] = version }
            }
            let (events, touched) = PartitionFollower.events(records, partition: partition, known: knownVersions) { stored[$0] }
            for event in events { try await projection.apply(event, on: connection, logger: logger) }
            for (stream, version) in touched {
                try await connection.query("""
                    INSERT INTO fjord_projection_streams (projection, stream, version) VALUES (\(projection.name), \(stream), \(version))
                    ON CONFLICT (projection, stream) DO UPDATE SET version = excluded.version
                    """, logger: logger)
            }
            try await connection.query("""
                INSERT INTO fjord_projection_checkpoints (projection, topic, partition, next_offset)
                VALUES (\(projection.name), \(projection.topic), \(partition), \(next))
                ON CONFLICT (projection, topic, partition) DO UPDATE SET next_offset = excluded.next_offset
                """, logger: logger)
            try await connection.query("COMMIT", logger: logger)
            return touched
        } catch {
            _ = try? await connection.query("ROLLBACK", logger: logger)
            throw error
        }
    }
}
