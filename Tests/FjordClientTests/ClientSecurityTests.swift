@testable import FjordClient
import Testing

/// Security properties as librdkafka and Kafka's Java clients name them.
struct ClientSecurityTests {
    @Test("security.protocol, TLS files and SASL credentials, from -X style properties and a JAAS line")
    func properties() throws {
        var configuration = ClientConfiguration(bootstrap: "127.0.0.1:9092")
        for (key, value) in [("security.protocol", "sasl_ssl"), ("ssl.ca.location", "/ca.pem"), ("sasl.mechanisms", "scram-sha-512"),
                             ("sasl.jaas.config", #"org.apache.kafka.common.security.scram.ScramLoginModule required username="ann" password="p\"w";"#),
                             ("ssl.endpoint.identification.algorithm", "none")] {
            #expect(try configuration.apply(key, value))
        }
        let security = configuration.security
        #expect(security.securityProtocol == .saslSSL)
        #expect(security.caLocation == "/ca.pem")
        #expect(security.saslMechanism == "SCRAM-SHA-512")
        #expect(security.saslUsername == "ann" && security.saslPassword == #"p"w"#)
        #expect(!security.verifyHostname && security.verifyCertificate)
        #expect(security.problem == nil)
    }

    @Test("what cannot connect is said before connecting")
    func problems() throws {
        var security = ClientSecurity(securityProtocol: .saslPlaintext)
        #expect(security.problem?.contains("sasl.mechanism") == true)
        _ = try security.apply("sasl.mechanism", "PLAIN")
        #expect(security.problem?.contains("sasl.username") == true)
        #expect(throws: ClientError.self) { try security.apply("sasl.mechanism", "GSSAPI") }
        #expect(throws: ClientError.self) { try security.apply("security.protocol", "tls") }
        #expect(throws: ClientError.self) { try security.apply("ssl.truststore.type", "JKS") }
    }
}
