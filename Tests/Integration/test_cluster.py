"""Clusters: a real etcd and three `fjord serve --cluster` processes on loopback ports.

What these tests hold the cluster to (docs/ARCHITECTURE.md, "Clusters"):
- topics created on any broker are assigned over the live brokers and every broker tells the same;
- a leader's SIGKILL gives its partitions a new leader from the ISR within the lease TTL plus a
  second, at a higher leader epoch, and clients follow without a restart;
- followers replicate, so a leader's death moves its partitions to an ISR member that holds
  every acknowledged record (tests/test_replication.py puts that under load and faults);
- one controller at a time: every controller write in etcd's history carries the epoch of the
  controller alive at that revision;
- etcd down for 20 s under load: no broker exits, the data path goes on, metadata changes
  resume after;
- SIGTERM moves leaderships away before the broker exits.
"""

import json
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaTopicPartition

from cluster import Cluster
from conftest import FJORD_BIN


@pytest.fixture
def cluster():
    tmp = tempfile.TemporaryDirectory(prefix="fjord-cluster-")
    c = Cluster(Path(tmp.name)).start()
    yield c
    print(c.logs())
    c.stop()
    tmp.cleanup()


def create_topic(bootstrap: str, name: str, partitions: int, replication: int = 3) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=replication)])[name].result(30)


def kcat_metadata(bootstrap: str) -> dict:
    out = subprocess.run(["kcat", "-L", "-J", "-b", bootstrap], capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout)


def read_partition(bootstrap: str, topic: str, partition: int, expect: int, timeout: float = 30.0) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, partition, 0)])
    values: list[bytes] = []
    deadline = time.time() + timeout
    while len(values) < expect and time.time() < deadline:
        for m in consumer.consume(num_messages=1000, timeout=0.5):
            if m.error() is None:
                values.append(m.value())
    consumer.close()
    return values


def test_rf3_topics_created_on_any_broker_spread_and_every_broker_agrees(cluster):
    controller = cluster.metadata()["controller"]
    others = [n for n in cluster.brokers if n != controller]
    # confluent-kafka's admin, bootstrapped on a broker that is not the controller.
    create_topic(cluster.brokers[others[0]].bootstrap, "orders", 6)
    # kafka-python's admin, through another.
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic as KafkaNewTopic
    admin = KafkaAdminClient(bootstrap_servers=cluster.brokers[others[1]].bootstrap)
    admin.create_topics([KafkaNewTopic("events", num_partitions=3, replication_factor=3)])
    admin.close()
    # Auto-creation by a produce through a non-controller (the controller creates it on request).
    subprocess.run(["kcat", "-P", "-b", cluster.brokers[others[0]].bootstrap, "-t", "auto"], input=b"one\ntwo\n",
                   check=True, timeout=30)

    m = cluster.wait_for(lambda m: {"orders", "events", "auto"} <= set(m["topics"]), "three topics")
    # kcat's auto-created topic has default.replication.factor (3 here) replicas too.
    assert sorted(cluster.registration("auto", 0, m)["replicas"]) == [1, 2, 3]
    assert all(sorted(cluster.registration("events", i, m)["replicas"]) == [1, 2, 3] for i in range(3))
    leaders = {n: 0 for n in cluster.brokers}
    for index in range(6):
        registration = cluster.registration("orders", index, m)
        assert sorted(registration["replicas"]) == [1, 2, 3]
        assert registration["leader"] == registration["replicas"][0]
        leaders[registration["leader"]] += 1
    assert sorted(leaders.values()) == [2, 2, 2], leaders

    # Every broker tells the same brokers, controller, leaders, replicas and ISRs.
    def view(bootstrap):
        md = kcat_metadata(bootstrap)
        topics = {t["topic"]: sorted((p["partition"], p["leader"], tuple(r["id"] for r in p["replicas"]),
                                      tuple(sorted(i["id"] for i in p["isrs"]))) for p in t["partitions"])
                  for t in md["topics"] if t["topic"] in ("orders", "events")}
        return sorted(b["id"] for b in md["brokers"]), md["controllerid"], topics

    views = [view(b.bootstrap) for b in cluster.brokers.values()]
    assert views[0][0] == [1, 2, 3] and views[0][1] == controller
    assert views[0] == views[1] == views[2]

    # A config change through a non-controller (any broker writes configs, as ZooKeeper-era
    # Kafka's did) is seen by every broker's DescribeConfigs.
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
    admin = AdminClient({"bootstrap.servers": cluster.brokers[others[0]].bootstrap})
    change = ConfigResource("topic", "orders", incremental_configs=[
        ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([change]).values():
        future.result(30)
    for node, broker in cluster.brokers.items():
        python_admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        from kafka.admin import ConfigResource as KafkaConfigResource, ConfigResourceType
        described = python_admin.describe_configs([KafkaConfigResource(ConfigResourceType.TOPIC, "orders")])
        python_admin.close()
        assert "3600000" in str(described), (node, described)

    # Every acknowledged record of an acks=all producer comes back through a group consumer.
    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all", "enable.idempotence": True})
    acked = []
    for i in range(300):
        producer.produce("orders", key=str(i).encode(), value=f"v{i}".encode(),
                         on_delivery=lambda err, msg: acked.append(msg.value()) if err is None else None)
    assert producer.flush(30) == 0
    assert len(acked) == 300
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap(), "group.id": "orders-reader", "auto.offset.reset": "earliest"})
    consumer.subscribe(["orders"])
    seen = []
    deadline = time.time() + 60
    while len(seen) < 300 and time.time() < deadline:
        for m in consumer.consume(num_messages=500, timeout=0.5):
            if m.error() is None:
                seen.append(m.value())
    consumer.close()
    assert sorted(seen) == sorted(acked)


