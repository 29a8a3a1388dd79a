import FjordClient
public import FjordPostgresReplication
import FjordProtocol
import Foundation
public import Logging
import NIOCore
public import ServiceLifecycle
import Synchronization

/// Captures a PostgreSQL database's committed changes into topics, as Debezium's PostgreSQL
/// connector does, without a JVM: an initial snapshot consistent with a logical replication
/// slot, then pgoutput's stream, each change as a Debezium envelope on `<prefix>.<schema>.<table>`
/// (or routed as an outbox event).
///
/// Delivery guarantee: events go out through an idempotent producer with `acks=all`, and the
/// slot's confirmed position (PostgreSQL's `confirmed_flush_lsn`) advances only to the end of a
/// transaction whose events, and every earlier transaction's, the broker acknowledged
/// (`AcknowledgedPosition`). A crash at any point therefore loses no committed change and
/// repeats at most the transactions after the last confirmed one; each event's `source.lsn`
/// tells a consumer which it has seen. A delivery the broker refuses stops the connector
/// without confirming past it (refuse rather than lose).
///
/// Lifecycle: `run()` checks the database (wal_level, tables, publication) before creating
/// anything, creates the publication and slot when missing, snapshots when the connector has
/// not completed one (`snapshot.mode`), streams until `stop()` or a graceful shutdown, then
/// flushes, confirms what was acknowledged and leaves the slot for the next start (unless
/// `slot.drop.on.stop`). Progress is kept in the `offset.storage.topic` under the slot's name.
public final class PostgresConnector: Service, Sendable {
    public let configuration: PostgresConnectorConfiguration
    private let clientProperties: [String: String]
    private let logger: Logger
    private let stopRequested = Atomic<Bool>(false)
    private let waker = Mutex<PostgresReplicationConnection.Waker?>(nil)

    /// `clientProperties`: Kafka client properties (`bootstrap.servers`, security); the
    /// connector sets `acks=all` and `enable.idempotence=true` itself.
    public init(configuration: PostgresConnectorConfiguration, clientProperties: [String: String], logger: Logger) {
        self.configuration = configuration
        self.clientProperties = clientProperties
        self.logger = logger
    }

