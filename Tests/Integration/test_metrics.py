"""The operator's endpoint (`metrics.listener`): `/metrics` parses as Prometheus text with the
prometheus_client parser and its counters move with traffic; `/health` and `/ready` answer."""

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples, name: str, **labels) -> float:
    """The sum over every sample of `name` whose labels include `labels` (e.g. all versions)."""
    return sum(v for (n, sample_labels), v in samples.items() if n == name and set(labels.items()) <= set(sample_labels))


def test_metrics_move_with_traffic_and_health_answers(broker_factory):
    port = free_port()
    broker = broker_factory({"metrics.listener": f"http://127.0.0.1:{port}"})
    for path in ("/health", "/ready"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            assert response.status == 200
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing", timeout=10)
        raise AssertionError("an unknown path was answered")
    except urllib.error.HTTPError as error:
        assert error.code == 404

    before = scrape(port)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for i in range(100):
        producer.produce("observed", value=b"x" * 100)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "observer", "enable.auto.commit": False})
    consumer.assign([TopicPartition("observed", 0, 0)])
    read = 0
    while read < 100:
        read += sum(1 for m in consumer.consume(num_messages=100, timeout=1) if m.error() is None)
    consumer.close()

    after = scrape(port)
    assert value(after, "kafka_server_brokertopicmetrics_messagesin_total", topic="observed") == 100
    assert value(after, "kafka_server_brokertopicmetrics_bytesin_total", topic="observed") >= 100 * 100
    assert value(after, "kafka_server_brokertopicmetrics_bytesout_total", topic="observed") >= 100 * 100
    produces = total(after, "kafka_network_requestmetrics_requests_total", request="Produce")
    assert produces >= 1 and produces > total(before, "kafka_network_requestmetrics_requests_total", request="Produce")
    # Requests are counted per version: librdkafka sends Produce at one version.
    versions = [dict(labels)["version"] for (name, labels), v in after.items()
                if name == "kafka_network_requestmetrics_requests_total" and dict(labels).get("request") == "Produce" and v > 0]
    assert len(versions) == 1 and int(versions[0]) >= 3, versions
    # The request-time and request-queue-time histograms count every request they timed.
    assert value(after, "kafka_network_requestmetrics_totaltime_seconds_count", request="Produce") == produces
    assert value(after, "kafka_network_requestmetrics_requestqueuetime_seconds_count", request="Produce") == produces
    assert value(after, "kafka_server_socketservermetrics_connection_count") >= 1
    assert ("kafka_server_replicamanager_underreplicatedpartitions", ()) in after

    # Sampled every 2 s: the partition's log size and segments, and the group with its member.
    group = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "members", "auto.offset.reset": "earliest"})
    group.subscribe(["observed"])
    deadline = time.time() + 30
    while time.time() < deadline and group.poll(0.5) is None:
        pass
    deadline = time.time() + 15
    while time.time() < deadline:  # the join completes after group.initial.rebalance.delay.ms
        sampled = scrape(port)
        if value(sampled, "kafka_consumergroup_members", consumergroup="members") == 1 \
                and value(sampled, "kafka_server_group_coordinator_metrics_group_completed_rebalance_total") >= 1:
            break
        time.sleep(0.5)
    group.close()
    assert value(sampled, "kafka_consumergroup_members", consumergroup="members") == 1
    assert value(sampled, "kafka_log_log_size", topic="observed", partition="0") >= 100 * 100
    assert value(sampled, "kafka_log_log_numlogsegments", topic="observed", partition="0") == 1
    assert total(sampled, "kafka_coordinator_group_groupmetadatamanager_numgroups") >= 1
    assert value(sampled, "kafka_server_group_coordinator_metrics_group_completed_rebalance_total") >= 1


def test_the_grafana_dashboard_queries_only_metrics_the_broker_exports(broker_factory):
    port = free_port()
    broker = broker_factory({"metrics.listener": f"http://127.0.0.1:{port}"})
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    producer.produce("dashboard", value=b"x")
    assert producer.flush(30) == 0
    # A committed offset, so the sampled consumer-lag gauge exists too.
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "dashboard", "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition("dashboard", 0, 0)], asynchronous=False)
    consumer.close()
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "docs" / "grafana" / "fjord-broker.json").read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"kafka_[a-z_]+", target["expr"])}
    deadline = time.time() + 10
    while True:
        missing = queried - {name for name, _ in scrape(port)}
        if not missing or time.time() > deadline:
            break
        time.sleep(0.5)
    assert queried and not missing, f"the dashboard queries what the broker does not export: {sorted(missing)}"


def test_consumer_lag_per_group_and_partition(broker_factory):
    port = free_port()
    broker = broker_factory({"metrics.listener": f"http://127.0.0.1:{port}"})
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(100):
        producer.produce("lagged", value=b"x")
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "behind", "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition("lagged", 0, 40)], asynchronous=False)
    consumer.close()
    deadline = time.time() + 10
    lag = None
    while time.time() < deadline:
        lag = value(scrape(port), "kafka_consumergroup_lag", consumergroup="behind", topic="lagged", partition="0")
        if lag == 60:
            break
        time.sleep(0.5)
    assert lag == 60


def status_of(port: int, path: str) -> int | None:
    """The HTTP status of `path`, or None while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def test_ready_flips_once_the_broker_has_joined_its_cluster(tmp_path):
    """`/health` answers as soon as the process runs; `/ready` says 503 while the broker cannot
    serve (here: its cluster's etcd is not up yet, so it cannot register) and 200 once it has
    joined and leads what the metadata says it leads."""
    import subprocess

    from cluster import Etcd
    from conftest import FJORD_BIN

    etcd = Etcd(tmp_path / "etcd")  # ports chosen, not started yet
    port, metrics = free_port(), free_port()
    log = open(tmp_path / "broker.log", "ab")
    broker = subprocess.Popen([FJORD_BIN, "serve", "--data-dir", str(tmp_path / "data"), "--node-id", "1", "--cluster", etcd.endpoint,
                               "--listeners", f"PLAINTEXT://127.0.0.1:{port}", "--set", f"metrics.listener=http://127.0.0.1:{metrics}",
                               "--set", "offsets.topic.replication.factor=1", "--set", "default.replication.factor=1"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while status_of(metrics, "/health") != 200:
            assert broker.poll() is None and time.time() < deadline, (tmp_path / "broker.log").read_text()[-2000:]
            time.sleep(0.1)
        for _ in range(10):  # a second of not being ready while etcd is away
            assert status_of(metrics, "/ready") == 503
            time.sleep(0.1)
        etcd.start()
        deadline = time.time() + 60
        while status_of(metrics, "/ready") != 200:
            assert broker.poll() is None and time.time() < deadline, (tmp_path / "broker.log").read_text()[-2000:]
            time.sleep(0.1)
        assert status_of(metrics, "/health") == 200
    finally:
        broker.terminate()
        broker.wait(timeout=30)
        log.close()
        etcd.stop()
