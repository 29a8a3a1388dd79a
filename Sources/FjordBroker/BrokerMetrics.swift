import CoreMetrics
import FjordProtocol
import Synchronization

/// The broker's metrics, through swift-metrics (whatever backend the process bootstrapped;
/// `fjord serve` uses Prometheus when `metrics.listener` is set, otherwise every call is a no-op).
///
/// Names follow what Kafka's JMX metrics become under the Prometheus JMX exporter
/// (`kafka.server:type=BrokerTopicMetrics,name=BytesInPerSec` → `kafka_server_brokertopicmetrics_bytesin_total`),
/// so a Kafka dashboard's queries find them. Handles are created once per label set and cached:
/// recording is an atomic add, never a factory lookup.
public final class BrokerMetrics: Sendable {
    /// Per-topic counters (Kafka's `BrokerTopicMetrics`).
    struct TopicCounters {
        var bytesIn: Counter
        var messagesIn: Counter
        var bytesOut: Counter
    }

    /// Per-API handles (Kafka's `RequestMetrics`).
    struct RequestHandles {
        var requests: Counter
        var totalTime: Timer
    }

    private let topics = Mutex<[String: TopicCounters]>([:])
    private let requests = Mutex<[APIKey: RequestHandles]>([:])
    private let lags = Mutex<[String: Gauge]>([:])
    /// Record bytes answered to followers (Kafka's `ReplicationBytesOutPerSec`, all topics).
    let replicationBytesOut = Counter(label: "kafka_server_brokertopicmetrics_replicationbytesout_total")
    let isrShrinks = Counter(label: "kafka_server_replicamanager_isrshrinks_total")
    let isrExpands = Counter(label: "kafka_server_replicamanager_isrexpands_total")
    let underReplicatedPartitions = Gauge(label: "kafka_server_replicamanager_underreplicatedpartitions")
    let offlinePartitions = Gauge(label: "kafka_controller_offlinepartitionscount")
    let partitionCount = Gauge(label: "kafka_server_replicamanager_partitioncount")
    let leaderCount = Gauge(label: "kafka_server_replicamanager_leadercount")

    public init() {}

    private func topic(_ name: String) -> TopicCounters {
        topics.withLock { cache in
            if let found = cache[name] { return found }
            let dimensions = [("topic", name)]
            let created = TopicCounters(
                bytesIn: Counter(label: "kafka_server_brokertopicmetrics_bytesin_total", dimensions: dimensions),
                messagesIn: Counter(label: "kafka_server_brokertopicmetrics_messagesin_total", dimensions: dimensions),
                bytesOut: Counter(label: "kafka_server_brokertopicmetrics_bytesout_total", dimensions: dimensions))
            cache[name] = created
            return created
        }
    }

    /// A produce appended `records` records (`bytes` bytes) to `topic`.
    func produced(topic name: String, bytes: Int, records: Int) {
        let counters = topic(name)
        counters.bytesIn.increment(by: Int64(bytes))
        counters.messagesIn.increment(by: Int64(records))
    }

    /// A fetch answered `bytes` record bytes of `topic`: a consumer's count per topic, a
    /// follower's as replication traffic, as Kafka separates them.
    func fetched(topic name: String, bytes: Int, byFollower: Bool) {
        guard bytes > 0 else { return }
        if byFollower {
            replicationBytesOut.increment(by: Int64(bytes))
        } else {
            topic(name).bytesOut.increment(by: Int64(bytes))
        }
    }

    /// Each group's lag per partition it committed (`kafka_consumergroup_lag`, kafka_exporter's
    /// name): records between its committed offset and the high watermark.
    func consumerLag(_ entries: [(group: String, partition: TopicPartition, lag: Int64)]) {
        for entry in entries {
            let key = "\(entry.group)\u{0}\(entry.partition.topic)\u{0}\(entry.partition.partition)"
            let gauge = lags.withLock { cache in
                if let found = cache[key] { return found }
                let created = Gauge(label: "kafka_consumergroup_lag", dimensions: [
                    ("consumergroup", entry.group), ("topic", entry.partition.topic), ("partition", String(entry.partition.partition)),
                ])
                cache[key] = created
                return created
            }
            gauge.record(entry.lag)
        }
    }

    /// This leader asked for an ISR expansion or shrink.
    func isrChanged(expanded: Bool) {
        (expanded ? isrExpands : isrShrinks).increment()
    }

    /// One request of `api` was handled in `nanoseconds`.
    func handled(_ api: APIKey, nanoseconds: Int64) {
        let handles = requests.withLock { cache in
            if let found = cache[api] { return found }
            let dimensions = [("request", api.name)]
            let created = RequestHandles(
                requests: Counter(label: "kafka_network_requestmetrics_requests_total", dimensions: dimensions),
                totalTime: Timer(label: "kafka_network_requestmetrics_totaltime_seconds", dimensions: dimensions))
            cache[api] = created
            return created
        }
        handles.requests.increment()
        handles.totalTime.recordNanoseconds(nanoseconds)
    }

    /// The replica manager's view, sampled: partitions hosted and led, led partitions whose ISR
    /// lacks replicas, and partitions without a leader.
    func sample(_ partitions: [Partition]) {
        var led = 0, underReplicated = 0, offline = 0
        for partition in partitions {
            if partition.isLeader {
                led += 1
                if partition.inSyncReplicas.count < partition.replicas.count { underReplicated += 1 }
            } else if partition.leaderID < 0 {
                offline += 1
            }
        }
        partitionCount.record(partitions.count)
        leaderCount.record(led)
        underReplicatedPartitions.record(underReplicated)
        offlinePartitions.record(offline)
    }
}
