import FjordClient
import FjordProtocol
import FjordTesting
import Testing

@Suite("BrokerConnection against an in-process broker")
struct BrokerConnectionTests {
    @Test("negotiates API versions and pipelines requests on one connection")
    func negotiateAndPipeline() async throws {
        let broker = try await InProcessBroker.start()
        let connection = try await BrokerConnection.connect(host: "127.0.0.1", port: broker.port)
        #expect(try connection.version(of: .metadata) == 12, "the highest version both sides have")
        #expect(try connection.version(of: .produce) == 11)
        #expect(connection.versions(of: .addPartitionsToTxn) == nil)

        var create = CreateTopicsRequest()
        var topic = CreateTopicsRequest.CreatableTopic()
        topic.name = "swift-client"
        topic.numPartitions = 3
        topic.replicationFactor = 1
        create.topics = [topic]
        create.timeoutMs = 10_000
        let created = try await connection.send(create)
        #expect(created.topics.first?.errorCode == 0)

        // Several requests in flight at once are answered in order and matched by correlation id.
        try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    var request = MetadataRequest()
                    var wanted = MetadataRequest.MetadataRequestTopic()
                    wanted.name = "swift-client"
                    request.topics = [wanted]
                    let response = try await connection.send(request)
                    return response.topics.first?.partitions.count ?? -1
                }
            }
            for try await count in group { #expect(count == 3) }
        }
        await connection.close()
        try await broker.stop()
    }

    @Test("an unreachable broker fails with a clear connection error")
    func unreachable() async throws {
        await #expect(throws: ClientError.self) {
            _ = try await BrokerConnection.connect(host: "127.0.0.1", port: 1)
        }
    }
}
