import FjordBroker
import FjordMetadata
import FjordStorage
import Testing

@Suite("Broker configuration")
struct BrokerConfigTests {
    @Test("listeners get their security protocol from the map; TLS listeners their ssl.* settings, per listener first")
    func securityProtocols() throws {
        let config = try BrokerConfig.parse(properties: """
            listeners=PLAINTEXT://127.0.0.1:9092,SSL://0.0.0.0:9093,INTERNAL://127.0.0.1:9094
            advertised.listeners=PLAINTEXT://kafka.example:9092,SSL://kafka.example:9093,INTERNAL://10.0.0.1:9094
            listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,INTERNAL:SASL_SSL
            inter.broker.listener.name=PLAINTEXT
            ssl.keystore.location=/etc/fjord/broker.pem
            listener.name.internal.ssl.keystore.location=/etc/fjord/internal.pem
            ssl.client.auth=required
            ssl.truststore.location=/etc/fjord/ca.pem
            ssl.enabled.protocols=TLSv1.3
            """)
        #expect(config.listeners.map(\.securityProtocol) == [.plaintext, .ssl, .saslSSL])
        #expect(config.ssl["SSL"]?.keystoreLocation == "/etc/fjord/broker.pem")
        #expect(config.ssl["INTERNAL"]?.keystoreLocation == "/etc/fjord/internal.pem", "listener.name.<name>.ssl.* wins")
        #expect(config.ssl["SSL"]?.clientAuth == .required)
        #expect(config.ssl["SSL"]?.enabledProtocols == ["TLSv1.3"])
        #expect(config.ssl["PLAINTEXT"] == nil)
        #expect(config.unknownKeys.isEmpty)
        #expect(config.advertised("INTERNAL")?.host == "10.0.0.1")
        let registration = config.registration
        #expect(registration.host == "kafka.example" && registration.port == 9092)
        #expect(registration.on(listener: "SSL").port == 9093)
        #expect(registration.on(listener: "INTERNAL").host == "10.0.0.1")
        #expect(config.interBrokerListener.name == "PLAINTEXT")

        for (properties, fragment) in [
            ("listeners=CUSTOM://127.0.0.1:9092", "no security protocol defined for listener CUSTOM"),
            ("listeners=SSL://127.0.0.1:9093", "has no certificate"),
            ("listeners=PLAINTEXT://127.0.0.1:9092\nlistener.security.protocol.map=PLAINTEXT:TLS", "expected NAME:PROTOCOL"),
            ("listeners=PLAINTEXT://127.0.0.1:9092\ninter.broker.listener.name=REPLICATION", "is not one of listeners"),
            ("listeners=SSL://127.0.0.1:9093\nssl.keystore.location=/k.pem\nssl.client.auth=required", "needs ssl.truststore.location"),
            ("listeners=SSL://127.0.0.1:9093\nssl.keystore.location=/k.pem\nssl.enabled.protocols=TLSv1.1", "TLSv1.1 is not supported"),
        ] {
            #expect(throws: ConfigError.self) { try BrokerConfig.parse(properties: properties) }
            do {
                _ = try BrokerConfig.parse(properties: properties)
            } catch {
                #expect(error.message.contains(fragment), "\(properties): \(error.message)")
            }
        }
    }

    @Test("server.properties keys, --set overrides and Kafka's retention precedence")
    func parsing() throws {
        let config = try BrokerConfig.parse(properties: """
            # comment
            node.id=7
            listeners=PLAINTEXT://0.0.0.0:9093,OTHER://127.0.0.1:9094
            listener.security.protocol.map=PLAINTEXT:PLAINTEXT,OTHER:SASL_PLAINTEXT
            log.dirs=/var/lib/fjord
            log.retention.hours=2
            log.retention.minutes=30
            log.segment.bytes = 1048576
            auto.create.topics.enable: false
            mystery.key=1
            """, overrides: ["num.partitions": "4"])
        #expect(config.nodeID == 7)
        #expect(config.listeners.map(\.port) == [9093, 9094])
        #expect(config.listeners.map(\.securityProtocol) == [.plaintext, .saslPlaintext])
        #expect(config.advertised.host == "127.0.0.1", "a wildcard listener advertises loopback")
        #expect(config.logDirs == ["/var/lib/fjord"])
        #expect(config.logConfig.retentionMs == 30 * 60_000, "minutes win over hours")
        #expect(config.logConfig.segmentBytes == 1_048_576)
        #expect(!config.autoCreateTopicsEnable)
        #expect(config.numPartitions == 4)
        #expect(config.unknownKeys == ["mystery.key"])
    }

    @Test("metrics.listener takes http://HOST:PORT; without it no endpoint is served")
    func metricsListener() throws {
        #expect(try BrokerConfig.parse().metricsListener == nil)
        let listener = try #require(try BrokerConfig.parse(overrides: ["metrics.listener": "http://0.0.0.0:9404"]).metricsListener)
        #expect(listener.host == "0.0.0.0" && listener.port == 9404)
    }

    @Test("bad values name the key")
    func refusals() {
        for (key, value) in [("num.partitions", "0"), ("listeners", "nowhere"), ("log.segment.bytes", "big"),
                             ("auto.create.topics.enable", "yes"), ("log.cleanup.policy", "shred"),
                             ("metrics.listener", "127.0.0.1:9404"), ("metrics.listener", "http://host:99999"),
                             ("metrics.listener", "http://:9404")] {
            #expect {
                _ = try BrokerConfig.parse(overrides: [key: value])
            } throws: { error in
                "\(error)".contains(key)
            }
        }
    }

    @Test("a stored topic value this version refuses falls back alone; the other keys still apply")
    func storedValuesApplyKeyByKey() throws {
        let config = try BrokerConfig.parse(overrides: [:])
        let log = config.logConfig(dynamicBrokerConfigs: [:], topicConfigs: [
            "max.message.bytes": "3000000000",  // accepted before sizes were capped at Int32.max
            "retention.ms": "-1", "segment.ms": "60000",
        ])
        #expect(log.retentionMs == -1 && log.segmentMs == 60_000, "keys sorted after the refused one are kept")
        #expect(log.maxMessageBytes == config.logConfig.maxMessageBytes)
    }
}
