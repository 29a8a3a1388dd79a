public import Logging

/// Settings every Fjord client shares (producer, consumer, admin), named as Kafka's clients
/// name them so a librdkafka or Java configuration moves over by key.
///
/// Invariants: `bootstrapServers` is non-empty; backoffs satisfy `0 < base <= max`.
public struct ClientConfiguration: Sendable {
    /// `bootstrap.servers`: `host:port` addresses tried in order to learn the cluster.
    public var bootstrapServers: [String]
    /// `client.id`, sent in every request header and used as the metrics label.
    public var clientID: String
    /// `request.timeout.ms`: how long a request may wait for its response before the connection
    /// is closed and the request failed with `ClientError.timeout` (a retriable error).
    public var requestTimeoutMs: Int = 30_000
    /// `socket.connection.setup.timeout.ms`.
    public var connectTimeoutMs: Int = 10_000
    /// `reconnect.backoff.ms` / `reconnect.backoff.max.ms`: exponential backoff with ±20 % jitter
    /// between connection attempts to one broker.
    public var reconnectBackoffMs: Int = 50
    public var reconnectBackoffMaxMs: Int = 1_000
    /// `retry.backoff.ms` / `retry.backoff.max.ms`: backoff between retries of a failed request.
    public var retryBackoffMs: Int = 100
    public var retryBackoffMaxMs: Int = 1_000
    /// `metadata.max.age.ms`: cluster metadata older than this is refreshed before use.
    public var metadataMaxAgeMs: Int = 300_000
    /// `allow.auto.create.topics`: whether a Metadata request may create a missing topic.
    public var allowAutoCreateTopics = true
    /// `security.protocol`, TLS and SASL settings.
    public var security = ClientSecurity()
    /// Where the client logs (connection changes, retries, rebalances).
    public var logger: Logger

    public init(bootstrapServers: [String], clientID: String = "fjord-swift", logger: Logger? = nil) {
        self.bootstrapServers = bootstrapServers
        self.clientID = clientID
        self.logger = logger ?? Logger(label: "fjord.client")
    }

    /// A comma-separated `bootstrap.servers` string.
    public init(bootstrap: String, clientID: String = "fjord-swift", logger: Logger? = nil) {
        self.init(bootstrapServers: bootstrap.split(separator: ",").map { $0.trimmingSpaces() }, clientID: clientID, logger: logger)
    }

    /// Applies one Kafka property shared by all clients; returns false when `key` is not one.
    /// Throws `ClientError.invalidConfiguration` for a value that does not parse.
    public mutating func apply(_ key: String, _ value: String) throws -> Bool {
        if try security.apply(key, value) { return true }
        switch key {
        case "bootstrap.servers", "metadata.broker.list":
            bootstrapServers = value.split(separator: ",").map { $0.trimmingSpaces() }
        case "client.id": clientID = value
        case "request.timeout.ms", "socket.timeout.ms": requestTimeoutMs = try Self.int(key, value, min: 1)
        case "socket.connection.setup.timeout.ms": connectTimeoutMs = try Self.int(key, value, min: 1)
        case "reconnect.backoff.ms": reconnectBackoffMs = try Self.int(key, value, min: 0)
        case "reconnect.backoff.max.ms": reconnectBackoffMaxMs = try Self.int(key, value, min: 0)
        case "retry.backoff.ms": retryBackoffMs = try Self.int(key, value, min: 0)
        case "retry.backoff.max.ms": retryBackoffMaxMs = try Self.int(key, value, min: 0)
        case "metadata.max.age.ms", "topic.metadata.refresh.interval.ms": metadataMaxAgeMs = try Self.int(key, value, min: 1)
        case "allow.auto.create.topics": allowAutoCreateTopics = try Self.bool(key, value)
        // Accepted for compatibility; Fjord has nothing to tune behind them (yet).
        case "socket.keepalive.enable", "api.version.request", "broker.address.family", "client.rack",
             "connections.max.idle.ms", "receive.buffer.bytes", "send.buffer.bytes", "log_level", "debug",
             "statistics.interval.ms":
            break
        default:
            return false
        }
        return true
    }

    static func int(_ key: String, _ value: String, min: Int = Int.min) throws -> Int {
        guard let parsed = Int(value.trimmingSpaces()), parsed >= min else {
            throw ClientError.invalidConfiguration("\(key)=\(value): expected an integer ≥ \(min)")
        }
        return parsed
    }

    static func int32(_ key: String, _ value: String, min: Int32 = Int32.min) throws -> Int32 {
        guard let parsed = Int32(value.trimmingSpaces()), parsed >= min else {
            throw ClientError.invalidConfiguration("\(key)=\(value): expected an integer from \(min) to \(Int32.max)")
        }
        return parsed
    }

    static func bool(_ key: String, _ value: String) throws -> Bool {
        switch value.trimmingSpaces().lowercased() {
        case "true", "1", "yes": return true
        case "false", "0", "no": return false
        default: throw ClientError.invalidConfiguration("\(key)=\(value): expected true or false")
        }
    }

    func validate() throws {
        guard !bootstrapServers.isEmpty else { throw ClientError.invalidConfiguration("bootstrap.servers is empty") }
        for server in bootstrapServers { _ = try parseHostPort(server) }
        guard reconnectBackoffMaxMs >= reconnectBackoffMs else {
            throw ClientError.invalidConfiguration("reconnect.backoff.max.ms < reconnect.backoff.ms")
        }
    }
}

extension Substring {
    func trimmingSpaces() -> String {
        String(self.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}

extension String {
    func trimmingSpaces() -> String { self[...].trimmingSpaces() }
}

/// Parses `host:port` (and `[v6]:port`).
func parseHostPort(_ text: String) throws -> (String, Int) {
    guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else {
        throw ClientError.invalidConfiguration("bad broker address '\(text)': expected host:port")
    }
    var host = String(text[..<colon])
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    return (host, port)
}
