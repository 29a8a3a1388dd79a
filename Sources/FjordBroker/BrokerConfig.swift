public import FjordStorage
import FjordMetadata

/// Why a configuration was refused: the message names the key and what was expected.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Kafka's security protocols: how a listener's connections are carried (TLS or not) and
/// whether they authenticate with SASL first.
public enum SecurityProtocol: String, Sendable, Equatable, CaseIterable {
    case plaintext = "PLAINTEXT"
    case ssl = "SSL"
    case saslPlaintext = "SASL_PLAINTEXT"
    case saslSSL = "SASL_SSL"

    /// Whether connections run over TLS.
    public var usesTLS: Bool { self == .ssl || self == .saslSSL }
    /// Whether a client must authenticate with SASL before any other request.
    public var usesSASL: Bool { self == .saslPlaintext || self == .saslSSL }
}

/// A listener: Kafka's `NAME://host:port`, with the security protocol its name maps to in
/// `listener.security.protocol.map`.
public struct Listener: Sendable, Equatable, CustomStringConvertible {
    public var name: String
    public var host: String
    public var port: Int
    public var securityProtocol: SecurityProtocol = .plaintext

    public var description: String { "\(name)://\(host):\(port)" }

    /// Parses `PLAINTEXT://host:port` (also `host:port`, meaning PLAINTEXT).
    public init(parsing text: String) throws(ConfigError) {
        var rest = text.trimmingCharacters()
        var name = "PLAINTEXT"
        let parts = rest.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
        if parts.count == 2 {
            name = String(parts[0])
            rest = String(parts[1])
        }
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]), (0...65535).contains(port) else {
            throw ConfigError("listener '\(text)': expected NAME://host:port")
        }
        var host = String(rest[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.name = name
        self.host = host.isEmpty ? "0.0.0.0" : host
        self.port = port
    }

    public init(name: String, host: String, port: Int, securityProtocol: SecurityProtocol = .plaintext) {
        self.name = name
        self.host = host
        self.port = port
        self.securityProtocol = securityProtocol
    }
}

/// `ssl.client.auth`: whether a TLS listener asks clients for a certificate.
public enum SSLClientAuth: String, Sendable, Equatable {
    case none, requested, required
}

/// One TLS listener's settings, from Kafka's `ssl.*` keys (a `listener.name.<name>.ssl.*`
/// key overrides the plain one for that listener). The keystore is PEM (KIP-651: one file with
/// the private key and the certificate chain, or the two inline) or PKCS12; the truststore,
/// which client certificates are checked against, PEM or PKCS12.
public struct SSLSettings: Sendable, Equatable {
    public enum StoreType: String, Sendable, Equatable { case pem = "PEM", pkcs12 = "PKCS12" }
    public var keystoreType: StoreType = .pem
    public var keystoreLocation: String? = nil
    public var keystorePassword: String? = nil
    /// `ssl.key.password`: the passphrase of an encrypted PEM private key.
    public var keyPassword: String? = nil
    /// `ssl.keystore.key` and `ssl.keystore.certificate.chain`: the PEM text inline.
    public var keystoreKey: String? = nil
    public var keystoreCertificateChain: String? = nil
    public var truststoreType: StoreType = .pem
    public var truststoreLocation: String? = nil
    public var truststorePassword: String? = nil
    /// `ssl.truststore.certificates`: trusted certificates as inline PEM.
    public var truststoreCertificates: String? = nil
    public var clientAuth: SSLClientAuth = .none
    /// `ssl.enabled.protocols`: the TLS versions accepted (Kafka's default TLSv1.2,TLSv1.3).
    public var enabledProtocols: [String] = ["TLSv1.2", "TLSv1.3"]
    /// `ssl.cipher.suites`: OpenSSL cipher names for TLS 1.2; empty keeps the library's default.
    public var cipherSuites: [String] = []

    public init() {}
}