def test_sigkill_of_a_leader_elects_from_the_isr_and_clients_follow(cluster):
    create_topic(cluster.bootstrap(), "failover", 3)
    create_topic(cluster.bootstrap(), "warm", 1)
    m = cluster.metadata()
    # A partition with no records yet (its followers are still in sync) led by a non-controller.
    index = next(i for i in range(3) if cluster.registration("failover", i, m)["leader"] != m["controller"])
    before = cluster.registration("failover", index, m)
    victim = before["leader"]
    survivors = cluster.bootstrap(exclude=(victim,))

    # Three clients connected (metadata fetched, connections up) before the failure.
    confluent = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all", "enable.idempotence": True})
    confluent.produce("warm", value=b"hello")
    assert confluent.flush(30) == 0
    python = KafkaProducer(bootstrap_servers=cluster.bootstrap(), acks="all", retries=20, retry_backoff_ms=200,
                           request_timeout_ms=10000)
    python.send("warm", b"hello").get(timeout=30)
    swift = subprocess.Popen([FJORD_BIN, "produce", "-b", cluster.bootstrap(), "failover", "-p", str(index), "--acks", "all"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    killed_at = time.time()
    cluster.brokers[victim].kill()
    after = cluster.wait_for(lambda m: cluster.registration("failover", index, m)["leader"] not in (victim, -1),
                             "a new leader", timeout=20)
    elapsed = time.time() - killed_at
    elected = cluster.registration("failover", index, after)
    assert elected["leader"] in before["isr"] and elected["leader"] != victim
    assert elected["leaderEpoch"] > before["leaderEpoch"]
    assert victim not in elected["isr"]
    assert elapsed <= cluster.ttl + 1.0, f"new leader after {elapsed:.2f}s (lease TTL {cluster.ttl}s)"

    # The same client instances write to the moved partition through its new leader.
    acked = []
    for i in range(50):
        confluent.produce("failover", value=f"confluent-{i}".encode(), partition=index,
                          on_delivery=lambda err, msg: acked.append(msg.value()) if err is None else None)
    assert confluent.flush(60) == 0
    for i in range(50):
        python.send("failover", f"python-{i}".encode(), partition=index).get(timeout=60)
        acked.append(f"python-{i}".encode())
    lines = "".join(f"swift-{i}\n" for i in range(50)).encode()
    out, err = swift.communicate(lines, timeout=120)
    assert swift.returncode == 0, err.decode()
    acked += [f"swift-{i}".encode() for i in range(50)]
    python.close()

    # And consumers read them from the new leader (kafka-python assigned, confluent through survivors).
    consumer = KafkaConsumer(bootstrap_servers=survivors, enable_auto_commit=False, consumer_timeout_ms=5000)
    consumer.assign([KafkaTopicPartition("failover", index)])
    consumer.seek_to_beginning()
    seen = [record.value for record in consumer]
    consumer.close()
    assert sorted(seen) == sorted(acked)
    assert sorted(read_partition(survivors, "failover", index, len(acked))) == sorted(acked)


def test_acknowledged_records_survive_their_leaders_death_on_a_follower(cluster):
    create_topic(cluster.bootstrap(), "durable", 3)
    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all", "enable.idempotence": True})
    acked: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
    for i in range(300):
        producer.produce("durable", value=f"r{i}".encode(), partition=i % 3,
                         on_delivery=lambda err, msg: acked[msg.partition()].append(msg.value()) if err is None else None)
    assert producer.flush(30) == 0
    assert sum(len(v) for v in acked.values()) == 300
    m = cluster.metadata()
    # Followers replicate: each written partition keeps its whole ISR.
    for index in range(3):
        registration = cluster.registration("durable", index, m)
        assert sorted(registration["isr"]) == [1, 2, 3], registration
    before = cluster.registration("durable", 0, m)
    victim = before["leader"]
    cluster.brokers[victim].kill()
    moved = cluster.wait_for(lambda m: cluster.registration("durable", 0, m)["leader"] not in (victim, -1), "a new leader")
    assert cluster.registration("durable", 0, moved)["leader"] in before["isr"]
    # The new leader has every acknowledged record.
    survivors = cluster.bootstrap(exclude=(victim,))
    for index in range(3):
        assert sorted(read_partition(survivors, "durable", index, len(acked[index]))) == sorted(acked[index])
    # Restarted against the wrong cluster (another etcd prefix: a new, empty cluster), the broker
    # refuses its data directory instead of deleting its logs as unknown topics.
    broker = cluster.brokers[victim]
    right = list(broker.extra_args)
    broker.extra_args = ["--node-id", str(victim), "--cluster", cluster.etcd.endpoint + "-other"]
    with pytest.raises(RuntimeError, match="belongs to cluster"):
        broker.start()
    broker.process = None
    broker.log.close()
    broker.extra_args = right
    broker.start()
    # Back as a follower, it catches up and rejoins the ISR.
    cluster.wait_for(lambda m: victim in cluster.registration("durable", 0, m)["isr"], "the old leader back in the ISR")
    for index in range(3):
        assert sorted(read_partition(cluster.bootstrap(), "durable", index, len(acked[index]))) == sorted(acked[index])


def test_one_controller_at_a_time_and_every_write_is_fenced(cluster):
    create_topic(cluster.bootstrap(), "fenced", 6)
    first = cluster.metadata()
    old = first["controller"]
    # SIGSTOP: the controller is alive but silent; its lease ends and another takes over.
    cluster.brokers[old].process.send_signal(signal.SIGSTOP)
    second = cluster.wait_for(lambda m: m["controller"] not in (-1, old), "a new controller", timeout=20)
    assert second["controller_epoch"] > first["controller_epoch"]
    create_topic(cluster.bootstrap(exclude=(old,)), "after-stop", 3, replication=2)
    # The stopped controller wakes up with a dead epoch: it must not write.
    cluster.brokers[old].process.send_signal(signal.SIGCONT)
    time.sleep(2)
    # SIGKILL of the new controller: a third takes over.
    new = second["controller"]
    cluster.brokers[new].kill()
    third = cluster.wait_for(lambda m: m["controller"] not in (-1, new), "a third controller", timeout=20)
    assert third["controller_epoch"] > second["controller_epoch"]
    create_topic(cluster.bootstrap(exclude=(new,)), "after-kill", 3, replication=2)
    cluster.wait_for(lambda m: "after-kill" in m["topics"], "after-kill created")

    # etcd's history: every topic or partition write at revision r carries the epoch of the
    # controller key alive at r (one controller at a time, and no write from a dead epoch).
    head = cluster.metadata()["revision"]
    epochs_seen = set()
    checked = 0
    for revision in range(1, head + 1):
        kvs, _ = cluster.etcd.range("/fjord/", revision)
        controller = next((kv for kv in kvs if kv["key"] == "/fjord/controller"), None)
        for kv in kvs:
            if kv["mod_revision"] != revision:
                continue
            if kv["key"].startswith("/fjord/topics/") or kv["key"].startswith("/fjord/partitions/"):
                assert controller is not None, f"{kv['key']} written at {revision} with no controller"
                epoch = json.loads(kv["value"])["controllerEpoch"]
                assert epoch == controller["create_revision"], (kv["key"], revision, epoch, controller)
                epochs_seen.add(epoch)
                checked += 1
    assert len(epochs_seen) >= 2 and checked > 6, (epochs_seen, checked)
    # Every live broker agrees on the controller and the topics.
    views = {json.dumps(sorted((t["topic"], len(t["partitions"])) for t in kcat_metadata(cluster.brokers[n].bootstrap)["topics"]))
             for n in cluster.live()}
    assert len(views) == 1


def test_etcd_outage_under_load_keeps_brokers_serving(cluster):
    create_topic(cluster.bootstrap(), "load", 3)
    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all", "enable.idempotence": True,
                         "message.timeout.ms": 120000})
    acked: list[bytes] = []
    failed: list[str] = []
    stop = threading.Event()

    def produce():
        i = 0
        while not stop.is_set():
            producer.produce("load", value=f"x{i}".encode(),
                             on_delivery=lambda err, msg: acked.append(msg.value()) if err is None else failed.append(str(err)))
            producer.poll(0)
            i += 1
            time.sleep(0.005)
        producer.flush(120)

    for i in range(30):
        producer.produce("load", value=f"w{i}".encode(), partition=i % 3)
    assert producer.flush(30) == 0
    writer = threading.Thread(target=produce)
    writer.start()
    time.sleep(1)
    cluster.etcd.stop()
    outage_started = time.time()
    acked_before = len(acked)
    # Metadata changes are refused with a clear error, nothing crashes.
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap()})
    with pytest.raises(KafkaException) as refused:
        admin.create_topics([NewTopic("during", num_partitions=1, replication_factor=3)], request_timeout=10)["during"].result(30)
    assert "REQUEST_TIMED_OUT" in str(refused.value) or "NOT_CONTROLLER" in str(refused.value), str(refused.value)
    while time.time() - outage_started < 20:
        time.sleep(0.5)
        for node, broker in cluster.brokers.items():
            assert broker.process.poll() is None, f"broker {node} exited during the etcd outage"
    acked_during = len(acked) - acked_before
    cluster.etcd.start()
    time.sleep(1)
    stop.set()
    writer.join(150)
    assert acked_during > 100, "the data path stopped while etcd was down"
    assert not failed, failed[:5]

    # After etcd is back: a metadata change is made and every broker sees it.
    deadline = time.time() + 60
    while True:
        try:
            create_topic(cluster.bootstrap(), "after-outage", 2)
            break
        except KafkaException:
            if time.time() > deadline:
                raise
            time.sleep(1)
    for broker in cluster.brokers.values():
        deadline = time.time() + 20
        while not any(t["topic"] == "after-outage" and len(t["partitions"]) == 2 for t in kcat_metadata(broker.bootstrap)["topics"]):
            assert time.time() < deadline, f"{broker.bootstrap} does not see the new topic"
            time.sleep(0.2)
    seen = []
    for index in range(3):
        seen += read_partition(cluster.bootstrap(), "load", index, 1 << 30, timeout=5)
    assert set(acked) <= set(seen)


