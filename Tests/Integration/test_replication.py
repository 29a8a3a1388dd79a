"""Replication: leader→follower fetch, ISR, high watermark and leader epochs, under faults.

Each test runs a real etcd and three `fjord serve --cluster` processes on loopback ports, kills or
freezes brokers with real signals, and then checks every acknowledged record with a small
Jepsen-style history checker (`check_history`):
- every acknowledged write is read back, exactly once, at the offset it was acknowledged at;
- nothing is read that no producer ever wrote;
- offsets are monotonic per partition and each producer's records keep their order;
- after the faults, the replicas' logs are byte-identical (each partition's segments concatenated).
A consumer group of three (classic and KIP-848) keeps consuming across its coordinator's SIGKILL,
at least once and without a gap.
"""

import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cluster import Cluster
from conftest import FJORD_BIN, read_exactly
from kafka.record.default_records import DefaultRecordBatchBuilder

TOPIC = "replicated"


def started_cluster(**settings):
    tmp = tempfile.TemporaryDirectory(prefix="fjord-replication-")
    # A short lag time: a killed follower leaves the ISR within seconds, not Kafka's 30 s.
    c = Cluster(Path(tmp.name), settings={"replica.lag.time.max.ms": "4000", "replica.fetch.backoff.ms": "200",
                                          "min.insync.replicas": "2", **settings}).start()
    yield c
    print(c.logs())
    c.stop()
    tmp.cleanup()


@pytest.fixture
def cluster():
    yield from started_cluster()


@pytest.fixture
def long_lease_cluster():
    """Brokers that may be frozen for seconds without losing their lease."""
    yield from started_cluster(**{"broker.session.timeout.ms": "8000"})


def create_topic(bootstrap: str, name: str, partitions: int, configs: dict | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=3, config=configs or {})])[name].result(30)


class History:
    """What producers were asked to write and what the brokers acknowledged (partition, offset)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.written: set[bytes] = set()
        self.acked: dict[bytes, tuple[int, int]] = {}
        self.errors: list[str] = []

    def write(self, value: bytes) -> None:
        with self.lock:
            self.written.add(value)

    def on_delivery(self, err, msg) -> None:
        with self.lock:
            if err is None:
                self.acked[msg.value()] = (msg.partition(), msg.offset())
            else:
                self.errors.append(str(err))


def read_all(bootstrap: str, topic: str, partitions: int, timeout: float = 60.0) -> dict[int, list[tuple[int, bytes]]]:
    """Every record of every partition, from offset 0 to the high watermark, as (offset, value)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "checker", "enable.auto.commit": False,
                         "enable.partition.eof": True, "fetch.max.bytes": 8 << 20})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    read: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
    ended: set[int] = set()
    deadline = time.time() + timeout
    while len(ended) < partitions and time.time() < deadline:
        for m in consumer.consume(num_messages=10000, timeout=0.5):
            if m.error() is None:
                read[m.partition()].append((m.offset(), m.value()))
            elif m.error().code() == KafkaError._PARTITION_EOF:
                ended.add(m.partition())
    consumer.close()
    assert len(ended) == partitions, f"only partitions {sorted(ended)} read to their end within {timeout}s"
    return read


def check_history(history: History, read: dict[int, list[tuple[int, bytes]]]) -> None:
    """The checker: no acknowledged write lost or duplicated or moved, nothing invented, order kept."""
    where: dict[bytes, tuple[int, int]] = {}
    for partition, records in read.items():
        offsets = [offset for offset, _ in records]
        assert offsets == sorted(set(offsets)), f"partition {partition}: offsets not strictly increasing"
        for offset, value in records:
            assert value in history.written, f"partition {partition} offset {offset}: {value!r} was never written"
            assert value not in where, f"{value!r} read twice: at {where[value]} and {(partition, offset)}"
            where[value] = (partition, offset)
        # One producer per partition numbers its records: they come back in that order.
        numbers = [int(value.split(b"-")[1]) for _, value in records]
        assert numbers == sorted(numbers), f"partition {partition}: records out of order"
    lost = [value for value in history.acked if value not in where]
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {lost[:5]}"
    moved = [(v, history.acked[v], where[v]) for v in history.acked if history.acked[v] != where[v]]
    assert not moved, f"{len(moved)} acknowledged records read at another offset, e.g. {moved[:5]}"


