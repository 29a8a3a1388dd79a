"""Hostile and broken input: each bad frame costs only its own connection (or gets an error
code); the broker keeps serving everyone else with bounded memory."""

import json
import random
import socket
import struct
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.record.default_records import DefaultRecordBatchBuilder

FIXTURES = Path(__file__).resolve().parents[1] / "FjordProtocolTests" / "Fixtures"


def fixture_frames():
    frames = []
    for source in ("kafka-python", "librdkafka"):
        manifest = json.loads((FIXTURES / source / "manifest.json").read_text())
        for entry in manifest:
            if entry["kind"] == "request":
                frames.append((FIXTURES / source / entry["file"]).read_bytes())
    return frames


def mutate(frame: bytes, rng: random.Random) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        if not data:
            data = bytearray(rng.randbytes(8))
        op = rng.randrange(6)
        pos = rng.randrange(len(data))
        if op == 0:
            data[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[pos:pos + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x01\x00\x00"])
        elif op == 2:
            del data[pos:]
        elif op == 3:
            data[pos:pos] = b"\xff" * rng.randint(1, 12)
        elif op == 4:
            data[pos:pos] = rng.randbytes(rng.randint(1, 16))
        else:
            del data[pos:pos + rng.randint(1, 16)]
    return bytes(data)


def send_frames(port, frames, rng, deadline):
    sock = None
    sent = 0
    for frame in frames:
        if time.time() > deadline:
            break
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                sock.settimeout(0.05)
            size = len(frame)
            if rng.random() < 0.02:
                size = rng.choice([-1, 2**31 - 1, 200 * 1024 * 1024, size + 1000])
            sock.sendall(struct.pack(">i", size) + frame)
            sent += 1
            try:
                while sock.recv(65536):
                    pass
            except socket.timeout:
                pass
        except OSError:
            if sock is not None:
                sock.close()
            sock = None
    if sock is not None:
        sock.close()
    return sent


def test_fuzzed_frames_over_50_connections(broker):
    frames = fixture_frames()
    assert len(frames) > 100
    rng = random.Random(2026)
    work = []
    for i in range(20_000):
        if i % 10 == 0:
            work.append(struct.pack(">hhi", rng.randrange(-5, 80), rng.randrange(-2, 20), i) + rng.randbytes(rng.randrange(0, 64)))
        else:
            work.append(mutate(rng.choice(frames), rng))
    chunks = [work[i::50] for i in range(50)]
    deadline = time.time() + 120
    threads = [threading.Thread(target=send_frames, args=(broker.port, chunk, random.Random(i), deadline)) for i, chunk in enumerate(chunks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=150)
    assert broker.process.poll() is None, "the broker survived"
    assert broker.rss_kib() < 512 * 1024, f"memory stays bounded: {broker.rss_kib()} KiB"

    # A normal client still produces and consumes.
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(100):
        producer.produce("after-fuzz", value=f"ok-{i}".encode())
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused"})
    consumer.assign([TopicPartition("after-fuzz", 0, 0)])
    got = []
    deadline = time.time() + 30
    while len(got) < 100 and time.time() < deadline:
        got += [m.value() for m in consumer.consume(100, timeout=1.0) if m.error() is None]
    consumer.close()
    assert got == [f"ok-{i}".encode() for i in range(100)]


def produce_v3_frame(topic: str, batch: bytes, correlation_id: int = 7) -> bytes:
    name = topic.encode()
    body = struct.pack(">hhi", -1, 1, 5000)  # transactional id null, acks=1, timeout
    body += struct.pack(">i", 1) + struct.pack(">h", len(name)) + name
    body += struct.pack(">i", 1) + struct.pack(">i", 0) + struct.pack(">i", len(batch)) + batch
    header = struct.pack(">hhi", 0, 3, correlation_id) + struct.pack(">h", 4) + b"test"
    return header + body


def produce_v3_error(port, frame) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", recv_exactly(sock, 4))[0]
        response = recv_exactly(sock, size)
    # correlation id, topics[1]: name, partitions[1]: index, error_code ...
    name_length = struct.unpack(">h", response[8:10])[0]
    offset = 10 + name_length + 4 + 4
    return struct.unpack(">h", response[offset:offset + 2])[0]


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def test_bad_crc_gets_corrupt_message_and_connection_survives(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("crc", num_partitions=1, replication_factor=1)])["crc"].result(30)
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i in range(5):
        builder.append(i, timestamp=1_700_000_000_000 + i, key=b"k", value=b"v" * 20, headers=[])
    batch = bytearray(builder.build())
    assert produce_v3_error(broker.port, produce_v3_frame("crc", bytes(batch))) == 0
    batch[-3] ^= 0xFF
    assert produce_v3_error(broker.port, produce_v3_frame("crc", bytes(batch))) == 2  # CORRUPT_MESSAGE
    batch[-3] ^= 0xFF
    batch[16] = 1  # magic 1 inside a v3 request
    assert produce_v3_error(broker.port, produce_v3_frame("crc", bytes(batch))) == 2


def test_oversized_size_prefix_closes_only_that_connection(broker):
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as sock:
        sock.sendall(struct.pack(">i", 200 * 1024 * 1024))
        sock.settimeout(5)
        assert sock.recv(10) == b"", "refused from the size prefix alone"
    assert "exceeds socket.request.max.bytes" in broker.log_text()
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as sock:
        sock.sendall(struct.pack(">i", -5))
        sock.settimeout(5)
        assert sock.recv(10) == b""
    # Other clients are unaffected.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert admin.list_topics(timeout=10) is not None


def test_forged_batches_and_configs_are_refused_and_the_broker_restarts(broker):
    """Inputs that once could trap the broker: a base offset near Int64.max (not covered by the
    CRC), records for the internal __consumer_offsets, a negative producer sequence (written into
    the producer snapshot and read back at start), sizes past Int32.max, a replica assignment
    naming the broker 40,000 times. Each is refused; the broker keeps serving and restarts."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("forged", num_partitions=1, replication_factor=1,
                                  config={"cleanup.policy": "compact"})])["forged"].result(30)

    def batch(producer_id=-1, epoch=-1, sequence=-1, records=5):
        builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=producer_id,
                                            producer_epoch=epoch, base_sequence=sequence, batch_size=1 << 20)
        for i in range(records):
            builder.append(i, timestamp=1_700_000_000_000 + i, key=b"k%d" % i, value=b"v", headers=[])
        return bytearray(builder.build())

    high = batch()
    high[0:8] = struct.pack(">q", 2**63 - 1)  # base offset: not covered by the CRC
    assert produce_v3_error(broker.port, produce_v3_frame("forged", bytes(high))) == 2  # CORRUPT_MESSAGE
    assert produce_v3_error(broker.port, produce_v3_frame("__consumer_offsets", bytes(batch()))) == 17  # INVALID_TOPIC_EXCEPTION
    assert produce_v3_error(broker.port, produce_v3_frame("forged", bytes(batch(producer_id=5, epoch=0, sequence=-2**31)))) == 87
    assert produce_v3_error(broker.port, produce_v3_frame("forged", bytes(batch(producer_id=6, epoch=0, sequence=0)))) == 0

    from confluent_kafka.admin import ConfigResource
    from confluent_kafka import KafkaException
    import pytest
    resource = ConfigResource("topic", "forged", set_config={"max.message.bytes": str(2**63 - 1)})
    with pytest.raises(KafkaException):
        admin.alter_configs([resource])[resource].result(30)
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic as PythonNewTopic
    from kafka.errors import KafkaError as PythonKafkaError
    with pytest.raises(PythonKafkaError):
        KafkaAdminClient(bootstrap_servers=broker.bootstrap).create_topics(
            [PythonNewTopic("many-replicas", num_partitions=-1, replication_factor=-1, replica_assignments={0: [1] * 40_000})],
            raise_errors=True)

    assert broker.process.poll() is None, "the broker is still running"
    broker.restart()  # the producer snapshot written at shutdown is read back
    assert produce_v3_error(broker.port, produce_v3_frame("forged", bytes(batch(producer_id=6, epoch=0, sequence=5)))) == 0