/// The broker's configuration with Kafka's `server.properties` key names.
///
/// Built from a properties text and `--set key=value` overrides; every known key is validated
/// and a bad value refuses to start with a message naming the key. Unknown keys are kept in
/// `unknownKeys` for a warning. Topic-level defaults (`log.*`) are exposed as `logConfig`, which
/// topic overrides are applied on top of.
public struct BrokerConfig: Sendable, Equatable {
    public var nodeID: Int32 = 1
    public var listeners: [Listener] = [Listener(name: "PLAINTEXT", host: "127.0.0.1", port: 9092)]
    public var advertisedListeners: [Listener]? = nil
    /// `listener.security.protocol.map`: listener name → security protocol (Kafka's default
    /// maps each protocol's own name to itself).
    public var listenerSecurityProtocolMap: [String: SecurityProtocol] =
        Dictionary(uniqueKeysWithValues: SecurityProtocol.allCases.map { ($0.rawValue, $0) })
    /// `inter.broker.listener.name`: the listener other brokers' followers connect to (default:
    /// the first listener).
    public var interBrokerListenerName: String? = nil
    /// The TLS settings of each SSL and SASL_SSL listener, by listener name.
    public var ssl: [String: SSLSettings] = [:]
    /// The SASL mechanisms each SASL_PLAINTEXT and SASL_SSL listener offers, by listener name
    /// (`listener.name.<name>.sasl.enabled.mechanisms` over `sasl.enabled.mechanisms`; Fjord's
    /// default is SCRAM-SHA-256,SCRAM-SHA-512: PLAIN sends the password and must be chosen).
    public var saslEnabledMechanisms: [String: [String]] = [:]
    /// `connections.max.reauth.ms` (KIP-368): a SASL session's lifetime, after which the client
    /// must re-authenticate on the same connection or be disconnected; 0 never expires.
    public var connectionsMaxReauthMs: Int64 = 0
    /// `connection.failed.authentication.delay.ms`: how long a failed login waits before its
    /// answer (and the connection's close), slowing password guessing.
    public var connectionFailedAuthenticationDelayMs: Int64 = 100
    /// `authorizer.class.name`: when set, every request is checked against the ACLs by
    /// `StandardAuthorizer` (Kafka's class names for it are accepted; any other refuses to start).
    public var authorizerEnabled = false
    /// `super.users`: principals (`User:admin;User:broker`) allowed everything.
    public var superUsers: Set<String> = []
    /// `allow.everyone.if.no.acl.found`: a resource without any ACL is open to everyone.
    public var allowEveryoneIfNoAclFound = false
    /// `quota.window.num`: the samples a client quota's rate is measured over.
    public var quotaWindowCount = 11
    /// `quota.window.size.seconds`, in ms: each sample's span.
    public var quotaWindowMs: Int64 = 1000
    /// `broker.rack`: the rack this broker is in, told to clients in Metadata and DescribeCluster.
    public var rack: String? = nil
    public var logDirs: [String] = ["./fjord-data"]
    /// `fjord.cluster` (`fjord serve --cluster`): the etcd endpoint of the cluster this broker
    /// joins, `etcd://host:port[/prefix]`; nil runs the embedded single node.
    public var cluster: String? = nil
    /// `broker.session.timeout.ms`: how long a broker's etcd lease outlives its last keepalive;
    /// after it the broker counts as dead and its partitions get new leaders (Kafka's KRaft key).
    public var brokerSessionTimeoutMs: Int64 = 9000
    /// `offsets.topic.replication.factor` (in a cluster): replicas of `__consumer_offsets`.
    public var offsetsTopicReplicationFactor: Int16 = 3
    /// `unclean.leader.election.enable`: whether a replica outside the ISR may become leader
    /// when no ISR member is alive (losing what only the ISR had).
    public var uncleanLeaderElectionEnable = false
    /// `controlled.shutdown.max.wait.ms` (Fjord's key): how long SIGTERM waits for the
    /// controller to move this broker's leaderships away before stopping anyway.
    public var controlledShutdownMaxWaitMs: Int64 = 10_000
    /// `replica.lag.time.max.ms`: a follower that has not caught up with the leader's log end
    /// for this long leaves the ISR.
    public var replicaLagTimeMaxMs: Int64 = 30_000
    /// `replica.fetch.wait.max.ms`, `replica.fetch.max.bytes`, `replica.fetch.response.max.bytes`,
    /// `replica.fetch.backoff.ms`: the followers' Fetch requests, as Kafka's.
    public var replicaFetchWaitMaxMs: Int32 = 500
    public var replicaFetchMaxBytes: Int32 = 1024 * 1024
    public var replicaFetchResponseMaxBytes: Int32 = 10 * 1024 * 1024
    public var replicaFetchBackoffMs: Int64 = 1000
    /// `offsets.commit.timeout.ms`: how long a group coordinator's write (an offset commit, a
    /// group's assignment) waits for the ISR of its `__consumer_offsets` partition.
    public var offsetsCommitTimeoutMs: Int64 = 5000
    /// `metrics.listener=http://HOST:PORT` (Fjord's key): where `/metrics` (Prometheus text),
    /// `/health` and `/ready` are served; nil serves none.
    public var metricsListener: Listener? = nil
    public var numPartitions: Int32 = 1
    public var defaultReplicationFactor: Int16 = 1
    public var autoCreateTopicsEnable = true
    public var socketRequestMaxBytes = 104_857_600
    public var connectionsMaxIdleMs: Int64 = 600_000
    /// Bytes of requests in flight per connection before the server stops reading it.
    public var queuedMaxRequestBytes: Int64 = -1
    public var retentionCheckIntervalMs: Int64 = 300_000
    /// `log.cleaner.dedupe.buffer.size`: memory for one cleaning pass's key map (Kafka: 128 MiB).
    public var cleanerDedupeBufferBytes = 134_217_728
    /// `producer.id.expiration.ms`: idempotent producers silent this long are forgotten (1 day).
    public var producerIDExpirationMs: Int64 = 86_400_000
    public var deleteTopicEnable = true
    /// Consumer groups (Kafka's `group.*` / `offsets.*` keys).
    public var offsetsTopicPartitions: Int32 = 50
    public var groupInitialRebalanceDelayMs: Int64 = 3000
    public var groupMinSessionTimeoutMs: Int32 = 6000
    public var groupMaxSessionTimeoutMs: Int32 = 1_800_000
    public var groupMaxSize: Int = Int(Int32.max)
    public var offsetMetadataMaxBytes: Int = 4096
    public var offsetsRetentionMs: Int64 = 7 * 24 * 3600 * 1000
    /// KIP-848 groups: `group.consumer.heartbeat.interval.ms` (told to members) and
    /// `group.consumer.session.timeout.ms` (silence after which a member is removed).
    public var groupConsumerHeartbeatIntervalMs: Int32 = 5000
    public var groupConsumerSessionTimeoutMs: Int32 = 45000
    /// `fjord.max.partitions.per.topic`: CreateTopics/CreatePartitions above this are refused with
    /// INVALID_PARTITIONS, so one request cannot make the broker create millions of logs.
    public var maxPartitionsPerTopic: Int32 = 10_000
    /// `log.*` defaults for every topic.
    public var logConfig = LogConfig()
    public var unknownKeys: [String] = []
    /// Every key as given (for DescribeConfigs on the broker).
    public var raw: [String: String] = [:]

