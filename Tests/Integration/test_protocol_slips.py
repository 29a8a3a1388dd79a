"""Protocol details where Fjord must answer as Kafka's broker does (issue: compatibility gaps).

- Fetch answers an error partition with an empty record set, never a null one: a null set in a
  non-flexible version is a MessageSetSize of -1, which librdkafka 2.0 (Debian's kcat) rejects
  with the whole response, so a consumer started past the end never reaches the end.
- ListOffsets by timestamp answers the first *record* with a timestamp at or after the target,
  looking inside the batch, and MAX_TIMESTAMP (-3) the record holding the largest timestamp.
"""

import socket
import struct
import subprocess
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from conftest import read_exactly


def create(bootstrap, topic, partitions=1):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(30)
    return admin


def kafka_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def fetch_out_of_range(port: int, topic: str, version: int) -> tuple[int, int]:
    """Sends a non-flexible Fetch (v4..v11) at offset 1,000,000 of partition 0; returns the
    partition's (error code, records length field)."""
    body = struct.pack(">iiii", -1, 100, 1, 1 << 20)  # replica, max wait, min bytes, max bytes
    body += struct.pack(">b", 0)  # isolation level
    if version >= 7:
        body += struct.pack(">ii", 0, -1)  # session id, epoch
    body += struct.pack(">i", 1) + kafka_string(topic) + struct.pack(">i", 1)
    body += struct.pack(">i", 0)  # partition
    if version >= 9:
        body += struct.pack(">i", -1)  # current leader epoch
    body += struct.pack(">q", 1_000_000)
    if version >= 5:
        body += struct.pack(">q", -1)  # log start offset
    body += struct.pack(">i", 1 << 20)
    if version >= 7:
        body += struct.pack(">i", 0)  # forgotten topics
    if version >= 11:
        body += kafka_string("")  # rack id
    header = struct.pack(">hhi", 1, version, 42) + kafka_string("slips")
    frame = header + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", read_exactly(conn, 4))[0]
        response = read_exactly(conn, size)
    at = 4  # correlation id
    assert struct.unpack_from(">i", response, 0)[0] == 42
    at += 4  # throttle time
    if version >= 7:
        at += 2 + 4  # error code, session id
    (topics,) = struct.unpack_from(">i", response, at)
    at += 4
    assert topics == 1
    (name_length,) = struct.unpack_from(">h", response, at)
    at += 2 + name_length
    (partitions,) = struct.unpack_from(">i", response, at)
    at += 4
    assert partitions == 1
    (index, error) = struct.unpack_from(">ih", response, at)
    at += 4 + 2 + 8 + 8  # index, error, high watermark, last stable offset
    if version >= 5:
        at += 8  # log start offset
    (aborted,) = struct.unpack_from(">i", response, at)
    at += 4 + max(aborted, 0) * 16
    if version >= 11:
        at += 4  # preferred read replica
    (records_length,) = struct.unpack_from(">i", response, at)
    return error, records_length


def test_fetch_errors_carry_an_empty_record_set(broker):
    create(broker.bootstrap, "slips-fetch")
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(10):
        producer.produce("slips-fetch", value=f"v{i}".encode())
    assert producer.flush(30) == 0
    for version in (4, 7, 11):
        error, length = fetch_out_of_range(broker.port, "slips-fetch", version)
        assert error == 1, f"Fetch v{version}: OFFSET_OUT_OF_RANGE expected, got {error}"
        assert length == 0, f"Fetch v{version}: records length {length}; Kafka sends an empty set (0), not null (-1)"
    # kcat (librdkafka 2.0) started past the end resets to the end and reaches it.
    started = time.time()
    result = subprocess.run(["kcat", "-C", "-b", broker.bootstrap, "-t", "slips-fetch", "-p", "0", "-o", "1000", "-e",
                             "-X", "topic.auto.offset.reset=latest", "-q"], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    assert time.time() - started < 30, "kcat took too long to reach the end"


def test_list_offsets_by_timestamp_looks_inside_the_batch(broker):
    create(broker.bootstrap, "slips-times")
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 200, "batch.num.messages": 10})
    # Recent timestamps (old ones would be deleted by retention.ms), the largest second.
    base = int(time.time() * 1000) - 60_000
    peak = base + 3_600_000
    timestamps = [base, peak, base + 2_000, base + 3_000]
    for i, ts in enumerate(timestamps):
        producer.produce("slips-times", partition=0, value=f"r{i}".encode(), timestamp=ts)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "slips"})
    queries = [base - 1_000, base, base + 1, peak, peak + 1]
    answers = []
    for ts in queries:  # one at a time: one partition may appear once per ListOffsets request
        (tp,) = consumer.offsets_for_times([TopicPartition("slips-times", 0, ts)], timeout=10)
        assert tp.error is None, tp.error
        answers.append(tp.offset)
    consumer.close()
    # base+1: the first record at or after it is the second one (offset 1), inside the batch;
    # after the peak there is none (-1).
    assert answers == [0, 0, 1, 1, -1], f"got {answers}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    result = admin.list_offsets({TopicPartition("slips-times", 0): OffsetSpec.max_timestamp()})
    info = result[TopicPartition("slips-times", 0)].result(10)
    assert (info.offset, info.timestamp) == (1, peak), f"MAX_TIMESTAMP answered {info.offset} at {info.timestamp}"