def list_offsets_error(port: int, topic: str, partition: int, current_leader_epoch: int) -> int:
    """ListOffsets v4 (latest) with a current leader epoch (KIP-320): the partition's error code."""
    name = topic.encode()
    body = struct.pack(">ib", -1, 0) + struct.pack(">i", 1) + struct.pack(">h", len(name)) + name
    body += struct.pack(">i", 1) + struct.pack(">iiq", partition, current_leader_epoch, -1)
    frame = struct.pack(">hhi", 2, 4, 7) + struct.pack(">h", 7) + b"checker" + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", read_exactly(conn, 4))[0]
        response = read_exactly(conn, size)
    # correlation id, throttle, topics[1], name, partitions[1], index, error code
    at = 4 + 4 + 4
    (length,) = struct.unpack_from(">h", response, at)
    at += 2 + length + 4 + 4
    (error,) = struct.unpack_from(">h", response, at)
    return error


def replica_bytes(cluster: Cluster, node: int, topic: str, partition: int) -> bytes:
    directory = cluster.brokers[node].data_dir / f"{topic}-{partition}"
    return b"".join(path.read_bytes() for path in sorted(directory.glob("*.log")))


def wait_in_sync(cluster: Cluster, topic: str, partitions: int, timeout: float = 60.0) -> dict:
    return cluster.wait_for(
        lambda m: all(len(cluster.registration(topic, p, m)["isr"]) == 3 and cluster.registration(topic, p, m)["leader"] > 0
                      for p in range(partitions)),
        "every replica back in the ISR", timeout=timeout)


def assert_replicas_identical(cluster: Cluster, topic: str, partitions: int, timeout: float = 30.0) -> None:
    """Once the followers caught up, every replica of a partition holds the same bytes."""
    for partition in range(partitions):
        deadline = time.time() + timeout
        while True:
            copies = {node: replica_bytes(cluster, node, topic, partition) for node in cluster.brokers}
            if len(set(copies.values())) == 1:
                break
            assert time.time() < deadline, (
                f"{topic}-{partition}: replicas differ: " + ", ".join(f"broker {n}: {len(b)} bytes" for n, b in copies.items()))
            time.sleep(0.5)
        assert len(copies[1]) > 0