    public init() {}

    /// The listener clients are told to connect to (the first advertised, else the first listener).
    public var advertised: Listener { advertised(listeners[0].name) ?? Self.reachable(advertisedListeners?.first ?? listeners[0]) }

    /// The address advertised for listener `name`: its `advertised.listeners` entry, else the
    /// listener itself (a wildcard host advertised as loopback); nil for an unknown name.
    public func advertised(_ name: String) -> Listener? {
        guard let chosen = advertisedListeners?.first(where: { $0.name == name }) ?? listeners.first(where: { $0.name == name })
        else { return nil }
        return Self.reachable(chosen)
    }

    /// Every listener's advertised address, in `listeners` order.
    public var advertisedEndpoints: [Listener] { listeners.compactMap { advertised($0.name) } }

    /// The listener followers connect to: `inter.broker.listener.name`, else the first.
    public var interBrokerListener: Listener {
        interBrokerListenerName.flatMap { advertised($0) } ?? advertised
    }

    private static func reachable(_ listener: Listener) -> Listener {
        guard listener.host == "0.0.0.0" || listener.host == "::" else { return listener }
        var copy = listener
        copy.host = "127.0.0.1"
        return copy
    }

    /// Keys Kafka brokers accept that Fjord reads elsewhere or that have no effect on one node;
    /// they are accepted without a warning.
    static let acceptedKeys: Set<String> = [
        "num.network.threads", "num.io.threads", "socket.send.buffer.bytes", "socket.receive.buffer.bytes",
        "num.recovery.threads.per.data.dir", "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr", "process.roles", "controller.quorum.voters",
        "controller.listener.names", "zookeeper.connect",
        "min.insync.replicas",
        "compression.type", "cluster.id",
    ]

