@testable import FjordBroker
import FjordMetadata
import FjordProtocol
import FjordStorage
import NIOCore
import Testing

@Suite("KafkaAPIs handlers, called with decoded requests")
struct KafkaAPIsTests {
    @Test("ApiVersions advertises exactly the APIs of the dispatch table, each with its handler's versions")
    func apiVersionsFollowsTheTable() async throws {
        try await withBrokerCore { core in
            let response = core.apis.apiVersionsResponse(error: .noError)
            let advertised = Dictionary(uniqueKeysWithValues: response.apiKeys.map { ($0.apiKey, $0.minVersion...$0.maxVersion) })
            let table = Dictionary(uniqueKeysWithValues: KafkaAPIs.handlers.map { ($0.key.rawValue, $0.value.versions) })
            #expect(advertised == table)
            #expect(advertised[APIKey.produce.rawValue] == 0...11)
            #expect(advertised[APIKey.fetch.rawValue] == 4...17)
            for (key, handler) in KafkaAPIs.handlers {
                #expect(key.validVersions.contains(handler.versions.lowerBound) && key.validVersions.contains(handler.versions.upperBound),
                        "\(key.name) advertises versions its schema does not define")
            }
        }
    }

    @Test("CreateTopics, Produce, ListOffsets and Metadata through their handlers")
    func produceAndList() async throws {
        try await withBrokerCore { core in
            #expect(await core.createTopic("orders", partitions: 2)?.errorCode == 0)

            let produced = try #require(await core.produce("orders", partition: 1, keys: (0..<5).map { "k\($0)" },
                                                           values: (0..<5).map { "v\($0)" }))
            #expect(produced.responses.first?.partitionResponses.first?.errorCode == 0)
            #expect(produced.responses.first?.partitionResponses.first?.baseOffset == 0)

            var list = ListOffsetsRequest()
            var listTopic = ListOffsetsRequest.ListOffsetsTopic()
            listTopic.name = "orders"
            var listPartition = ListOffsetsRequest.ListOffsetsPartition()
            listPartition.partitionIndex = 1
            listPartition.timestamp = -1
            listTopic.partitions = [listPartition]
            list.topics = [listTopic]
            let listed = core.apis.handleListOffsets(list, version: 7)
            #expect(listed.topics.first?.partitions.first?.offset == 5)

            var metadata = MetadataRequest()
            metadata.topics = nil
            let described = await core.apis.handleMetadata(metadata, version: 12, listener: "PLAINTEXT")
            let orders = try #require(described.topics.first { $0.name == "orders" })
            #expect(orders.partitions.count == 2)
        }
    }

    @Test("a body that does not decode closes the connection; a too-new ApiVersions gets a v0 answer")
    func badFrames() async throws {
        try await withBrokerCore { core in
            var frame = ByteBuffer()
            frame.writeInteger(APIKey.createTopics.rawValue)
            frame.writeInteger(Int16(4))  // v4: not flexible, header v1
            frame.writeInteger(Int32(7))  // correlation id
            frame.writeInteger(Int16(-1))  // client id: null
            frame.writeInteger(Int32(1_000_000))  // a topic count the body does not hold
            guard case .closeConnection(let reason) = await core.apis.handle(frame) else {
                Issue.record("an undecodable body must close the connection")
                return
            }
            #expect(reason.contains("cannot decode CreateTopics v4"))

            var tooNew = ByteBuffer()
            tooNew.writeInteger(APIKey.apiVersions.rawValue)
            tooNew.writeInteger(Int16(99))
            tooNew.writeInteger(Int32(8))
            tooNew.writeInteger(Int16(-1))
            tooNew.writeInteger(UInt8(0))  // header v2: no tagged fields
            guard case .response(let parts) = await core.apis.handle(tooNew), case .bytes(var bytes) = parts.first else {
                Issue.record("a too-new ApiVersions is answered")
                return
            }
            #expect(bytes.readInteger(as: Int32.self) == 8)
            let answer = try ApiVersionsResponse(from: &bytes, version: 0)
            #expect(answer.errorCode == KafkaError.unsupportedVersion.code)
            #expect(!answer.apiKeys.isEmpty)
        }
    }

    @Test("Fetch v13+ addresses topics by id; v16+ names the current leader and its endpoint on FENCED_LEADER_EPOCH")
    func fetchByTopicIDAndLeaderHints() async throws {
        try await withBrokerCore(["broker.rack": "r1"]) { core in
            let topicID = try #require(await core.createTopic("ids")?.topicId)
            #expect(topicID != .zero)

            let produced = try #require(await core.produce("ids", values: ["v0", "v1", "v2"], version: 11))
            #expect(produced.responses.first?.partitionResponses.first?.errorCode == 0)
            #expect(produced.nodeEndpoints.isEmpty)

            for version: Int16 in [13, 15, 16, 17] {
                let known = try await fetch(core, topicID: topicID, currentLeaderEpoch: -1, version: version)
                let answer = try #require(known.body.responses.first?.partitions.first)
                #expect(known.body.responses.first?.topicId == topicID)
                #expect(answer.errorCode == 0 && answer.highWatermark == 3)
                #expect(known.recordBytes > 0, "v\(version) returns the records")

                let unknownID = KafkaUUID(mostSignificantBits: 7, leastSignificantBits: 7)
                let unknown = try await fetch(core, topicID: unknownID, currentLeaderEpoch: -1, version: version)
                #expect(unknown.body.responses.first?.topicId == unknownID)
                #expect(unknown.body.responses.first?.partitions.first?.errorCode == KafkaError.unknownTopicId.code)
            }

            // The controller moved leadership on (epoch 4); a consumer still at epoch 2 is fenced
            // and, from v16, told where the leader is.
            let hosted = try #require(core.apis.replicaManager.partition(TopicPartition(topic: "ids", partition: 0)))
            #expect(try hosted.apply(PartitionRegistration(replicas: [1], isr: [1], leader: 1, leaderEpoch: 4, partitionEpoch: 1), nowMs: 0) == .role)
            #expect(try hosted.apply(PartitionRegistration(replicas: [1], isr: [1], leader: 1, leaderEpoch: 3, partitionEpoch: 2), nowMs: 0) == .none,
                    "leader epochs never go back")
            let fenced = try await fetch(core, topicID: topicID, currentLeaderEpoch: 2, version: 16)
            let answer = try #require(fenced.body.responses.first?.partitions.first)
            #expect(answer.errorCode == KafkaError.fencedLeaderEpoch.code)
            #expect(answer.currentLeader.leaderId == 1 && answer.currentLeader.leaderEpoch == 4)
            #expect(fenced.body.nodeEndpoints.map(\.nodeId) == [1])
            #expect(fenced.body.nodeEndpoints.first?.port == 9092 && fenced.body.nodeEndpoints.first?.rack == "r1")

            let older = try await fetch(core, topicID: topicID, currentLeaderEpoch: 2, version: 15)
            #expect(older.body.responses.first?.partitions.first?.errorCode == KafkaError.fencedLeaderEpoch.code)
            #expect(older.body.responses.first?.partitions.first?.currentLeader == FetchResponse.LeaderIdAndEpoch())
            #expect(older.body.nodeEndpoints.isEmpty)
        }
    }

    /// Sends a sessionless Fetch for partition 0 of `topicID` through the dispatcher and decodes
    /// the answer, reading any file regions back into bytes.
    private func fetch(_ core: BrokerCore, topicID: KafkaUUID, currentLeaderEpoch: Int32,
                       version: Int16) async throws -> (body: FetchResponse, recordBytes: Int) {
        var request = FetchRequest()
        request.maxWaitMs = 0
        request.minBytes = 0
        request.sessionEpoch = -1
        var topic = FetchRequest.FetchTopic()
        topic.topicId = topicID
        var partition = FetchRequest.FetchPartition()
        partition.currentLeaderEpoch = currentLeaderEpoch
        partition.partitionMaxBytes = 1 << 20
        topic.partitions = [partition]
        request.topics = [topic]
        var frame = ByteBuffer()
        try RequestFrame.encode(request, version: version, correlationID: 9, clientID: "test", into: &frame)
        guard case .response(let parts) = await core.apis.handle(frame) else {
            Issue.record("Fetch v\(version) is answered")
            return (FetchResponse(), 0)
        }
        var bytes = ByteBuffer()
        var recordBytes = 0
        for part in parts {
            switch part {
            case .bytes(var chunk): bytes.writeBuffer(&chunk)
            case .file(let slice):
                var chunk = try slice.readBytes()
                recordBytes += chunk.readableBytes
                bytes.writeBuffer(&chunk)
            }
        }
        let decoded = try ResponseFrame.decode(bytes, apiKey: .fetch, version: version)
        return (try #require(decoded.body as? FetchResponse), recordBytes)
    }
}