def test_leaders_sigkilled_twice_under_idempotent_acks_all_load_lose_nothing(cluster):
    partitions, total = 6, 200_000
    create_topic(cluster.bootstrap(), TOPIC, partitions)
    history = History()
    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all", "enable.idempotence": True,
                         "linger.ms": 5, "message.timeout.ms": 120_000, "request.timeout.ms": 10_000})
    done = threading.Event()
    paced = threading.Event()  # set once the kills are over: the rest goes at full speed

    def produce():
        started = time.time()
        for i in range(total):
            partition = i % partitions
            value = f"p{partition}-{i // partitions:07d}".encode()
            history.write(value)
            while True:
                try:
                    producer.produce(TOPIC, value=value, partition=partition, on_delivery=history.on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            # About 2,000 records/s while brokers die, so the load spans every kill.
            if not paced.is_set() and i % 200 == 0:
                ahead = i / 2000 - (time.time() - started)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush(180)
        done.set()

    writer = threading.Thread(target=produce)
    writer.start()
    time.sleep(2)
    kills = 0
    try:
        for round_ in range(2):
            for partition in range(partitions):
                m = wait_in_sync(cluster, TOPIC, partitions)
                victim = cluster.registration(TOPIC, partition, m)["leader"]
                cluster.brokers[victim].kill()
                kills += 1
                cluster.wait_for(lambda m: cluster.registration(TOPIC, partition, m)["leader"] not in (victim, -1),
                                 f"a new leader of {TOPIC}-{partition}", timeout=20)
                time.sleep(0.5)
                cluster.brokers[victim].start()
    finally:
        paced.set()
    writer.join(300)
    assert done.is_set(), "the producer did not finish"
    assert kills == 12
    assert len(history.acked) >= total * 0.99, f"only {len(history.acked)} of {total} acknowledged: {history.errors[:5]}"

    wait_in_sync(cluster, TOPIC, partitions)
    read = read_all(cluster.bootstrap(), TOPIC, partitions)
    check_history(history, read)
    assert_replicas_identical(cluster, TOPIC, partitions)
    # The controller dropped each killed broker from its ISRs (its lease ended); the leaders took
    # the restarted ones back once they caught up, and the broker log names each expansion.
    logs = "".join(b.log_text() for b in cluster.brokers.values())
    assert logs.count("ISR expand") >= kills


def test_two_of_three_replicas_down_refuses_acks_all_until_one_returns(cluster):
    create_topic(cluster.bootstrap(), "quorum", 1)
    m = cluster.metadata()
    leader = cluster.registration("quorum", 0, m)["leader"]
    followers = [n for n in cluster.brokers if n != leader]
    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all", "enable.idempotence": False,
                         "retries": 0, "message.timeout.ms": 5000})
    results: list = []
    producer.produce("quorum", value=b"before", on_delivery=lambda err, msg: results.append(err))
    assert producer.flush(30) == 0 and results == [None]

    for node in followers:
        cluster.brokers[node].kill()
    cluster.wait_for(lambda m: cluster.registration("quorum", 0, m)["isr"] == [leader], "the ISR shrunk to the leader", timeout=30)
    refused: list = []
    producer.produce("quorum", value=b"refused", on_delivery=lambda err, msg: refused.append(err))
    producer.flush(30)
    assert len(refused) == 1 and refused[0] is not None
    assert refused[0].code() == KafkaError.NOT_ENOUGH_REPLICAS, refused[0]

    cluster.brokers[followers[0]].start()
    cluster.wait_for(lambda m: len(cluster.registration("quorum", 0, m)["isr"]) == 2, "a follower back in the ISR", timeout=60)
    after: list = []
    producer.produce("quorum", value=b"after", on_delivery=lambda err, msg: after.append(err))
    assert producer.flush(30) == 0 and after == [None]
    values = [v for _, v in read_all(cluster.bootstrap(), "quorum", 1)[0]]
    assert values == [b"before", b"after"]


@pytest.fixture
def slow_backoff_cluster():
    """Followers whose whole backoff after a refused fetch is 20 s, and stay in the ISR 30 s."""
    yield from started_cluster(**{"replica.fetch.backoff.ms": "20000", "replica.lag.time.max.ms": "30000"})


def test_acks_all_to_a_new_topic_does_not_wait_out_the_followers_backoff(slow_backoff_cluster):
    """A follower often fetches a new topic before its leader has applied the topic's creation
    and is refused; it retries within milliseconds (doubling up to replica.fetch.backoff.ms), and
    a fetcher waiting out such a delay fetches a newly added partition at once, so the first
    acks=all record is acknowledged at once rather than after the whole backoff (a second by
    default: the stall of every newly created or newly led partition). The refusal is a race
    this test does not force: it showed in one or two of every ten new topics here, and before
    the fix each such topic, and the topics after it on the same leader, waited 20 s."""
    cluster = slow_backoff_cluster
    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all", "enable.idempotence": True,
                         "linger.ms": 0, "message.timeout.ms": 60000})
    for i in range(10):
        topic = f"fresh-{i}"
        subprocess.run([FJORD_BIN, "topics", "create", topic, "-b", cluster.bootstrap(), "--partitions", "1",
                        "--replication-factor", "3"], check=True, capture_output=True, timeout=30)
        delivered: list = []
        producer.produce(topic, value=b"first", on_delivery=lambda err, msg: delivered.append(err))
        producer.flush(10)
        assert delivered == [None], f"{topic}: the first acks=all record was not acknowledged within 10 s ({delivered})"


