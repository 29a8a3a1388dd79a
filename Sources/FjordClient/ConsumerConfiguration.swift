/// Consumer settings, with Kafka's property names accepted by `init(properties:)`.
public struct ConsumerConfiguration: Sendable {
    public enum OffsetReset: Sendable { case earliest, latest, none }

    /// Which group protocol `subscribe` uses (`group.protocol`).
    public enum GroupProtocol: String, Sendable {
        /// JoinGroup/SyncGroup/Heartbeat with a client-side assignor (the leader assigns).
        case classic
        /// KIP-848: ConsumerGroupHeartbeat, the broker assigns.
        case consumer
    }

    /// Connection, retry and metadata settings shared with the other clients.
    public var client: ClientConfiguration
    /// `group.id`: the group whose committed offsets `commit()` writes and `subscribe` joins.
    public var groupID: String? = nil
    /// `group.instance.id`: a static member id (KIP-345); a restart within the session timeout
    /// gets the same assignment back without a rebalance.
    public var groupInstanceID: String? = nil
    /// `group.protocol`.
    public var groupProtocol: GroupProtocol = .classic
    /// `partition.assignment.strategy`, in preference order (Java's default).
    public var assignors: [any ConsumerPartitionAssignor] = [RangeAssignor(), CooperativeStickyAssignor()]
    /// `session.timeout.ms`: the coordinator removes a member whose heartbeats stop this long.
    public var sessionTimeoutMs: Int32 = 45_000
    /// `heartbeat.interval.ms`.
    public var heartbeatIntervalMs: Int = 3_000
    /// `max.poll.interval.ms`: the rebalance timeout; a member that does not poll for this long
    /// cannot rejoin in time and loses its partitions.
    public var maxPollIntervalMs: Int32 = 300_000
    /// `enable.auto.commit` and `auto.commit.interval.ms`: positions of records the application
    /// has taken are committed at this interval (from `poll`), before a revocation and on close.
    public var enableAutoCommit = true
    public var autoCommitIntervalMs: Int = 5_000
    /// `auto.offset.reset`: where a partition without a committed offset (or out of range) starts.
    public var autoOffsetReset: OffsetReset = .latest
    /// `fetch.max.wait.ms`, `fetch.min.bytes`, `fetch.max.bytes`, `max.partition.fetch.bytes`.
    public var fetchMaxWaitMs: Int32 = 500
    public var fetchMinBytes: Int32 = 1
    public var fetchMaxBytes: Int32 = 50 * 1024 * 1024
    public var maxPartitionFetchBytes: Int32 = 1024 * 1024
    /// `max.poll.records`: the most records one `poll` returns.
    public var maxPollRecords: Int = 500
    /// `isolation.level`: read_committed stops at the last stable offset.
    public var readCommitted = false
    /// `check.crcs`: verify each batch's CRC32C before handing its records out.
    public var checkCRCs = true

    public var bootstrap: String {
        get { client.bootstrapServers.joined(separator: ",") }
        set { client.bootstrapServers = newValue.split(separator: ",").map { $0.trimmingSpaces() } }
    }

    public var clientID: String {
        get { client.clientID }
        set { client.clientID = newValue }
    }

    public init(bootstrap: String, groupID: String? = nil, clientID: String = "fjord-consumer") {
        self.client = ClientConfiguration(bootstrap: bootstrap, clientID: clientID)
        self.groupID = groupID
    }

    /// Reads Java and librdkafka property names. An unknown key or a value that does not parse
    /// throws `ClientError.invalidConfiguration`.
    public init(properties: [String: String]) throws {
        guard let bootstrap = properties["bootstrap.servers"] ?? properties["metadata.broker.list"] else {
            throw ClientError.invalidConfiguration("bootstrap.servers is required")
        }
        self.init(bootstrap: bootstrap)
        for (key, value) in properties.sorted(by: { $0.key < $1.key }) { try apply(key, value) }
    }

    /// Applies one property (see `init(properties:)`).
    public mutating func apply(_ key: String, _ value: String) throws {
        if try client.apply(key, value) { return }
        switch key {
        case "group.id": groupID = value
        case "group.instance.id": groupInstanceID = value.isEmpty ? nil : value
        case "group.protocol":
            guard let parsed = GroupProtocol(rawValue: value.lowercased()) else {
                throw ClientError.invalidConfiguration("group.protocol=\(value): expected classic or consumer")
            }
            groupProtocol = parsed
        case "partition.assignment.strategy":
            assignors = try value.split(separator: ",").map { name in
                let name = name.trimmingSpaces()
                switch name.split(separator: ".").last.map(String.init)?.lowercased() {
                case "range", "rangeassignor": return RangeAssignor()
                case "roundrobin", "roundrobinassignor": return RoundRobinAssignor()
                case "cooperative-sticky", "cooperativestickyassignor": return CooperativeStickyAssignor()
                default: throw ClientError.invalidConfiguration("unknown assignor '\(name)'")
                }
            }
        case "session.timeout.ms": sessionTimeoutMs = try ClientConfiguration.int32(key, value, min: 1)
        case "heartbeat.interval.ms": heartbeatIntervalMs = try ClientConfiguration.int(key, value, min: 1)
        case "max.poll.interval.ms": maxPollIntervalMs = try ClientConfiguration.int32(key, value, min: 1)
        case "enable.auto.commit": enableAutoCommit = try ClientConfiguration.bool(key, value)
        case "auto.commit.interval.ms": autoCommitIntervalMs = try ClientConfiguration.int(key, value, min: 1)
        case "auto.offset.reset":
            switch value.lowercased() {
            case "earliest", "smallest", "beginning": autoOffsetReset = .earliest
            case "latest", "largest", "end": autoOffsetReset = .latest
            case "none", "error": autoOffsetReset = .none
            default: throw ClientError.invalidConfiguration("auto.offset.reset=\(value): expected earliest, latest or none")
            }
        case "fetch.max.wait.ms", "fetch.wait.max.ms": fetchMaxWaitMs = try ClientConfiguration.int32(key, value, min: 0)
        case "fetch.min.bytes": fetchMinBytes = try ClientConfiguration.int32(key, value, min: 0)
        case "fetch.max.bytes": fetchMaxBytes = try ClientConfiguration.int32(key, value, min: 1)
        case "max.partition.fetch.bytes", "fetch.message.max.bytes":
            maxPartitionFetchBytes = try ClientConfiguration.int32(key, value, min: 1)
        case "max.poll.records": maxPollRecords = try ClientConfiguration.int(key, value, min: 1)
        case "isolation.level":
            switch value.lowercased() {
            case "read_committed": readCommitted = true
            case "read_uncommitted": readCommitted = false
            default: throw ClientError.invalidConfiguration("isolation.level=\(value): expected read_committed or read_uncommitted")
            }
        case "check.crcs": checkCRCs = try ClientConfiguration.bool(key, value)
        case "enable.auto.offset.store", "key.deserializer", "value.deserializer", "queued.min.messages",
             "queued.max.messages.kbytes", "enable.partition.eof":
            break
        default:
            throw ClientError.invalidConfiguration("unknown consumer property '\(key)'")
        }
    }

    func validate() throws {
        try client.validate()
        if let groupID, groupID.isEmpty { throw ClientError.invalidConfiguration("group.id is empty") }
    }
}