class Reader:
    """Big-endian reads of a non-flexible response body."""

    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return value

    def string(self):
        length = self.take(">h")
        if length < 0:
            return None
        value = self.data[self.at:self.at + length].decode()
        self.at += length
        return value


def describe_configs_v3(port: int, resources, documentation: bool, synonyms: bool = False) -> dict:
    """DescribeConfigs v3 (the newest non-flexible version):
    {(type, name): {key: (type, doc)}}, or {key: (type, doc, synonyms)} with `synonyms`."""
    body = struct.pack(">i", len(resources))
    for resource_type, name, keys in resources:
        body += struct.pack(">b", resource_type) + kafka_string(name) + struct.pack(">i", len(keys))
        for key in keys:
            body += kafka_string(key)
    body += struct.pack(">??", synonyms, documentation)
    frame = struct.pack(">hhi", 32, 3, 7) + kafka_string("slips") + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", read_exactly(conn, 4))[0]
        reader = Reader(read_exactly(conn, size))
    assert reader.take(">i") == 7
    reader.take(">i")  # throttle time
    out = {}
    for _ in range(reader.take(">i")):
        error = reader.take(">h")
        reader.string()
        resource = (reader.take(">b"), reader.string())
        assert error == 0, (resource, error)
        configs = {}
        for _ in range(reader.take(">i")):
            key = reader.string()
            reader.string()  # value
            reader.take(">?")  # read only
            reader.take(">b")  # source
            reader.take(">?")  # sensitive
            found = []
            for _ in range(reader.take(">i")):  # synonyms: name, value, source
                found.append((reader.string(), reader.string(), reader.take(">b")))
            entry = (reader.take(">b"), reader.string())
            configs[key] = entry + (found,) if synonyms else entry
        out[resource] = configs
    return out


def test_describe_configs_reports_each_keys_type_and_documentation(broker):
    create(broker.bootstrap, "slips-configs")
    topic_keys = ["retention.bytes", "retention.ms", "cleanup.policy", "preallocate", "min.cleanable.dirty.ratio",
                  "message.timestamp.type", "segment.bytes"]
    broker_keys = ["advertised.listeners", "num.partitions", "log.retention.bytes", "auto.create.topics.enable"]
    resources = [(2, "slips-configs", topic_keys), (4, "1", broker_keys)]
    # Kafka's ConfigType: BOOLEAN 1, STRING 2, INT 3, LONG 5, DOUBLE 6, LIST 7.
    expected_topic = {"retention.bytes": 5, "retention.ms": 5, "cleanup.policy": 7, "preallocate": 1,
                      "min.cleanable.dirty.ratio": 6, "message.timestamp.type": 2, "segment.bytes": 3}
    expected_broker = {"advertised.listeners": 7, "num.partitions": 3, "log.retention.bytes": 5, "auto.create.topics.enable": 1}
    with_docs = describe_configs_v3(broker.port, resources, documentation=True)
    topic, node = with_docs[(2, "slips-configs")], with_docs[(4, "1")]
    assert {k: t for k, (t, _) in topic.items()} == expected_topic
    assert {k: t for k, (t, _) in node.items()} == expected_broker
    assert all(doc for _, doc in list(topic.values()) + list(node.values())), "documentation when asked"
    without = describe_configs_v3(broker.port, resources, documentation=False)
    assert all(doc is None for configs in without.values() for _, doc in configs.values()), "null documentation unless asked"


def uvarint(value: int) -> bytes:
    out = b""
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def read_uvarint(reader: Reader) -> int:
    shift = value = 0
    while True:
        byte = reader.take(">B")
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
        shift += 7