def raw_produce(topic: str, value: bytes, correlation_id: int) -> bytes:
    """A size-prefixed Produce v3 (acks=all, 30 s timeout) of one record to partition 0."""
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    builder.append(0, timestamp=int(time.time() * 1000), key=None, value=value, headers=[])
    batch = bytes(builder.build())
    name = topic.encode()
    body = struct.pack(">hhi", -1, -1, 30_000) + struct.pack(">ih", 1, len(name)) + name
    body += struct.pack(">iii", 1, 0, len(batch)) + batch
    frame = struct.pack(">hhih", 0, 3, correlation_id, 3) + b"raw" + body
    return struct.pack(">i", len(frame)) + frame


def raw_list_latest(topic: str, correlation_id: int) -> bytes:
    """A size-prefixed ListOffsets v1 for partition 0's latest offset."""
    name = topic.encode()
    body = struct.pack(">i", -1) + struct.pack(">ih", 1, len(name)) + name + struct.pack(">iiq", 1, 0, -1)
    frame = struct.pack(">hhih", 2, 1, correlation_id, 3) + b"raw" + body
    return struct.pack(">i", len(frame)) + frame


def produce_error(response: bytes) -> int:
    """The partition's error code in a Produce v3 response."""
    (name_length,) = struct.unpack_from(">h", response, 8)
    return struct.unpack_from(">h", response, 10 + name_length + 4 + 4)[0]


def read_response(conn: socket.socket) -> bytes | None:
    """The next response frame, or None when the broker closed the connection instead."""
    head = b""
    while len(head) < 4:
        chunk = conn.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    return read_exactly(conn, struct.unpack(">i", head)[0])


def test_pipelined_produce_keeps_the_connections_order_and_its_close(cluster):
    """A leader appends a connection's next Produce while the previous one waits for acks=all
    (here for a frozen follower to leave the ISR). Any other request still waits for the answers
    before it: a ListOffsets after a Produce sees that Produce committed. And nothing after a
    request that closes the connection runs, even when that request came in while a Produce was
    waiting: the Produce behind a malformed one is never appended."""
    topic = "pipelined"
    create_topic(cluster.bootstrap(), topic, 1)
    # A first record through a real client: the partition's leader serves it by then.
    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all"})
    producer.produce(topic, value=b"first", partition=0)
    assert producer.flush(30) == 0
    wait_in_sync(cluster, topic, 1)
    leader = cluster.registration(topic, 0)["leader"]
    follower = next(n for n in cluster.brokers if n != leader)
    port = cluster.brokers[leader].port

    # A Produce, a malformed request that claims to be one, and a Produce behind it.
    malformed = struct.pack(">hhih", 0, 3, 2, 3) + b"raw" + b"\x00\x01"
    cluster.brokers[follower].process.send_signal(signal.SIGSTOP)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=40) as conn:
            conn.sendall(raw_produce(topic, b"a", 1) + struct.pack(">i", len(malformed)) + malformed + raw_produce(topic, b"c", 3))
            first = read_response(conn)
            assert first is not None and struct.unpack_from(">i", first)[0] == 1
            assert produce_error(first) == 0
            assert read_response(conn) is None, "the connection closes after the first answer"
    finally:
        cluster.brokers[follower].process.send_signal(signal.SIGCONT)
    wait_in_sync(cluster, topic, 1)

    # A Produce, then a ListOffsets: the latest offset covers the Produce.
    cluster.brokers[follower].process.send_signal(signal.SIGSTOP)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=40) as conn:
            conn.sendall(raw_produce(topic, b"b", 4) + raw_list_latest(topic, 5))
            produced = read_response(conn)
            listed = read_response(conn)
    finally:
        cluster.brokers[follower].process.send_signal(signal.SIGCONT)
    assert produced is not None and struct.unpack_from(">i", produced)[0] == 4
    assert produce_error(produced) == 0
    assert listed is not None and struct.unpack_from(">i", listed)[0] == 5
    # correlation id, [topics: name, [partitions: index, error, timestamp, offset]]
    (name_length,) = struct.unpack_from(">h", listed, 8)
    _, index, error, _, latest = struct.unpack_from(">iihqq", listed, 10 + name_length)
    assert (index, error) == (0, 0)
    assert latest == 3, "ListOffsets ran after the Produce before it was committed"
    values = [v for _, v in read_all(cluster.bootstrap(), topic, 1)[0]]
    assert values == [b"first", b"a", b"b"], "the Produce behind the malformed request was never appended"