    /// Asks a running connector to stop after what it has read (safe from any thread).
    public func stop() {
        stopRequested.store(true, ordering: .relaxed)
        waker.withLock { $0 }?.wake()
    }

    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await capture()
        } onGracefulShutdown: {
            self.stop()
        }
    }

    private var stopping: Bool { stopRequested.load(ordering: .relaxed) }

    // MARK: Start

    private func capture() async throws {
        let catalog = try await PostgresCatalog.connect(configuration.connection, logger: logger)
        do {
            try await capture(catalog)
            await catalog.close()
        } catch {
            await catalog.close()
            throw error
        }
    }

    private func capture(_ catalog: PostgresCatalog) async throws {
        let tables = try await prepareDatabase(catalog)
        if stopping { return }
        var producerProperties = clientProperties
        producerProperties["acks"] = "all"
        producerProperties["enable.idempotence"] = "true"
        if producerProperties["client.id"] == nil { producerProperties["client.id"] = "fjord-cdc-\(configuration.prefix)" }
        let producer = try await KafkaProducer.connect(try ProducerConfiguration(properties: producerProperties))
        let sink = try await ChangeSink(producer: producer, clientProperties: producerProperties, configuration: configuration, logger: logger)
        do {
            try await capture(catalog, sink: sink, tables: tables)
            await sink.close()
        } catch is StopRequested {
            logger.info("stopped during the snapshot: the next start takes it again")
            await sink.close()
        } catch {
            await sink.close()
            throw error
        }
    }

    /// Checks what must hold before anything is created, then creates the publication when
    /// missing; returns the tables to snapshot.
    private func prepareDatabase(_ catalog: PostgresCatalog) async throws -> [String] {
        let walLevel = try await catalog.walLevel()
        guard walLevel == "logical" else {
            throw CDCError.configuration("PostgreSQL has wal_level=\(walLevel); logical decoding needs wal_level=logical "
                                         + "(set it in postgresql.conf and restart PostgreSQL)")
        }
        let existing = try await catalog.userTables()
        if let wanted = configuration.tables {
            let missing = wanted.filter { !existing.contains($0) }
            guard missing.isEmpty else { throw CDCError.configuration("no such table: \(missing.joined(separator: ", "))") }
        }
        let name = configuration.publicationName
        let tables: [String]
        switch (try await catalog.publication(name), configuration.publicationAutocreateMode) {
        case (nil, .disabled):
            throw CDCError.configuration("publication \(name) does not exist and publication.autocreate.mode=disabled: "
                                         + "create it (CREATE PUBLICATION \(name) FOR TABLE …) or let the connector do so")
        case (nil, .allTables) where configuration.tables == nil:
            try await catalog.createPublication(name, tables: nil)
            logger.info("created publication", metadata: ["publication": "\(name)", "tables": "all"])
            tables = existing
        case (nil, _):
            let wanted = configuration.tables ?? existing
            try await catalog.createPublication(name, tables: wanted)
            logger.info("created publication", metadata: ["publication": "\(name)", "tables": "\(wanted.joined(separator: ","))"])
            tables = wanted
        case (let publication?, .filtered) where !publication.allTables:
            let wanted = configuration.tables ?? existing
            if Set(wanted) != publication.tables {
                try await catalog.setPublicationTables(name, tables: wanted)
                logger.info("set the publication's tables", metadata: ["publication": "\(name)", "tables": "\(wanted.joined(separator: ","))"])
            }
            tables = wanted
        case (let publication?, _):
            let published = publication.allTables ? existing : existing.filter(publication.tables.contains)
            tables = configuration.tables.map { wanted in published.filter(wanted.contains) } ?? published
        }
        let withoutOldRows = try await catalog.tablesWithoutFullIdentity(tables.filter { !configuration.outboxTables.contains($0) })
        if !withoutOldRows.isEmpty {
            logger.warning("these tables lack REPLICA IDENTITY FULL: their updates and deletes carry no `before` row (ALTER TABLE … REPLICA IDENTITY FULL)",
                           metadata: ["tables": "\(withoutOldRows.joined(separator: ","))"])
        }
        return tables
    }

    private func capture(_ catalog: PostgresCatalog, sink: ChangeSink, tables: [String]) async throws {
        let slotName = configuration.slotName
        var state = try await sink.loadState() ?? ConnectorState(slot: slotName)
        var slot = try await catalog.slot(slotName)
        // A connector that was killed a moment ago: PostgreSQL ends its walsender once it sees
        // the socket closed; until then the slot is still active.
        for _ in 0..<100 {
            guard let existing = slot, existing.active else { break }
            try await Task.sleep(for: .milliseconds(100))
            slot = try await catalog.slot(slotName)
        }
        if let existing = slot {
            guard existing.plugin == "pgoutput" else {
                throw CDCError.configuration("slot \(slotName) uses the \(existing.plugin) plugin, not pgoutput: drop it or set slot.name")
            }
            guard !existing.active else { throw CDCError.configuration("slot \(slotName) is in use by another process (another connector?)") }
            if configuration.snapshotMode != .never && !state.snapshotCompleted {
                logger.warning("the previous snapshot did not complete: dropping the slot and taking it again", metadata: ["slot": "\(slotName)"])
                try await catalog.dropSlot(slotName)
                slot = nil
            }
        }
        if configuration.snapshotMode == .initialOnly && state.snapshotCompleted {
            logger.info("snapshot.mode=initial_only and the snapshot is complete: nothing to do")
            return
        }
        try await PostgresReplicationConnection.withConnection(configuration.connection) { replication in
            waker.withLock { $0 = replication.waker }
            defer { waker.withLock { $0 = nil } }
            let start: LSN
            if let slot {
                start = slot.confirmed
                logger.info("resuming from the slot", metadata: ["slot": "\(slotName)", "lsn": "\(start)"])
            } else {
                let snapshot = configuration.snapshotMode != .never
                let temporary = configuration.snapshotMode == .initialOnly ? "TEMPORARY " : ""
                let created = try await replication.simpleQuery(
                    "CREATE_REPLICATION_SLOT \(identifier(slotName)) \(temporary)LOGICAL pgoutput (SNAPSHOT '\(snapshot ? "export" : "nothing")')")
                guard let consistent = created.value("consistent_point").flatMap({ LSN($0) }) else {
                    throw CDCError.database("CREATE_REPLICATION_SLOT answered without a consistent point")
                }
                logger.info("created the replication slot", metadata: ["slot": "\(slotName)", "lsn": "\(consistent)"])
                start = consistent
                if snapshot, let name = created.value("snapshot_name") {
                    state.snapshotCompleted = false
                    try await sink.saveState(state)
                    try await takeSnapshot(name, at: consistent, tables: tables, catalog: catalog, sink: sink)
                    state.snapshotCompleted = true
                    state.lsn = consistent.description
                    try await sink.saveState(state)
                } else {
                    state.snapshotCompleted = configuration.snapshotMode == .never
                    try await sink.saveState(state)
                }
            }
            if configuration.snapshotMode == .initialOnly { return }
            try await stream(replication, from: start, catalog: catalog, sink: sink, state: &state)
        }
        if configuration.slotDropOnStop {
            try await dropSlotAfterStop(catalog)
        }
    }

    /// The replication connection has just closed: PostgreSQL marks the slot inactive a moment later.
    private func dropSlotAfterStop(_ catalog: PostgresCatalog) async throws {
        for attempt in 0..<50 {
            if let slot = try await catalog.slot(configuration.slotName), slot.active, attempt < 49 {
                try await Task.sleep(for: .milliseconds(100))
                continue
            }
            try await catalog.dropSlot(configuration.slotName)
            logger.info("dropped the replication slot (slot.drop.on.stop)", metadata: ["slot": "\(configuration.slotName)"])
            return
        }
    }

    // MARK: Snapshot

    /// Reads every table as the exported snapshot shows it and emits each row (`op: r`); returns
    /// once the broker acknowledged them all.
    private func takeSnapshot(_ snapshotName: String, at lsn: LSN, tables: [String], catalog: PostgresCatalog, sink: ChangeSink) async throws {
        let envelope = DebeziumEnvelope(prefix: configuration.prefix, database: configuration.connection.database,
                                        mapper: DebeziumValueMapper(decimalHandling: configuration.decimalHandling),
                                        tombstonesOnDelete: configuration.tombstonesOnDelete)
        let position = AcknowledgedPosition(start: .zero)
        let batch = position.open()
        let transaction = ChangeTransaction(xid: 0, commitLSN: lsn, commitTimeMicros: postgresMicrosecondsNow())
        let started = ContinuousClock.now
        var rows = 0
        try await catalog.withSnapshot(snapshotName) {
            var relations: [PgRelation] = []
            for table in tables where !configuration.outboxTables.contains(table) { relations.append(try await catalog.relation(table)) }
            for (index, relation) in relations.enumerated() {
                let table = "\(relation.namespace).\(relation.name)"
                let estimate = try await catalog.estimatedRows(table)
                logger.info("snapshot: reading", metadata: ["table": "\(table)", "estimated.rows": "\(estimate)"])
                try await sink.ensureTopic(envelope.topic(relation))
                var done: Int64 = 0
                var lastReport = ContinuousClock.now
                var pending: [PgColumnValue]? = nil
                func emit(_ row: [PgColumnValue], last: Bool) async throws {
                    let record = envelope.snapshotRecord(relation, row: row, transaction: transaction, lsn: lsn, last: last,
                                                         nowMs: currentTimeMs())
                    try await sink.send(record, batch, position)
                    done += 1
                    rows += 1
                    if ContinuousClock.now - lastReport > .seconds(5) {
                        lastReport = ContinuousClock.now
                        logger.info("snapshot: progress", metadata: ["table": "\(table)", "rows": "\(done)/\(Swift.max(done, estimate))"])
                    }
                }
                try await catalog.readRows(relation) { row in
                    if stopping { throw StopRequested() }
                    if let previous = pending { try await emit(previous, last: false) }
                    pending = row
                }
                if let previous = pending { try await emit(previous, last: index == relations.count - 1) }
                logger.info("snapshot: table done", metadata: ["table": "\(table)", "rows": "\(done)"])
            }
        }
        position.seal(batch, end: lsn, commitTimeMs: currentTimeMs())
        try await sink.flush(position)
        logger.info("snapshot complete", metadata: [
            "rows": "\(rows)", "tables": "\(tables.count)", "seconds": "\((ContinuousClock.now - started).components.seconds)",
        ])
    }

    // MARK: Streaming

    private func stream(_ replication: PostgresReplicationConnection, from start: LSN, catalog: PostgresCatalog, sink: ChangeSink,
                        state: inout ConnectorState) async throws {
        try await replication.startReplication(slot: configuration.slotName, from: start, options: [
            ("proto_version", "1"), ("publication_names", identifier(configuration.publicationName)), ("messages", "true"),
        ])
        logger.info("streaming changes", metadata: ["slot": "\(configuration.slotName)", "lsn": "\(start)"])
        let envelope = DebeziumEnvelope(prefix: configuration.prefix, database: configuration.connection.database,
                                        mapper: DebeziumValueMapper(decimalHandling: configuration.decimalHandling),
                                        tombstonesOnDelete: configuration.tombstonesOnDelete)
        let outbox = OutboxEventRouter()
        let position = AcknowledgedPosition(start: start)
        let waker = replication.waker
        let ticker = Task {
            while !Task.isCancelled {
                try await Task.sleep(for: .milliseconds(250))
                waker.wake()
            }
        }
        let heartbeatMs = configuration.heartbeatIntervalMs
        let heartbeats = heartbeatMs <= 0 ? nil : Task { [logger] in
            while !Task.isCancelled {
                try await Task.sleep(for: .milliseconds(heartbeatMs))
                do {
                    try await catalog.emitHeartbeat(prefix: Self.heartbeatPrefix)
                } catch {
                    logger.warning("heartbeat failed", metadata: ["error": "\(error)"])
                }
            }
        }
        defer {
            ticker.cancel()
            heartbeats?.cancel()
        }

        var relations: [UInt32: PgRelation] = [:]
        var transaction: (ChangeTransaction, AcknowledgedPosition.Transaction)? = nil
        var received = start
        var reported = start
        var lastStatus = ContinuousClock.now
        var lastSave = ContinuousClock.now
        var rate = EventRate(delivered: 0)
        let statusInterval = Duration.milliseconds(configuration.statusUpdateIntervalMs)

        while !stopping {
            if let failure = position.failure {
                throw CDCError.delivery("the broker refused a change event (\(failure)); the slot stays at \(position.confirmable)")
            }
            var replyRequested = false
            switch try await replication.nextReplicationMessage() {
            case .xlogData(let walStart, _, _, let payload):
                let message: PgOutputMessage
                do {
                    message = try PgOutputMessage(decoding: payload)
                } catch {
                    logger.error("a pgoutput message could not be decoded and was skipped", metadata: ["lsn": "\(walStart)", "error": "\(error)"])
                    continue
                }
                if walStart > received { received = walStart }
                switch message {
                case .begin(let final, let time, let xid):
                    transaction = (ChangeTransaction(xid: xid, commitLSN: final, commitTimeMicros: time), position.open())
                case .relation(var relation):
                    let key = try await catalog.primaryKey(relationID: relation.id)
                    if !key.isEmpty {  // Debezium's key is the primary key, whatever REPLICA IDENTITY marks
                        for index in relation.columns.indices { relation.columns[index].isKey = key.contains(relation.columns[index].name) }
                    }
                    relations[relation.id] = relation
                case .insert(let id, _), .update(let id, _, _, _), .delete(let id, _, _):
                    guard let (current, batch) = transaction, let relation = relations[id] else {
                        logger.error("a change outside a transaction or of an unknown relation was skipped", metadata: ["lsn": "\(walStart)"])
                        continue
                    }
                    let lsn = walStart == .zero ? current.commitLSN : walStart
                    let records: [ChangeRecord]
                    if configuration.outboxTables.contains("\(relation.namespace).\(relation.name)") {
                        records = outbox.records(for: message, relation: relation, lsn: lsn, logger: logger)
                    } else {
                        records = envelope.records(for: message, relations: relations, transaction: current, lsn: lsn, nowMs: currentTimeMs()) ?? []
                    }
                    for record in records {
                        try await sink.ensureTopic(record.topic)
                        try await sink.send(record, batch, position)
                    }
                case .truncate:
                    guard let (current, batch) = transaction else { continue }
                    let lsn = walStart == .zero ? current.commitLSN : walStart
                    for record in envelope.records(for: message, relations: relations, transaction: current, lsn: lsn, nowMs: currentTimeMs()) ?? [] {
                        try await sink.ensureTopic(record.topic)
                        try await sink.send(record, batch, position)
                    }
                case .commit(_, let end, let time):
                    if let (_, batch) = transaction { position.seal(batch, end: end, commitTimeMs: Self.epochMs(postgresMicros: time)) }
                    transaction = nil
                    if end > received { received = end }
                case .message(let transactional, let lsn, let prefix, _) where !transactional && prefix == Self.heartbeatPrefix:
                    let batch = position.open()
                    try await sink.sendHeartbeat(batch, position)
                    // Past the message: confirming its own LSN would have it sent again.
                    position.seal(batch, end: LSN(lsn.value + 1), commitTimeMs: currentTimeMs())
                    if lsn > received { received = lsn }
                default:
                    break
                }
            case .keepalive(_, _, let reply):
                replyRequested = reply
            case .wakeup:
                break
            case .end:
                throw CDCError.database("PostgreSQL ended the replication stream")
            }
            let confirmable = position.confirmable
            if replyRequested || confirmable != reported || ContinuousClock.now - lastStatus >= statusInterval {
                try await replication.sendStandbyStatus(written: Swift.max(received, confirmable), flushed: confirmable, applied: confirmable)
                reported = confirmable
                lastStatus = ContinuousClock.now
            }
            if ContinuousClock.now - lastSave >= .seconds(5) {
                lastSave = ContinuousClock.now
                state.record(position: position, rate: &rate)
                try await sink.saveState(state)
            }
        }
        // Stopping: what is in flight gets its answer, then the slot learns what was delivered.
        try await sink.flush(position, allowPending: true)
        let confirmable = position.confirmable
        try await replication.sendStandbyStatus(written: Swift.max(received, confirmable), flushed: confirmable, applied: confirmable)
        state.record(position: position, rate: &rate)
        try await sink.saveState(state)
        logger.info("stopped", metadata: ["slot": "\(configuration.slotName)", "confirmed": "\(confirmable)", "events": "\(position.delivered)"])
    }

    /// The prefix of the connector's heartbeat messages (`pg_logical_emit_message`).
    static let heartbeatPrefix = "fjord-heartbeat"

    static func epochMs(postgresMicros: Int64) -> Int64 { postgresMicros / 1000 + 946_684_800_000 }
}

