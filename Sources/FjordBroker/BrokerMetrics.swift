import CoreMetrics
import FjordProtocol
import FjordStorage
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

    /// Per-API handles (Kafka's `RequestMetrics`): requests counted per version, times per API.
    struct RequestHandles {
        var requests: [Int16: Counter]
        var totalTime: Timer
        var queueTime: Timer
    }

    /// Per-partition log gauges (Kafka's `Log` metrics).
    struct LogGauges {
        var segments: Gauge
        var size: Gauge
    }

    private let topics = Mutex<[String: TopicCounters]>([:])
    private let requests = Mutex<[APIKey: RequestHandles]>([:])
    private let lags = Mutex<[String: Gauge]>([:])
    private let logs = Mutex<[TopicPartition: LogGauges]>([:])
    private let groupGauges = Mutex<(members: [String: Gauge], states: [String: Gauge], rebalances: Int)>(([:], [:], 0))
    /// Kafka's `LogFlushRateAndTimeMs`: every fsync of a partition's segments and checkpoints.
    let logFlushTime = Timer(label: "kafka_log_logflushstats_logflushrateandtime_seconds")
    /// Rebalances completed by this coordinator (classic join phases, KIP-848 epoch bumps).
    let completedRebalances = Counter(label: "kafka_server_group_coordinator_metrics_group_completed_rebalance_total")
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

    /// One request of `api` at `version` waited `queuedNanoseconds` on its connection (behind
    /// earlier requests, or a quota's mute) and was handled in `nanoseconds`.
    func handled(_ api: APIKey, version: Int16, nanoseconds: Int64, queuedNanoseconds: Int64?) {
        let (counter, handles) = requests.withLock { cache -> (Counter, RequestHandles) in
            let name = api.name
            var handles = cache[api] ?? RequestHandles(
                requests: [:], totalTime: Timer(label: "kafka_network_requestmetrics_totaltime_seconds", dimensions: [("request", name)]),
                queueTime: Timer(label: "kafka_network_requestmetrics_requestqueuetime_seconds", dimensions: [("request", name)]))
            if let counter = handles.requests[version] { return (counter, handles) }
            let counter = Counter(label: "kafka_network_requestmetrics_requests_total", dimensions: [("request", name), ("version", String(version))])
            handles.requests[version] = counter
            cache[api] = handles
            return (counter, handles)
        }
        counter.increment()
        handles.totalTime.recordNanoseconds(nanoseconds)
        if let queuedNanoseconds { handles.queueTime.recordNanoseconds(queuedNanoseconds) }
    }

    /// One log flush took `duration`.
    func logFlushed(_ duration: Duration) {
        let parts = duration.components
        logFlushTime.recordNanoseconds(parts.seconds * 1_000_000_000 + parts.attoseconds / 1_000_000_000)
    }

    /// Each hosted partition's segment count and size in bytes (`kafka_log_log_numlogsegments`,
    /// `kafka_log_log_size`); a partition no longer hosted loses its gauges.
    func sampleLogs(_ partitions: [Partition]) {
        let current = partitions.map { ($0.topicPartition, $0.log.segmentCount, $0.log.sizeInBytes) }
        let (gauges, gone) = logs.withLock { cache -> ([(LogGauges, Int, Int64)], [LogGauges]) in
            var out: [(LogGauges, Int, Int64)] = []
            var seen = Set<TopicPartition>()
            for (tp, segments, size) in current {
                seen.insert(tp)
                let gauges = cache[tp] ?? {
                    let dimensions = [("topic", tp.topic), ("partition", String(tp.partition))]
                    let created = LogGauges(segments: Gauge(label: "kafka_log_log_numlogsegments", dimensions: dimensions),
                                            size: Gauge(label: "kafka_log_log_size", dimensions: dimensions))
                    cache[tp] = created
                    return created
                }()
                out.append((gauges, segments, size))
            }
            let gone = cache.filter { !seen.contains($0.key) }
            for key in gone.keys { cache[key] = nil }
            return (out, Array(gone.values))
        }
        for (handles, segments, size) in gauges {
            handles.segments.record(segments)
            handles.size.record(size)
        }
        for handles in gone {
            handles.segments.destroy()
            handles.size.destroy()
        }
    }

    /// The coordinator's groups: members per group (`kafka_consumergroup_members`, kafka_exporter's
    /// name), groups per state (`kafka_coordinator_group_groupmetadatamanager_numgroups{state}`)
    /// and completed rebalances.
    func sampleGroups(_ groups: [(id: String, state: String, members: Int)], rebalances: Int) {
        var byState: [String: Int] = [:]
        for group in groups { byState[group.state.lowercased(), default: 0] += 1 }
        let (members, states, delta, gone) = groupGauges.withLock { cache -> ([(Gauge, Int)], [(Gauge, Int)], Int, [Gauge]) in
            var members: [(Gauge, Int)] = []
            var seen = Set<String>()
            for group in groups {
                seen.insert(group.id)
                let gauge = cache.members[group.id] ?? Gauge(label: "kafka_consumergroup_members", dimensions: [("consumergroup", group.id)])
                cache.members[group.id] = gauge
                members.append((gauge, group.members))
            }
            let gone = cache.members.filter { !seen.contains($0.key) }
            for key in gone.keys { cache.members[key] = nil }
            var states: [(Gauge, Int)] = []
            for state in Set(byState.keys).union(cache.states.keys) {
                let gauge = cache.states[state]
                    ?? Gauge(label: "kafka_coordinator_group_groupmetadatamanager_numgroups", dimensions: [("state", state)])
                cache.states[state] = gauge
                states.append((gauge, byState[state] ?? 0))
            }
            let delta = Swift.max(0, rebalances - cache.rebalances)
            cache.rebalances = rebalances
            return (members, states, delta, Array(gone.values))
        }
        for (gauge, count) in members { gauge.record(count) }
        for (gauge, count) in states { gauge.record(count) }
        for gauge in gone { gauge.destroy() }
        if delta > 0 { completedRebalances.increment(by: Int64(delta)) }
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
