import FjordClient
import FjordPostgresReplication
import FjordProtocol
import Foundation
import Logging
import NIOCore
import Synchronization

/// Where a connector's events go: one idempotent `acks=all` producer, the topics it creates on
/// first use, and the connector's saved state (`ConnectorState`) in the offsets topic.
///
/// Every event sent is counted against its transaction in an `AcknowledgedPosition` before it
/// is handed over, and answered there by the producer's delivery report.
final class ChangeSink: Sendable {
    let producer: KafkaProducer
    private let admin: KafkaAdmin
    private let consumerProperties: [String: String]
    private let configuration: PostgresConnectorConfiguration
    private let logger: Logger
    private let knownTopics = Mutex<Set<String>>([])

    init(producer: KafkaProducer, clientProperties: [String: String], configuration: PostgresConnectorConfiguration, logger: Logger) async throws {
        var client = ClientConfiguration(bootstrap: clientProperties["bootstrap.servers"] ?? "127.0.0.1:9092", clientID: "fjord-cdc-admin")
        var consumerProperties: [String: String] = [:]
        for (key, value) in clientProperties.sorted(by: { $0.key < $1.key }) where try client.apply(key, value) {
            consumerProperties[key] = value
        }
        consumerProperties["client.id"] = "fjord-cdc-state"
        consumerProperties["enable.auto.commit"] = "false"
        self.admin = try await KafkaAdmin.connect(client)
        self.producer = producer
        self.consumerProperties = consumerProperties
        self.configuration = configuration
        self.logger = logger
    }

    func close() async {
        await producer.close()
        await admin.close()
    }

    /// Creates `topic` unless it exists (broker defaults; the offsets topic compacted with one partition).
    func ensureTopic(_ topic: String) async throws {
        if knownTopics.withLock({ $0.contains(topic) }) { return }
        let isState = topic == configuration.offsetsTopic
        do {
            try await admin.createTopic(topic, partitions: isState ? 1 : -1, configs: isState ? ["cleanup.policy": "compact"] : [:])
            logger.info("created topic", metadata: ["topic": "\(topic)"])
        } catch ClientError.kafka(.topicAlreadyExists, _) {
        } catch {
            // Perhaps not allowed to create topics: the broker may still create it on first use.
            logger.warning("could not create topic; relying on the broker's auto-creation", metadata: ["topic": "\(topic)", "error": "\(error)"])
        }
        _ = knownTopics.withLock { $0.insert(topic) }
    }

    /// Hands `record` to the producer as part of `transaction`.
    func send(_ record: ChangeRecord, _ transaction: AcknowledgedPosition.Transaction, _ position: AcknowledgedPosition) async throws {
        position.submitted(transaction)
        do {
            try await producer.produce(topic: record.topic, key: record.key.map { ByteBuffer(string: $0) }, value: record.value.map { ByteBuffer(string: $0) },
                                       headers: record.headers.map { RecordHeader(key: $0.key, value: ByteBuffer(string: $0.value)) }) { result in
                switch result {
                case .success: position.completed(transaction, error: nil)
                case .failure(let error): position.completed(transaction, error: error)
                }
            }
        } catch {
            position.completed(transaction, error: error)
            throw CDCError.delivery("\(record.topic): \(error)")
        }
    }

    /// A heartbeat record, as Debezium's: key `{"serverName": prefix}`, value `{"ts_ms": now}`.
    func sendHeartbeat(_ transaction: AcknowledgedPosition.Transaction, _ position: AcknowledgedPosition) async throws {
        let topic = configuration.heartbeatTopic
        try await ensureTopic(topic)
        let key: DebeziumValue = .object([("serverName", .string(configuration.prefix))])
        let value: DebeziumValue = .object([("ts_ms", .int(currentTimeMs()))])
        try await send(ChangeRecord(topic: topic, key: key.json, value: value.json, lsn: .zero), transaction, position)
    }

    /// Waits for every event handed over; fails if the broker refused one, or (unless
    /// `allowPending`) if a transaction is still open.
    func flush(_ position: AcknowledgedPosition, allowPending: Bool = false) async throws {
        await producer.flush()
        if let failure = position.failure { throw CDCError.delivery("the broker refused a change event: \(failure)") }
        if !allowPending && !position.isIdle { throw CDCError.delivery("events were not acknowledged") }
    }

    // MARK: State

    func saveState(_ state: ConnectorState) async throws {
        try await ensureTopic(configuration.offsetsTopic)
        var state = state
        state.updatedAtMs = currentTimeMs()
        let value = try JSONEncoder().encode(state)
        do {
            _ = try await producer.send(topic: configuration.offsetsTopic, key: ByteBuffer(string: state.slot), value: ByteBuffer(bytes: value))
        } catch {
            throw CDCError.delivery("saving the connector's state to \(configuration.offsetsTopic): \(error)")
        }
    }

    /// The connector's last saved state, if any.
    func loadState() async throws -> ConnectorState? {
        try await ensureTopic(configuration.offsetsTopic)
        return try await Self.loadState(slot: configuration.slotName, topic: configuration.offsetsTopic, consumerProperties: consumerProperties)
    }

    /// Reads the offsets topic to its end and returns the newest state saved under `slot`.
    static func loadState(slot: String, topic: String, consumerProperties: [String: String]) async throws -> ConnectorState? {
        let consumer = try await KafkaConsumer.connect(try ConsumerConfiguration(properties: consumerProperties))
        do {
            let partition = TopicPartition(topic, 0)
            let end = try await consumer.endOffsets([partition])[partition] ?? Offset(0)
            var found: ConnectorState? = nil
            if end > Offset(0) {
                try await consumer.assign(topic: topic, partitions: [0], from: .earliest)
                let deadline = ContinuousClock.now + .seconds(30)
                while (await consumer.position(topic: topic, partition: 0) ?? Offset(0)) < end {
                    guard ContinuousClock.now < deadline else { throw CDCError.delivery("reading \(topic) timed out") }
                    for record in try await consumer.poll() where record.key.map({ String(buffer: $0) }) == slot {
                        found = record.value.flatMap { try? JSONDecoder().decode(ConnectorState.self, from: Data($0.readableBytesView)) }
                    }
                }
            }
            await consumer.close()
            return found
        } catch {
            await consumer.close()
            throw error
        }
    }
}

/// What a connector saves of its progress (JSON in the offsets topic, keyed by slot name):
/// whether its snapshot completed, the position it confirmed, and its throughput, which
/// `fjord cdc status` reports.
public struct ConnectorState: Codable, Sendable, Equatable {
    public var slot: String
    public var snapshotCompleted = false
    /// The slot position confirmed so far (PostgreSQL's LSN text).
    public var lsn = "0/0"
    /// Events delivered since the connector first started.
    public var events = 0
    public var eventsPerSecond = 0.0
    /// Commit time (ms since the epoch) of the newest confirmed transaction.
    public var committedAtMs: Int64 = 0
    public var updatedAtMs: Int64 = 0

    public init(slot: String) { self.slot = slot }

    mutating func record(position: AcknowledgedPosition, rate: inout EventRate) {
        let delivered = position.delivered
        let now = ContinuousClock.now
        let seconds = Double((now - rate.at).components.attoseconds) / 1e18 + Double((now - rate.at).components.seconds)
        events += delivered - rate.delivered
        if seconds > 0 { eventsPerSecond = Double(delivered - rate.delivered) / seconds }
        rate = EventRate(delivered: delivered, at: now)
        lsn = position.confirmable.description
        let committed = position.confirmedCommitTimeMs
        if committed > 0 { committedAtMs = committed }
    }
}
