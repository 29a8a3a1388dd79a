import FjordClient
import FjordProtocol
import FjordTesting
import Glibc
import NIOCore
import NIOPosix
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

/// A server that answers the first bytes it reads with a TCP reset (SO_LINGER 0, then close),
/// as a broker that dies mid-request does.
private final class ResetOnRead: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let channel = context.channel
        guard let socket = channel as? any SocketOptionProvider else { return channel.close(promise: nil) }
        socket.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in channel.close(promise: nil) }
    }
}

@Suite("BrokerConnection's errors")
struct BrokerConnectionErrorTests {
    /// ECONNRESET reaches NIO as a raw `IOError`; callers decide whether to retry by
    /// `ClientError.isRetriable`, so the connection must report it as `.connection` (a producer
    /// once failed a record with "Connection reset by peer" during a broker restart).
    @Test("a connection reset by the broker is a retriable connection error")
    func resetIsConnectionError() async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(ResetOnRead()) } }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(server.localAddress?.port)
        do {
            _ = try await BrokerConnection.connect(host: "127.0.0.1", port: port, requestTimeout: .seconds(5))
            Issue.record("connected to a server that resets every connection")
        } catch let error as ClientError {
            #expect(error.isRetriable, "\(error)")
            guard case .connection = error else { Issue.record("not a connection error: \(error)"); return }
        } catch {
            Issue.record("a raw error escaped: \(error)")
        }
        try await server.close()
    }
}