/// Thrown out of a snapshot when `stop()` was called: the connector then ends cleanly.
struct StopRequested: Error {}

func currentTimeMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

/// Microseconds since 2000-01-01 UTC, PostgreSQL's epoch.
func postgresMicrosecondsNow() -> Int64 { Int64((Date().timeIntervalSince1970 - 946_684_800) * 1_000_000) }

/// Events per second over the last interval, for the connector's saved state.
struct EventRate {
    var delivered: Int
    var at = ContinuousClock.now
}

/// What `fjord cdc status` shows: the slot as PostgreSQL has it and the connector's saved state.
public struct ConnectorStatus: Sendable {
    public var slot: String
    public var slotExists: Bool
    public var active: Bool
    public var confirmed: LSN
    /// WAL the slot holds that the connector has not confirmed.
    public var lagBytes: Int64
    /// Since the newest confirmed transaction committed, when there is lag (0 when caught up).
    public var lagSeconds: Double
    public var state: ConnectorState?
}

extension PostgresConnector {
    /// Reads the slot's position and lag from PostgreSQL and the connector's saved state from
    /// the offsets topic (whether or not the connector runs).
    public static func status(_ configuration: PostgresConnectorConfiguration, clientProperties: [String: String],
                              logger: Logger) async throws -> ConnectorStatus {
        let catalog = try await PostgresCatalog.connect(configuration.connection, logger: logger)
        let slot: (confirmed: LSN, active: Bool, plugin: String, database: String)?
        let lagBytes: Int64
        do {
            slot = try await catalog.slot(configuration.slotName)
            lagBytes = try await catalog.slotLagBytes(configuration.slotName) ?? 0
            await catalog.close()
        } catch {
            await catalog.close()
            throw error
        }
        var consumerProperties = clientProperties
        consumerProperties["client.id"] = "fjord-cdc-status"
        consumerProperties["enable.auto.commit"] = "false"
        // No offsets topic yet (the connector never ran against this cluster): no state.
        let state = try? await ChangeSink.loadState(slot: configuration.slotName, topic: configuration.offsetsTopic,
                                                    consumerProperties: consumerProperties)
        var lagSeconds = 0.0
        if lagBytes > 0, let committed = state?.committedAtMs, committed > 0 {
            lagSeconds = Swift.max(0, Double(currentTimeMs() - committed) / 1000)
        }
        return ConnectorStatus(slot: configuration.slotName, slotExists: slot != nil, active: slot?.active ?? false,
                               confirmed: slot?.confirmed ?? .zero, lagBytes: lagBytes, lagSeconds: lagSeconds, state: state)
    }
}