def test_a_frozen_leader_is_fenced_truncates_and_rejoins(cluster):
    create_topic(cluster.bootstrap(), "frozen", 1)
    m = cluster.metadata()
    before = cluster.registration("frozen", 0, m)
    old = before["leader"]
    history = History()
    # A frozen broker keeps its connections open: the client's request timeout is what moves
    # the in-flight batches to the new leader (as against a frozen Kafka broker). librdkafka
    # times a ProduceRequest out after socket.timeout.ms (60 s by default); request.timeout.ms
    # is only the acks timeout it asks the broker for.
    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all", "enable.idempotence": True,
                         "request.timeout.ms": 5000, "socket.timeout.ms": 5000, "message.timeout.ms": 120_000})
    for i in range(500):
        value = f"p0-{i:07d}".encode()
        history.write(value)
        producer.produce("frozen", value=value, on_delivery=history.on_delivery)
    assert producer.flush(30) == 0

    # Frozen longer than its lease: another ISR member leads at a higher epoch.
    cluster.brokers[old].process.send_signal(signal.SIGSTOP)
    after = cluster.wait_for(lambda m: cluster.registration("frozen", 0, m)["leader"] not in (old, -1), "a new leader", timeout=20)
    elected = cluster.registration("frozen", 0, after)
    assert elected["leaderEpoch"] > before["leaderEpoch"]
    for i in range(500, 1000):
        value = f"p0-{i:07d}".encode()
        history.write(value)
        producer.produce("frozen", value=value, on_delivery=history.on_delivery)
    assert producer.flush(120) == 0

    # A client still holding the old epoch is fenced by the new leader (KIP-320), one ahead of
    # it is told the leader has not caught up.
    new_port = cluster.brokers[elected["leader"]].port
    assert list_offsets_error(new_port, "frozen", 0, before["leaderEpoch"]) == 74  # FENCED_LEADER_EPOCH
    assert list_offsets_error(new_port, "frozen", 0, elected["leaderEpoch"] + 1) == 75  # UNKNOWN_LEADER_EPOCH
    assert list_offsets_error(new_port, "frozen", 0, elected["leaderEpoch"]) == 0

    # Resumed: the old leader learns it was replaced, follows, and catches up into the ISR.
    cluster.brokers[old].process.send_signal(signal.SIGCONT)
    wait_in_sync(cluster, "frozen", 1)
    assert len(history.acked) == 1000
    check_history(history, read_all(cluster.bootstrap(), "frozen", 1))
    assert_replicas_identical(cluster, "frozen", 1)