def compact_string(text: str) -> bytes:
    data = text.encode()
    return uvarint(len(data) + 1) + data


def list_offsets_flexible(port: int, topic: str, timestamps: list[int], version: int) -> list[tuple[int, int, int]]:
    """ListOffsets v8-v10 (flexible) for partition 0 at each timestamp, one request each:
    [(error, offset, timestamp)]."""
    answers = []
    for correlation, timestamp in enumerate(timestamps):
        body = struct.pack(">ib", -1, 0) + uvarint(2) + compact_string(topic) + uvarint(2)
        body += struct.pack(">iiq", 0, -1, timestamp) + uvarint(0)  # partition, current epoch, timestamp, tags
        body += uvarint(0)  # topic tags
        if version >= 10:
            body += struct.pack(">i", 30_000)  # timeout
        body += uvarint(0)
        frame = struct.pack(">hhi", 2, version, correlation) + kafka_string("slips") + uvarint(0) + body
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(struct.pack(">i", len(frame)) + frame)
            size = struct.unpack(">i", read_exactly(conn, 4))[0]
            reader = Reader(read_exactly(conn, size))
        assert reader.take(">i") == correlation
        read_uvarint(reader)  # header tags
        reader.take(">i")  # throttle
        assert read_uvarint(reader) == 2
        name_length = read_uvarint(reader) - 1
        reader.at += name_length
        assert read_uvarint(reader) == 2
        reader.take(">i")
        error, found_timestamp, offset, _ = reader.take(">h"), reader.take(">q"), reader.take(">q"), reader.take(">i")
        answers.append((error, offset, found_timestamp))
    return answers


def test_list_offsets_v8_to_v10_specials(broker):
    """-4 (earliest local, KIP-405) is the log start without tiered storage; -5 (latest tiered,
    KIP-1005) is -1 since nothing is tiered; -3 and timestamps as in older versions."""
    create(broker.bootstrap, "slips-v10")
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 100})
    base = int(time.time() * 1000) - 60_000
    for i, ts in enumerate([base, base + 50_000, base + 1_000]):
        producer.produce("slips-v10", partition=0, value=f"r{i}".encode(), timestamp=ts)
    assert producer.flush(30) == 0
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.delete_records([TopicPartition("slips-v10", 0, 1)])[TopicPartition("slips-v10", 0, 1)].result(10)
    for version in (8, 9, 10):
        answers = list_offsets_flexible(broker.port, "slips-v10", [-2, -4, -5, -3, -1, base + 1], version)
        assert [error for error, _, _ in answers] == [0] * 6, answers
        offsets = [offset for _, offset, _ in answers]
        assert offsets == [1, 1, -1, 1, 3, 1], f"v{version}: {offsets}"


def test_describe_configs_synonyms_in_precedence_order(broker_factory):
    """KIP-226: with include_synonyms each key lists where its value could come from, the
    effective one first: topic override (1), dynamic broker default (3), static broker
    config (4), default (5)."""
    broker = broker_factory({"log.retention.ms": "3600000"})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("slips-syn", num_partitions=1, replication_factor=1,
                                  config={"retention.ms": "60000"})])["slips-syn"].result(30)
    found = describe_configs_v3(broker.port, [(2, "slips-syn", ["retention.ms", "segment.bytes"]), (4, "1", ["log.retention.ms"])],
                                documentation=False, synonyms=True)
    topic = found[(2, "slips-syn")]
    assert topic["retention.ms"][2] == [("retention.ms", "60000", 1), ("log.retention.ms", "3600000", 4),
                                        ("log.retention.ms", "604800000", 5)]
    assert topic["segment.bytes"][2] == [("log.segment.bytes", "1073741824", 5)]
    assert found[(4, "1")]["log.retention.ms"][2] == [("log.retention.ms", "3600000", 4), ("log.retention.ms", "604800000", 5)]
    without = describe_configs_v3(broker.port, [(2, "slips-syn", ["retention.ms"])], documentation=False, synonyms=False)
    assert without[(2, "slips-syn")]["retention.ms"][0] == 5


