@testable import FjordBroker
import FjordProtocol
import Foundation
import Logging
import NIOCore
import Synchronization

/// A clock the test moves by hand.
final class ManualClock: Sendable {
    private let now: Mutex<Int64>

    init(_ start: Int64 = 1_700_000_000_000) { now = Mutex(start) }

    var milliseconds: Int64 { now.withLock { $0 } }
    func advance(by milliseconds: Int64) { now.withLock { $0 += milliseconds } }
    var function: @Sendable () -> Int64 { { [self] in milliseconds } }
}

/// A broker core (storage, metadata, handlers, group coordinator) in a temporary directory,
/// without a server or sockets: tests call its handlers with decoded requests.
final class BrokerCore: Sendable {
    let directory: URL
    let clock: ManualClock
    let broker: Broker
    var apis: KafkaAPIs { broker.apis }
    var coordinator: GroupCoordinator { broker.apis.groupCoordinator }

    static func start(_ settings: [String: String] = [:], clock: ManualClock = ManualClock()) async throws -> BrokerCore {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fjord-core-\(UUID().uuidString)")
        var overrides = ["log.dirs": directory.path, "listeners": "PLAINTEXT://127.0.0.1:9092", "group.initial.rebalance.delay.ms": "0",
                         "offsets.topic.num.partitions": "2", "group.min.session.timeout.ms": "100"]
        for (key, value) in settings { overrides[key] = value }
        var logger = Logger(label: "fjord-core-test")
        logger.logLevel = .warning
        let broker = try await Broker.start(config: try BrokerConfig.parse(overrides: overrides), logger: logger, clock: clock.function)
        return BrokerCore(directory: directory, clock: clock, broker: broker)
    }

    private init(directory: URL, clock: ManualClock, broker: Broker) {
        self.directory = directory
        self.clock = clock
        self.broker = broker
    }

    /// Creates a topic through the CreateTopics handler and returns its result.
    func createTopic(_ name: String, partitions: Int32 = 1) async -> CreateTopicsResponse.CreatableTopicResult? {
        var create = CreateTopicsRequest()
        var topic = CreateTopicsRequest.CreatableTopic()
        topic.name = name
        topic.numPartitions = partitions
        topic.replicationFactor = 1
        create.topics = [topic]
        return await apis.handleCreateTopics(create, version: 7).topics.first
    }

    /// Produces one batch of `values` (timestamps 1000, 1001, …) to a partition through the
    /// Produce handler at `version`.
    func produce(_ topic: String, partition: Int32 = 0, keys: [String?]? = nil, values: [String],
                 version: Int16 = 9) async throws -> ProduceResponse? {
        var builder = RecordBatchBuilder()
        for (i, value) in values.enumerated() {
            builder.append(timestamp: 1_000 + Int64(i), key: keys?[i].map { ByteBuffer(string: $0) }, value: ByteBuffer(string: value))
        }
        var produce = ProduceRequest()
        produce.acks = 1
        produce.timeoutMs = 1_000
        var data = ProduceRequest.TopicProduceData()
        data.name = topic
        var entry = ProduceRequest.PartitionProduceData()
        entry.index = partition
        entry.records = try builder.build().bytes
        data.partitionData = [entry]
        produce.topicData = [data]
        return await apis.handleProduce(produce, version: version, listener: "PLAINTEXT")
    }

    func shutdown() async throws {
        try await broker.shutdown()
        try? FileManager.default.removeItem(at: directory)
    }
}

/// Runs `body` with a fresh broker core and shuts it down afterwards, also when `body` throws.
func withBrokerCore(_ settings: [String: String] = [:], clock: ManualClock = ManualClock(),
                    _ body: (BrokerCore) async throws -> Void) async throws {
    let core = try await BrokerCore.start(settings, clock: clock)
    do {
        try await body(core)
    } catch {
        try await core.shutdown()
        throw error
    }
    try await core.shutdown()
}