    /// Builds a config from `server.properties` text, then `overrides` (`--set`), in that order.
    public static func parse(properties: String = "", overrides: [String: String] = [:]) throws(ConfigError) -> BrokerConfig {
        var values = parseProperties(properties)
        for (key, value) in overrides { values[key] = value }
        var config = BrokerConfig()
        config.raw = values
        var logKeys: [String: String] = [:]
        /// Topic-level key → the broker key it came from, for error messages.
        var sources: [String: String] = [:]
        for (key, value) in values.sorted(by: { $0.key < $1.key }) {
            switch key {
            case "node.id", "broker.id": config.nodeID = Int32(try int(key, value, min: 0, max: Int(Int32.max)))
            case "listeners": config.listeners = try listeners(key, value)
            case "advertised.listeners": config.advertisedListeners = try listeners(key, value)
            case "listener.security.protocol.map": config.listenerSecurityProtocolMap = try securityProtocolMap(key, value)
            case "inter.broker.listener.name": config.interBrokerListenerName = value.isEmpty ? nil : value
            case "connections.max.reauth.ms": config.connectionsMaxReauthMs = Int64(try int(key, value, min: 0, max: 1_000_000_000_000))
            case "connection.failed.authentication.delay.ms":
                config.connectionFailedAuthenticationDelayMs = Int64(try int(key, value, min: 0, max: 60_000))
            case "authorizer.class.name":
                let known = ["org.apache.kafka.metadata.authorizer.StandardAuthorizer", "kafka.security.authorizer.AclAuthorizer",
                             "kafka.security.auth.SimpleAclAuthorizer", "fjord.StandardAuthorizer"]
                guard value.isEmpty || known.contains(value) else {
                    throw ConfigError("\(key)=\(value): Fjord's authorizer is org.apache.kafka.metadata.authorizer.StandardAuthorizer")
                }
                config.authorizerEnabled = !value.isEmpty
            case "super.users": config.superUsers = StandardAuthorizer.superUsers(value)
            case "allow.everyone.if.no.acl.found": config.allowEveryoneIfNoAclFound = try bool(key, value)
            case "quota.window.num": config.quotaWindowCount = try int(key, value, min: 2, max: 1000)
            case "quota.window.size.seconds": config.quotaWindowMs = Int64(try int(key, value, min: 1, max: 3600)) * 1000
            case "broker.rack": config.rack = value.isEmpty ? nil : value
            case "fjord.cluster": config.cluster = value.isEmpty ? nil : value
            case "broker.session.timeout.ms": config.brokerSessionTimeoutMs = Int64(try int(key, value, min: 2000, max: 3_600_000))
            case "offsets.topic.replication.factor": config.offsetsTopicReplicationFactor = Int16(try int(key, value, min: 1, max: 32767))
            case "unclean.leader.election.enable": config.uncleanLeaderElectionEnable = try bool(key, value)
            case "controlled.shutdown.max.wait.ms": config.controlledShutdownMaxWaitMs = Int64(try int(key, value, min: 0, max: 3_600_000))
            case "replica.lag.time.max.ms": config.replicaLagTimeMaxMs = Int64(try int(key, value, min: 100, max: 3_600_000))
            case "replica.fetch.wait.max.ms": config.replicaFetchWaitMaxMs = Int32(try int(key, value, min: 0, max: 60_000))
            case "replica.fetch.max.bytes": config.replicaFetchMaxBytes = Int32(try int(key, value, min: 1024, max: Int(Int32.max)))
            case "replica.fetch.response.max.bytes":
                config.replicaFetchResponseMaxBytes = Int32(try int(key, value, min: 1024, max: Int(Int32.max)))
            case "replica.fetch.backoff.ms": config.replicaFetchBackoffMs = Int64(try int(key, value, min: 0, max: 60_000))
            case "offsets.commit.timeout.ms": config.offsetsCommitTimeoutMs = Int64(try int(key, value, min: 1, max: 3_600_000))
            case "metrics.listener": config.metricsListener = try httpListener(key, value)
            case "log.dirs", "log.dir":
                config.logDirs = value.split(separator: ",").map { $0.trimmingCharacters() }.filter { !$0.isEmpty }
                guard !config.logDirs.isEmpty else { throw ConfigError("\(key): expected at least one directory") }
            case "num.partitions": config.numPartitions = Int32(try int(key, value, min: 1, max: 1_000_000))
            case "default.replication.factor": config.defaultReplicationFactor = Int16(try int(key, value, min: 1, max: 32767))
            case "auto.create.topics.enable": config.autoCreateTopicsEnable = try bool(key, value)
            case "delete.topic.enable": config.deleteTopicEnable = try bool(key, value)
            case "socket.request.max.bytes": config.socketRequestMaxBytes = try int(key, value, min: 1024, max: Int(Int32.max))
            // Bounded so that timer arithmetic in nanoseconds cannot overflow (about 31 years).
            case "connections.max.idle.ms": config.connectionsMaxIdleMs = Int64(try int(key, value, min: -1, max: 1_000_000_000_000))
            case "queued.max.request.bytes": config.queuedMaxRequestBytes = Int64(try int(key, value, min: -1, max: Int.max))
            case "offsets.topic.num.partitions": config.offsetsTopicPartitions = Int32(try int(key, value, min: 1, max: 10_000))
            case "group.initial.rebalance.delay.ms": config.groupInitialRebalanceDelayMs = Int64(try int(key, value, min: 0, max: Int(Int32.max)))
            case "group.min.session.timeout.ms": config.groupMinSessionTimeoutMs = Int32(try int(key, value, min: 1, max: Int(Int32.max)))
            case "group.max.session.timeout.ms": config.groupMaxSessionTimeoutMs = Int32(try int(key, value, min: 1, max: Int(Int32.max)))
            case "group.max.size": config.groupMaxSize = try int(key, value, min: 1, max: Int(Int32.max))
            case "group.consumer.heartbeat.interval.ms":
                config.groupConsumerHeartbeatIntervalMs = Int32(try int(key, value, min: 1, max: Int(Int32.max)))
            case "group.consumer.session.timeout.ms":
                config.groupConsumerSessionTimeoutMs = Int32(try int(key, value, min: 1, max: Int(Int32.max)))
            case "fjord.max.partitions.per.topic": config.maxPartitionsPerTopic = Int32(try int(key, value, min: 1, max: 1_000_000))
            case "offsets.retention.minutes": config.offsetsRetentionMs = Int64(try int(key, value, min: 1, max: Int(Int32.max))) * 60_000
            case "offsets.retention.check.interval.ms": break
            case "offset.metadata.max.bytes": config.offsetMetadataMaxBytes = try int(key, value, min: 0, max: Int(Int32.max))
            case "log.retention.check.interval.ms": config.retentionCheckIntervalMs = Int64(try int(key, value, min: 1, max: Int(Int32.max)))
            case "log.cleaner.dedupe.buffer.size": config.cleanerDedupeBufferBytes = try int(key, value, min: 1024, max: Int.max)
            case "producer.id.expiration.ms": config.producerIDExpirationMs = Int64(try int(key, value, min: 1, max: Int.max))
            case "log.retention.hours": logKeys["retention.ms.hours"] = value; sources["retention.ms.hours"] = key
            case "log.retention.minutes": logKeys["retention.ms.minutes"] = value; sources["retention.ms.minutes"] = key
            case "log.retention.ms": logKeys["retention.ms"] = value; sources["retention.ms"] = key
            case "log.retention.bytes": logKeys["retention.bytes"] = value; sources["retention.bytes"] = key
            case "log.segment.bytes": logKeys["segment.bytes"] = value; sources["segment.bytes"] = key
            case "log.roll.hours": logKeys["segment.ms.hours"] = value; sources["segment.ms.hours"] = key
            case "log.roll.ms": logKeys["segment.ms"] = value; sources["segment.ms"] = key
            case "log.index.size.max.bytes": logKeys["segment.index.bytes"] = value; sources["segment.index.bytes"] = key
            case "log.index.interval.bytes": logKeys["index.interval.bytes"] = value; sources["index.interval.bytes"] = key
            case "log.cleanup.policy": logKeys["cleanup.policy"] = value; sources["cleanup.policy"] = key
            case "log.cleaner.delete.retention.ms": logKeys["delete.retention.ms"] = value; sources["delete.retention.ms"] = key
            case "log.cleaner.min.compaction.lag.ms": logKeys["min.compaction.lag.ms"] = value; sources["min.compaction.lag.ms"] = key
            case "log.cleaner.min.cleanable.ratio": logKeys["min.cleanable.dirty.ratio"] = value; sources["min.cleanable.dirty.ratio"] = key
            case "log.flush.interval.messages": logKeys["flush.messages"] = value; sources["flush.messages"] = key
            case "log.flush.interval.ms": logKeys["flush.ms"] = value; sources["flush.ms"] = key
            case "log.flush.on.ack": logKeys["log.flush.on.ack"] = value; sources["log.flush.on.ack"] = key
            case "log.message.timestamp.type": logKeys["message.timestamp.type"] = value; sources["message.timestamp.type"] = key
            case "log.segment.delete.delay.ms": logKeys["file.delete.delay.ms"] = value; sources["file.delete.delay.ms"] = key
            case "log.preallocate": logKeys["preallocate"] = value; sources["preallocate"] = key
            case "message.max.bytes": logKeys["max.message.bytes"] = value; sources["max.message.bytes"] = key
            default:
                if !acceptedKeys.contains(key) && !Self.isSSLKey(key) && !Self.isSASLKey(key) { config.unknownKeys.append(key) }
            }
        }
        try config.resolveListeners(values)
        // Kafka's precedence: ms over minutes over hours.
        if logKeys["retention.ms"] == nil {
            if let minutes = logKeys["retention.ms.minutes"] {
                logKeys["retention.ms"] = String(try int("log.retention.minutes", minutes, min: -1, max: Int.max / 60_000) * 60_000)
                sources["retention.ms"] = "log.retention.minutes"
            } else if let hours = logKeys["retention.ms.hours"] {
                logKeys["retention.ms"] = String(try int("log.retention.hours", hours, min: -1, max: Int.max / 3_600_000) * 3_600_000)
                sources["retention.ms"] = "log.retention.hours"
            }
        }
        if logKeys["segment.ms"] == nil, let hours = logKeys["segment.ms.hours"] {
            logKeys["segment.ms"] = String(try int("log.roll.hours", hours, min: 1, max: Int.max / 3_600_000) * 3_600_000)
            sources["segment.ms"] = "log.roll.hours"
        }
        for key in ["retention.ms.minutes", "retention.ms.hours", "segment.ms.hours"] { logKeys[key] = nil }
        if logKeys["retention.ms"] == "-1" || logKeys["retention.ms"].map({ Int($0) ?? 0 < 0 }) == true {
            logKeys["retention.ms"] = "-1"
        }
        for (topicKey, value) in logKeys.sorted(by: { $0.key < $1.key }) {
            var probe = LogConfig()
            do {
                try probe.apply([topicKey: value])
            } catch {
                let brokerKey = sources[topicKey] ?? topicKey
                throw ConfigError("\(brokerKey)=\(value): \(error.description.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters() } ?? "invalid value")")
            }
        }
        do {
            try config.logConfig.apply(logKeys)
        } catch {
            throw ConfigError("\(error)")
        }
        return config
    }

