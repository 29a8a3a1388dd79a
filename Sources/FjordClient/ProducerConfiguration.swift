public import FjordCompression
public import Instrumentation

/// Producer settings, with Kafka's property names accepted by `init(properties:)`.
public struct ProducerConfiguration: Sendable {
    /// Connection, retry and metadata settings shared with the other clients.
    public var client: ClientConfiguration
    /// `acks`: 0 (no answer), 1 (leader appended) or -1 / `all` (the ISR has it).
    public var acks: Int16 = -1
    /// `linger.ms`: how long a partition's open batch waits for more records.
    public var lingerMs: Int = 5
    /// `batch.size`: a batch is closed and sent once its records reach this many bytes.
    /// librdkafka's default (1 MB) rather than Java's 16 KiB: fewer, larger requests under load;
    /// at low rates `linger.ms` decides, and `buffer.memory` bounds the total either way.
    public var batchSize: Int = 1_000_000
    /// `compression.type`: none, gzip, snappy, lz4 or zstd.
    public var compression: CompressionCodec = .none
    /// `enable.idempotence`: producer id, epoch and per-partition sequences, so retries never
    /// duplicate or reorder. Requires acks=all, as in Kafka.
    public var idempotence = true
    /// `buffer.memory`: bytes of records not yet acknowledged before `send` suspends.
    public var bufferMemory: Int = 32 * 1024 * 1024
    /// `delivery.timeout.ms`: how long a record may take from `send` to its acknowledgement,
    /// retries included, before it fails.
    public var deliveryTimeoutMs: Int = 120_000
    /// `max.in.flight.requests.per.connection`: batches of one partition on the wire at once
    /// (at most 5 with idempotence, as in Kafka).
    public var maxInFlight: Int = 5
    /// `retries`: attempts for retriable errors within `delivery.timeout.ms`.
    public var retries: Int = Int.max
    /// `max.request.size`: the largest record (batch) the producer will send.
    public var maxRequestSize: Int = 1024 * 1024
    /// An instrument (swift-distributed-tracing) that injects the task's current trace context
    /// into each record's headers (W3C `traceparent` with an OpenTelemetry instrument); nil, the
    /// default, adds no header. See `RecordHeadersInjector`.
    public var instrument: (any Instrument)? = nil

    public var bootstrap: String {
        get { client.bootstrapServers.joined(separator: ",") }
        set { client.bootstrapServers = newValue.split(separator: ",").map { $0.trimmingSpaces() } }
    }

    public var clientID: String {
        get { client.clientID }
        set { client.clientID = newValue }
    }

    public init(bootstrap: String, clientID: String = "fjord-producer") {
        self.client = ClientConfiguration(bootstrap: bootstrap, clientID: clientID)
    }

    /// Reads Java and librdkafka property names (`bootstrap.servers`, `linger.ms`,
    /// `queue.buffering.max.ms`, …). An unknown key or a value that does not parse throws
    /// `ClientError.invalidConfiguration`, so a typo is not silently ignored.
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
        case "acks", "request.required.acks":
            switch value.lowercased() {
            case "all", "-1": acks = -1
            case "0": acks = 0
            case "1": acks = 1
            default: throw ClientError.invalidConfiguration("acks=\(value): expected 0, 1, -1 or all")
            }
        case "linger.ms", "queue.buffering.max.ms": lingerMs = try ClientConfiguration.int(key, value, min: 0)
        case "batch.size": batchSize = try ClientConfiguration.int(key, value, min: 1)
        case "compression.type", "compression.codec":
            guard let codec = CompressionCodec(name: value.lowercased()) else {
                throw ClientError.invalidConfiguration("\(key)=\(value): expected none, gzip, snappy, lz4 or zstd")
            }
            compression = codec
        case "enable.idempotence": idempotence = try ClientConfiguration.bool(key, value)
        case "buffer.memory": bufferMemory = try ClientConfiguration.int(key, value, min: 1)
        case "queue.buffering.max.kbytes": bufferMemory = try ClientConfiguration.int(key, value, min: 1) * 1024
        case "delivery.timeout.ms", "message.timeout.ms": deliveryTimeoutMs = try ClientConfiguration.int(key, value, min: 1)
        case "max.in.flight.requests.per.connection", "max.in.flight":
            maxInFlight = try ClientConfiguration.int(key, value, min: 1)
        case "retries", "message.send.max.retries": retries = try ClientConfiguration.int(key, value, min: 0)
        case "max.request.size", "message.max.bytes": maxRequestSize = try ClientConfiguration.int(key, value, min: 1)
        // librdkafka knobs with no counterpart here: accepted so a config moves over unchanged.
        case "batch.num.messages", "queue.buffering.max.messages", "partitioner", "key.serializer",
             "value.serializer", "transaction.timeout.ms":
            break
        default:
            throw ClientError.invalidConfiguration("unknown producer property '\(key)'")
        }
    }

    func validate() throws {
        try client.validate()
        if idempotence {
            guard acks == -1 else {
                throw ClientError.invalidConfiguration("enable.idempotence=true requires acks=all (set enable.idempotence=false)")
            }
            guard maxInFlight <= 5 else {
                throw ClientError.invalidConfiguration("enable.idempotence=true requires max.in.flight.requests.per.connection ≤ 5")
            }
        }
    }
}
