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

    /// Connects to a leader's `listener` (`inter.broker.listener.name`) with `security`.
    static func factory(clientID: String, listener: String, security: ClientSecurity) -> LeaderEndpointFactory {
        { registration in
            let broker = registration.on(listener: listener)
            let connection = try await BrokerConnection.connect(host: broker.host, port: Int(broker.port), clientID: clientID,
                                                                requestTimeout: .seconds(30), security: security)
            return ClientLeaderEndpoint(connection: connection)
        }
    }

    /// How a follower connects to its leaders, as Kafka's brokers do on the inter-broker
    /// listener: its security protocol; for TLS the listener's truststore (PEM) as the CA and its
    /// PEM keystore as the client certificate; for SASL `sasl.mechanism.inter.broker.protocol`
    /// (default the listener's first enabled mechanism) with the username and password of
    /// `listener.name.<l>.<mechanism>.sasl.jaas.config`, `listener.name.<l>.sasl.jaas.config` or
    /// `sasl.jaas.config`.
    static func security(for config: BrokerConfig) throws -> ClientSecurity {
        let listener = config.interBrokerListener
        guard let secured = ClientSecurity.SecurityProtocol(rawValue: listener.securityProtocol.rawValue) else {
            throw ConfigError("inter.broker.listener.name=\(listener.name): unknown security protocol")
        }
        var security = ClientSecurity(securityProtocol: secured)
        let name = listener.name.lowercased()
        if secured.usesTLS, let ssl = config.ssl[listener.name] {
            guard ssl.truststoreType == .pem, ssl.keystoreType == .pem else {
                throw ConfigError("inter.broker.listener.name=\(listener.name): followers read PEM stores only (ssl.truststore.type, ssl.keystore.type)")
            }
            security.caLocation = ssl.truststoreLocation
            if ssl.clientAuth != .none, let keystore = ssl.keystoreLocation {
                security.certificateLocation = keystore
                security.keyLocation = keystore
                security.keyPassword = ssl.keyPassword
            }
        }
        if secured.usesSASL {
            let mechanism = config.raw["sasl.mechanism.inter.broker.protocol"]?.uppercased()
                ?? config.saslEnabledMechanisms[listener.name]?.first ?? "SCRAM-SHA-512"
            _ = try security.apply("sasl.mechanism", mechanism)
            let jaas = config.raw["listener.name.\(name).\(mechanism.lowercased()).sasl.jaas.config"]
                ?? config.raw["listener.name.\(name).sasl.jaas.config"] ?? config.raw["sasl.jaas.config"]
            guard let jaas else {
                throw ConfigError("inter.broker.listener.name=\(listener.name) uses SASL: set listener.name.\(name).\(mechanism.lowercased())"
                    + ".sasl.jaas.config with the broker's username=\"…\" password=\"…\"")
            }
            _ = try security.apply("sasl.jaas.config", jaas)
            if let problem = security.problem { throw ConfigError("inter.broker.listener.name=\(listener.name): \(problem)") }
        }
        return security
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
