@testable import FjordBroker
import FjordProtocol
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
            #expect(advertised[APIKey.produce.rawValue] == 0...9)
            for (key, handler) in KafkaAPIs.handlers {
                #expect(key.validVersions.contains(handler.versions.lowerBound) && key.validVersions.contains(handler.versions.upperBound),
                        "\(key.name) advertises versions its schema does not define")
            }
        }
    }

    @Test("CreateTopics, Produce, ListOffsets and Metadata through their handlers")
    func produceAndList() async throws {
        try await withBrokerCore { core in
            var create = CreateTopicsRequest()
            var topic = CreateTopicsRequest.CreatableTopic()
            topic.name = "orders"
            topic.numPartitions = 2
            topic.replicationFactor = 1
            create.topics = [topic]
            let created = core.apis.handleCreateTopics(create, version: 7)
            #expect(created.topics.map(\.errorCode) == [0])

            var builder = RecordBatchBuilder()
            for i in 0..<5 { builder.append(timestamp: 1_000 + Int64(i), key: ByteBuffer(string: "k\(i)"), value: ByteBuffer(string: "v\(i)")) }
            var produce = ProduceRequest()
            produce.acks = 1
            produce.timeoutMs = 1_000
            var data = ProduceRequest.TopicProduceData()
            data.name = "orders"
            var partition = ProduceRequest.PartitionProduceData()
            partition.index = 1
            partition.records = try builder.build().bytes
            data.partitionData = [partition]
            produce.topicData = [data]
            let produced = try #require(await core.apis.handleProduce(produce, version: 9))
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
            let described = await core.apis.handleMetadata(metadata, version: 12)
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
}
