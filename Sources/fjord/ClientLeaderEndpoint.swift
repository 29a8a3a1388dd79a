import FjordBroker
import FjordClient
import FjordMetadata
import FjordProtocol
import NIOCore

/// A follower's connection to its leader over the native client's `BrokerConnection` (the
/// broker module opens no sockets; the executable joins the two, as Kafka's replica fetcher
/// runs on its clients' `NetworkClient`).
///
/// The fetch's response timeout is the request timeout plus the long poll's wait, so a caught-up
/// follower's idle poll is never taken for a dead leader.
struct ClientLeaderEndpoint: LeaderEndpoint {
    let connection: BrokerConnection

    /// Connects to a leader's `listener` (`inter.broker.listener.name`).
    static func factory(clientID: String, listener: String) -> LeaderEndpointFactory {
        { registration in
            let broker = registration.on(listener: listener)
            let connection = try await BrokerConnection.connect(host: broker.host, port: Int(broker.port), clientID: clientID,
                                                                requestTimeout: .seconds(30))
            return ClientLeaderEndpoint(connection: connection)
        }
    }

    func fetch(_ request: FetchRequest, version: Int16) async throws -> FetchResponse {
        try await connection.send(request, version: version,
                                  timeout: connection.requestTimeout + .milliseconds(Int64(request.maxWaitMs)))
    }

    func offsetsForLeaderEpoch(_ request: OffsetForLeaderEpochRequest, version: Int16) async throws -> OffsetForLeaderEpochResponse {
        try await connection.send(request, version: version)
    }

    func close() async {
        await connection.close()
    }
}