def test_librdkafka_produces_v10_and_fetches_by_topic_id(broker):
    """Produce v10–11 and Fetch v13–17 (KIP-516 topic ids, KIP-903 ReplicaState, KIP-951
    leader hints) are advertised as Kafka 4.0 does; librdkafka then produces with v10 and
    fetches by topic id, and every record comes back once and in order."""
    import logging

    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = logging.getLogger("slips-rdkafka")
    logger.addHandler(Capture())
    logger.setLevel(logging.DEBUG)
    create(broker.bootstrap, "slips-ids", partitions=2)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "debug": "protocol"}, logger=logger)
    for i in range(200):
        producer.produce("slips-ids", value=b"%d" % i, partition=i % 2)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "slips-ids", "auto.offset.reset": "earliest",
                         "enable.partition.eof": True, "debug": "protocol"}, logger=logger)
    consumer.subscribe(["slips-ids"])
    got: dict[int, list[int]] = {0: [], 1: []}
    ended: set[int] = set()
    deadline = time.time() + 30
    while len(ended) < 2 and time.time() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            ended.add(message.partition())
            continue
        got[message.partition()].append(int(message.value()))
    consumer.close()
    assert got == {0: list(range(0, 200, 2)), 1: list(range(1, 200, 2))}
    sent = " ".join(lines)
    import re
    fetch_versions = {int(v) for v in re.findall(r"Sent FetchRequest \(v(\d+)", sent)}
    produce_versions = {int(v) for v in re.findall(r"Sent ProduceRequest \(v(\d+)", sent)}
    assert fetch_versions and min(fetch_versions) >= 13, f"librdkafka fetched with {fetch_versions}"
    assert produce_versions and min(produce_versions) >= 10, f"librdkafka produced with {produce_versions}"


def fetch_by_topic_id(port: int, topic_id: bytes, version: int) -> tuple[bytes, int, int]:
    """Sends a flexible Fetch (v13..v17) for partition 0 of `topic_id` at offset 0; returns the
    answered (topic id, error code, records length)."""
    body = b""
    if version < 15:
        body += struct.pack(">i", -1)  # replica id (v15+: the ReplicaState tagged field, absent)
    body += struct.pack(">iiibii", 0, 0, 1 << 20, 0, 0, -1)  # wait, min, max bytes, isolation, session, epoch
    body += uvarint(2) + topic_id + uvarint(2)
    body += struct.pack(">iiqiqi", 0, -1, 0, -1, -1, 1 << 20)  # partition, epoch, offset, last epoch, log start, max
    body += uvarint(0)  # partition tags
    body += uvarint(0)  # topic tags
    body += uvarint(1)  # no forgotten topics
    body += compact_string("")  # rack id
    body += uvarint(0)  # request tags
    frame = struct.pack(">hhi", 1, version, 77) + kafka_string("slips") + uvarint(0) + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", read_exactly(conn, 4))[0]
        reader = Reader(read_exactly(conn, size))
    assert reader.take(">i") == 77
    read_uvarint(reader)  # header tags
    for fmt in (">i", ">h", ">i"):  # throttle, error, session
        reader.take(fmt)
    assert read_uvarint(reader) == 2
    answered_id = reader.data[reader.at:reader.at + 16]
    reader.at += 16
    assert read_uvarint(reader) == 2
    reader.take(">i")  # partition
    error = reader.take(">h")
    for _ in range(3):  # high watermark, last stable offset, log start offset
        reader.take(">q")
    aborted = read_uvarint(reader)
    # As Kafka: null for read_uncommitted; an error partition carries the default (empty) list.
    assert aborted == (0 if error == 0 else 1), f"aborted transactions field {aborted}"
    reader.take(">i")  # preferred read replica
    records_length = read_uvarint(reader) - 1
    return answered_id, error, records_length


def test_fetch_v13_to_v17_by_topic_id(broker):
    """Fetch v13+ names the topic by id: a known id reads its records, an unknown one is
    answered UNKNOWN_TOPIC_ID (100) under that id with an empty record set."""
    admin = create(broker.bootstrap, "slips-by-id")
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(3):
        producer.produce("slips-by-id", value=b"r%d" % i)
    assert producer.flush(30) == 0
    from confluent_kafka import TopicCollection
    described = admin.describe_topics(TopicCollection(["slips-by-id"]))["slips-by-id"].result(30)
    topic_id = bytes.fromhex("%016x%016x" % (described.topic_id.get_most_significant_bits() & (2**64 - 1),
                                              described.topic_id.get_least_significant_bits() & (2**64 - 1)))
    unknown = bytes(range(1, 17))
    for version in (13, 14, 15, 16, 17):
        answered, error, length = fetch_by_topic_id(broker.port, topic_id, version)
        assert (answered, error) == (topic_id, 0) and length > 0, f"v{version}"
        answered, error, length = fetch_by_topic_id(broker.port, unknown, version)
        assert (answered, error, length) == (unknown, 100, 0), f"v{version}"