    /// The effective log config of a topic: broker defaults, dynamic broker overrides, then the
    /// topic's overrides.
    public func logConfig(dynamicBrokerConfigs: [String: String], topicConfigs: [String: String]) -> LogConfig {
        var config = logConfig
        var brokerLevel: [String: String] = [:]
        for (key, value) in dynamicBrokerConfigs {
            if let topicKey = TopicConfigs.brokerKeyToTopicKey[key] { brokerLevel[topicKey] = value }
        }
        // Key by key, so that one stored value this version refuses (e.g. a size past Int32.max,
        // accepted before it was capped) falls back to its default alone instead of dropping
        // every key sorted after it.
        for (key, value) in brokerLevel.sorted(by: { $0.key < $1.key }) { _ = try? config.apply([key: value]) }
        for (key, value) in topicConfigs.sorted(by: { $0.key < $1.key }) { _ = try? config.apply([key: value]) }
        return config
    }

    /// Parses Java properties text: `key=value` or `key: value`, `#`/`!` comments, `\` line continuation.
    public static func parseProperties(_ text: String) -> [String: String] {
        var values: [String: String] = [:]
        var pending = ""
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            var line = String(rawLine).trimmingCharacters()
            if line.hasSuffix("\r") { line.removeLast() }
            if pending.isEmpty && (line.isEmpty || line.hasPrefix("#") || line.hasPrefix("!")) { continue }
            if line.hasSuffix("\\") {
                pending += String(line.dropLast())
                continue
            }
            line = pending + line
            pending = ""
            guard let separator = line.firstIndex(where: { $0 == "=" || $0 == ":" }) else { continue }
            let key = String(line[..<separator]).trimmingCharacters()
            let value = String(line[line.index(after: separator)...]).trimmingCharacters()
            if !key.isEmpty { values[key] = value }
        }
        return values
    }

    static func int(_ key: String, _ value: String, min: Int, max: Int) throws(ConfigError) -> Int {
        guard let number = Int(value.trimmingCharacters()), number >= min, number <= max else {
            throw ConfigError("\(key)=\(value): expected an integer between \(min) and \(max)")
        }
        return number
    }

    static func bool(_ key: String, _ value: String) throws(ConfigError) -> Bool {
        switch value.trimmingCharacters().lowercased() {
        case "true": return true
        case "false": return false
        default: throw ConfigError("\(key)=\(value): expected true or false")
        }
    }

    static func listeners(_ key: String, _ value: String) throws(ConfigError) -> [Listener] {
        var out: [Listener] = []
        for part in value.split(separator: ",") where !part.trimmingCharacters().isEmpty {
            do {
                out.append(try Listener(parsing: String(part)))
            } catch {
                throw ConfigError("\(key): \(error.message)")
            }
        }
        guard !out.isEmpty else { throw ConfigError("\(key): expected at least one listener") }
        return out
    }

    /// `http://HOST:PORT` (port 0: any free port).
    static func httpListener(_ key: String, _ value: String) throws(ConfigError) -> Listener {
        let text = value.trimmingCharacters()
        guard text.hasPrefix("http://") else { throw ConfigError("\(key)=\(value): expected http://HOST:PORT") }
        let address = text.dropFirst("http://".count)
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (0...65535).contains(port),
            colon != address.startIndex
        else { throw ConfigError("\(key)=\(value): expected http://HOST:PORT") }
        return Listener(name: "http", host: String(address[..<colon]), port: port)
    }
}

extension StringProtocol {
    func trimmingCharacters() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first == " " || first == "\t" { scalars.removeFirst() }
        while let last = scalars.last, last == " " || last == "\t" || last == "\r" { scalars.removeLast() }
        return String(scalars)
    }
}
