import FjordProtocol
import CoreMetrics
import Metrics
import Synchronization

/// The client's swift-metrics instruments. With no metrics backend bootstrapped they are
/// swift-metrics' no-ops; with one (Prometheus, StatsD, OTel) they appear under these names,
/// labelled with `client_id` (and `api` for requests).
///
/// | name | kind | what |
/// |---|---|---|
/// | `fjord_client_request_duration` | Timer | request → response, per API |
/// | `fjord_client_request_errors_total` | Counter | requests that failed (timeout, connection) |
/// | `fjord_producer_records_total` / `_bytes_total` | Counter | records (and key+value bytes) acknowledged |
/// | `fjord_producer_record_errors_total` | Counter | records whose delivery failed |
/// | `fjord_producer_batch_records` | Recorder | records per sent batch |
/// | `fjord_consumer_records_total` / `_bytes_total` | Counter | records handed to the application |
/// | `fjord_consumer_rebalances_total` | Counter | group rebalances this member went through |
///
/// Instruments are created once per label set and cached, so the hot path does not allocate.
public enum ClientMetrics {
    private struct Key: Hashable {
        var name: String
        var clientID: String
        var api: Int16
    }

    private static let timers = Mutex<[Key: Timer]>([:])
    private static let counters = Mutex<[Key: Counter]>([:])

    static func requestLatency(_ api: APIKey, clientID: String) -> Timer {
        let key = Key(name: "fjord_client_request_duration", clientID: clientID, api: api.rawValue)
        return timers.withLock { cache in
            if let timer = cache[key] { return timer }
            let timer = Timer(label: key.name, dimensions: [("client_id", clientID), ("api", api.name)])
            cache[key] = timer
            return timer
        }
    }

    static func requestErrors(_ api: APIKey, clientID: String) -> Counter {
        counter("fjord_client_request_errors_total", clientID: clientID, api: api)
    }

    static func counter(_ name: String, clientID: String, api: APIKey? = nil) -> Counter {
        let key = Key(name: name, clientID: clientID, api: api?.rawValue ?? -1)
        return counters.withLock { cache in
            if let counter = cache[key] { return counter }
            var dimensions = [("client_id", clientID)]
            if let api { dimensions.append(("api", api.name)) }
            let counter = Counter(label: name, dimensions: dimensions)
            cache[key] = counter
            return counter
        }
    }
}

/// A producer's instruments (see `ClientMetrics`).
struct ProducerMetrics: Sendable {
    let records: Counter
    let bytes: Counter
    let errors: Counter
    let batchRecords: Recorder

    init(clientID: String) {
        records = ClientMetrics.counter("fjord_producer_records_total", clientID: clientID)
        bytes = ClientMetrics.counter("fjord_producer_bytes_total", clientID: clientID)
        errors = ClientMetrics.counter("fjord_producer_record_errors_total", clientID: clientID)
        batchRecords = Recorder(label: "fjord_producer_batch_records", dimensions: [("client_id", clientID)])
    }
}

/// A consumer's instruments (see `ClientMetrics`).
struct ConsumerMetrics: Sendable {
    let records: Counter
    let bytes: Counter
    let rebalances: Counter

    init(clientID: String) {
        records = ClientMetrics.counter("fjord_consumer_records_total", clientID: clientID)
        bytes = ClientMetrics.counter("fjord_consumer_bytes_total", clientID: clientID)
        rebalances = ClientMetrics.counter("fjord_consumer_rebalances_total", clientID: clientID)
    }
}