def test_sigterm_moves_leadership_before_the_broker_exits(cluster):
    create_topic(cluster.bootstrap(), "handover", 6)
    m = cluster.metadata()
    leader = cluster.registration("handover", 0, m)["leader"]
    led = [i for i in range(6) if cluster.registration("handover", i, m)["leader"] == leader]
    assert led
    started = time.time()
    assert cluster.brokers[leader].stop(signal.SIGTERM, timeout=30) == 0
    # At once (not a lease TTL later): the broker is gone and its partitions have new leaders.
    after = cluster.metadata()
    assert leader not in [b["nodeID"] for b in after["brokers"]]
    for index in led:
        registration = cluster.registration("handover", index, after)
        assert registration["leader"] not in (leader, -1), (index, registration)
        assert leader not in registration["isr"]
    assert time.time() - started < cluster.ttl + 5


def test_elect_leaders_and_partition_reassignments(cluster):
    from confluent_kafka import ElectionType
    from kafka import KafkaAdminClient
    create_topic(cluster.bootstrap(), "moves", 3, replication=2)
    m = cluster.metadata()
    p0 = cluster.registration("moves", 0, m)
    a, b = p0["replicas"]
    confluent = AdminClient({"bootstrap.servers": cluster.bootstrap()})
    python = KafkaAdminClient(bootstrap_servers=cluster.bootstrap())

    # The preferred replica leads already: ELECTION_NOT_NEEDED, nothing changes.
    result = confluent.elect_leaders(ElectionType.PREFERRED, [TopicPartition("moves", 0)]).result(30)
    assert "ELECTION_NOT_NEEDED" in str(result[TopicPartition("moves", 0)])
    # Reordering the replicas makes b preferred (all in the ISR: done at once); a preferred
    # election then moves leadership to b at a higher leader epoch.
    assert python.alter_partition_reassignments({KafkaTopicPartition("moves", 0): [b, a]}) == {KafkaTopicPartition("moves", 0): None}
    cluster.wait_for(lambda m: cluster.registration("moves", 0, m)["replicas"] == [b, a], "replicas reordered")
    result = confluent.elect_leaders(ElectionType.PREFERRED, [TopicPartition("moves", 0)]).result(30)
    assert result[TopicPartition("moves", 0)] is None
    after = cluster.wait_for(lambda m: cluster.registration("moves", 0, m)["leader"] == b, "b leads")
    assert cluster.registration("moves", 0, after)["leaderEpoch"] > p0["leaderEpoch"]

    # Adding a replica: it copies the partition from the leader, joins the ISR, and the
    # reassignment completes (the removed replica leaves).
    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all"})
    for i in range(100):
        producer.produce("moves", value=f"m{i}".encode(), partition=1)
    assert producer.flush(30) == 0
    p1 = cluster.registration("moves", 1, after)
    third = next(n for n in (1, 2, 3) if n not in p1["replicas"])
    target = [p1["replicas"][0], third]
    python.alter_partition_reassignments({KafkaTopicPartition("moves", 1): target})
    cluster.wait_for(lambda m: cluster.registration("moves", 1, m)["replicas"] == target, "the reassignment done")
    assert python.list_partition_reassignments() == {}
    copied = cluster.brokers[third].data_dir / "moves-1"
    assert copied.exists()
    assert sorted(read_partition(cluster.bootstrap(), "moves", 1, 100)) == sorted(f"m{i}".encode() for i in range(100))

    # Removing a replica completes at once, and the removed broker deletes its copy.
    p2 = cluster.registration("moves", 2, after)
    keep, drop = p2["replicas"]
    python.alter_partition_reassignments({KafkaTopicPartition("moves", 2): [keep]})
    cluster.wait_for(lambda m: cluster.registration("moves", 2, m)["replicas"] == [keep], "replica removed")
    dropped = cluster.brokers[drop].data_dir / "moves-2"
    deadline = time.time() + 10
    while dropped.exists():
        assert time.time() < deadline, f"{dropped} still there"
        time.sleep(0.1)
    python.close()