def java_hash(text: str) -> int:
    """Java's String.hashCode (UTF-16 units), as Kafka places a group on `__consumer_offsets`."""
    units = text.encode("utf-16-be")
    h = 0
    for i in range(0, len(units), 2):
        h = (h * 31 + int.from_bytes(units[i:i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_a_group_of_three_keeps_consuming_across_its_coordinators_sigkill(cluster, protocol):
    topic, group, partitions, total = f"work-{protocol}", f"workers-{protocol}", 6, 6000
    create_topic(cluster.bootstrap(), topic, partitions)
    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all", "enable.idempotence": True,
                         "request.timeout.ms": 5000, "message.timeout.ms": 120_000})
    for i in range(total // 2):
        producer.produce(topic, value=f"w-{i:07d}".encode(), partition=i % partitions)
    assert producer.flush(60) == 0

    seen: list[bytes] = []
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[str] = []

    def consume(index: int) -> None:
        settings = {"bootstrap.servers": cluster.bootstrap(), "group.id": group, "group.protocol": protocol,
                    "auto.offset.reset": "earliest", "enable.auto.commit": False, "client.id": f"worker-{index}"}
        if protocol == "classic":
            settings.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
        consumer = Consumer(settings)
        consumer.subscribe([topic])
        try:
            while not stop.is_set():
                batch = [m for m in consumer.consume(num_messages=500, timeout=0.5) if m.error() is None]
                if not batch:
                    continue
                with lock:
                    seen.extend(m.value() for m in batch)
                try:
                    consumer.commit(asynchronous=False)
                except Exception as error:  # a commit during the failover may fail: at-least-once
                    failures.append(str(error))
        finally:
            consumer.close()

    workers = [threading.Thread(target=consume, args=(i,)) for i in range(3)]
    for worker in workers:
        worker.start()
    deadline = time.time() + 60
    while len(set(seen)) < total // 4 and time.time() < deadline:
        time.sleep(0.2)
    assert len(set(seen)) >= total // 4, "the group did not start consuming"

    # The coordinator is the leader of the group's __consumer_offsets partition (6 here).
    m = cluster.metadata()
    coordinator = cluster.registration("__consumer_offsets", (java_hash(group) & 0x7FFFFFFF) % 6, m)["leader"]
    cluster.brokers[coordinator].kill()
    for i in range(total // 2, total):
        producer.produce(topic, value=f"w-{i:07d}".encode(), partition=i % partitions)
    assert producer.flush(120) == 0

    wanted = {f"w-{i:07d}".encode() for i in range(total)}
    deadline = time.time() + 90
    while not wanted <= set(seen) and time.time() < deadline:
        time.sleep(0.5)
    stop.set()
    for worker in workers:
        worker.join(60)
    missing = wanted - set(seen)
    assert not missing, f"{len(missing)} records never consumed after the coordinator's death, e.g. {sorted(missing)[:5]}"
    # At-least-once: what was read twice is what was read after the last commit of a member
    # that moved, never more than the records themselves.
    assert len(seen) < 2 * total


def test_an_old_leaders_unreplicated_suffix_is_truncated_when_it_returns(long_lease_cluster):
    """KIP-101: records only the old leader has (acks=1, followers frozen) are cut when it
    comes back as a follower of the new leader's epoch, so every replica holds the new leader's
    records at those offsets."""
    cluster = long_lease_cluster
    create_topic(cluster.bootstrap(), "diverge", 1, configs={"min.insync.replicas": "1"})
    m = cluster.metadata()
    before = cluster.registration("diverge", 0, m)
    old = before["leader"]
    followers = [n for n in before["replicas"] if n != old]
    committed = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all", "enable.idempotence": True})
    for i in range(100):
        committed.produce("diverge", value=f"p0-{i:07d}".encode())
    assert committed.flush(30) == 0
    wait_in_sync(cluster, "diverge", 1)

    # The followers stop fetching (frozen well inside their lease), the leader appends alone.
    alone = Producer({"bootstrap.servers": cluster.brokers[old].bootstrap, "acks": 1, "linger.ms": 0})
    alone.list_topics("diverge", timeout=10)
    for node in followers:
        cluster.brokers[node].process.send_signal(signal.SIGSTOP)
    # Their long-polling fetches still wait on the leader: well past replica.fetch.wait.max.ms
    # (500 ms) they have been answered into the frozen sockets, and no fetch is left to carry
    # the suffix (on a loaded machine the leader may read a last fetch late: 2.5 s of margin).
    time.sleep(2.5)
    for i in range(20):
        alone.produce("diverge", value=f"only-on-the-old-leader-{i}".encode())
    assert alone.flush(10) == 0
    cluster.brokers[old].process.send_signal(signal.SIGSTOP)
    for node in followers:
        cluster.brokers[node].process.send_signal(signal.SIGCONT)

    # A follower (in the ISR, without the suffix) leads at a higher epoch and takes new writes
    # at the offsets the old leader used.
    after = cluster.wait_for(lambda m: cluster.registration("diverge", 0, m)["leader"] in followers, "a new leader", timeout=30)
    assert cluster.registration("diverge", 0, after)["leaderEpoch"] > before["leaderEpoch"]
    history = History()
    producer = Producer({"bootstrap.servers": cluster.bootstrap(exclude=(old,)), "acks": "all", "enable.idempotence": True,
                         "request.timeout.ms": 5000})
    for i in range(100, 200):
        value = f"p0-{i:07d}".encode()
        history.write(value)
        producer.produce("diverge", value=value, on_delivery=history.on_delivery)
    assert producer.flush(60) == 0 and len(history.acked) == 100

    values = [v for _, v in read_all(cluster.bootstrap(exclude=(old,)), "diverge", 1)[0]]
    assert not any(v.startswith(b"only-on-the-old-leader") for v in values), "a frozen follower had fetched the suffix"
    assert values == [f"p0-{i:07d}".encode() for i in range(200)]

    cluster.brokers[old].process.send_signal(signal.SIGCONT)
    wait_in_sync(cluster, "diverge", 1)
    assert "truncated a follower to its leader" in cluster.brokers[old].log_text()
    assert_replicas_identical(cluster, "diverge", 1)
    values = [v for _, v in read_all(cluster.bootstrap(), "diverge", 1)[0]]
    assert values == [f"p0-{i:07d}".encode() for i in range(200)]


def test_a_follower_that_stops_fetching_leaves_the_isr_by_lag_and_rejoins(long_lease_cluster):
    """The leader's own shrink (replica.lag.time.max.ms, 4 s here), not the controller's: the
    frozen follower's lease (8 s) outlives the lag time, so only the leader can see it fall behind."""
    cluster = long_lease_cluster
    create_topic(cluster.bootstrap(), "lagging", 1)
    m = cluster.metadata()
    leader = cluster.registration("lagging", 0, m)["leader"]
    # Not the controller: a frozen controller would apply the shrink only after its own lease.
    follower = next(n for n in cluster.registration("lagging", 0, m)["replicas"] if n not in (leader, m["controller"]))
    producer = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all", "enable.idempotence": True})
    producer.produce("lagging", value=b"first")
    assert producer.flush(30) == 0

    cluster.brokers[follower].process.send_signal(signal.SIGSTOP)
    frozen_at = time.time()
    shrunk = cluster.wait_for(lambda m: follower not in cluster.registration("lagging", 0, m)["isr"], "the ISR shrink", timeout=7)
    assert time.time() - frozen_at < 7.5, "shrunk only after the follower's lease ended"
    assert cluster.registration("lagging", 0, shrunk)["leader"] == leader
    assert follower in [b["nodeID"] for b in shrunk["brokers"]], "the follower's lease was still alive"
    # acks=all goes on with the two replicas left (min.insync.replicas=2).
    for i in range(100):
        producer.produce("lagging", value=f"during-{i}".encode())
    assert producer.flush(30) == 0
    # The operator's view names the partition (and only while it is under-replicated).
    survivors = cluster.bootstrap(exclude=(follower,))
    described = subprocess.run([FJORD_BIN, "topics", "describe", "--under-replicated", "-b", survivors],
                               capture_output=True, text=True, timeout=60, check=True).stdout
    assert "Topic: lagging" in described and "Partition: 0" in described, described

    cluster.brokers[follower].process.send_signal(signal.SIGCONT)
    wait_in_sync(cluster, "lagging", 1, timeout=30)
    described = subprocess.run([FJORD_BIN, "topics", "describe", "--under-replicated", "-b", survivors],
                               capture_output=True, text=True, timeout=60, check=True).stdout
    assert "lagging" not in described, described
    log = cluster.brokers[leader].log_text()
    assert "ISR shrink" in log and "ISR expand" in log
    assert_replicas_identical(cluster, "lagging", 1)
