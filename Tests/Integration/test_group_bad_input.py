"""Consumer-group protocol errors and abuse, over raw frames: the right error codes, bounded
memory, and other groups unaffected."""

import socket
import struct
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

UNKNOWN_TOPIC_OR_PARTITION = 3
ILLEGAL_GENERATION = 22
UNKNOWN_MEMBER_ID = 25
MEMBER_ID_REQUIRED = 79
GROUP_MAX_SIZE_REACHED = 81


def string(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def frame(api_key, version, correlation_id, body) -> bytes:
    payload = struct.pack(">hhi", api_key, version, correlation_id) + string("raw-test") + body
    return struct.pack(">i", len(payload)) + payload


def call(sock, api_key, version, body, correlation_id=1) -> bytes:
    sock.sendall(frame(api_key, version, correlation_id, body))
    size = struct.unpack(">i", recv(sock, 4))[0]
    response = recv(sock, size)
    assert struct.unpack(">i", response[:4])[0] == correlation_id
    return response[4:]


def recv(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def join_v4(sock, group, member_id="", metadata=b"\x00\x01"):
    body = string(group) + struct.pack(">ii", 10000, 10000) + string(member_id) + string("consumer")
    body += struct.pack(">i", 1) + string("range") + struct.pack(">i", len(metadata)) + metadata
    response = call(sock, 11, 4, body)
    error = struct.unpack(">h", response[4:6])[0]
    generation = struct.unpack(">i", response[6:10])[0]
    offset = 10
    for _ in range(2):  # protocol name, leader
        length = struct.unpack(">h", response[offset:offset + 2])[0]
        offset += 2 + max(length, 0)
    length = struct.unpack(">h", response[offset:offset + 2])[0]
    member = response[offset + 2:offset + 2 + length].decode()
    return error, generation, member


def heartbeat_v0(sock, group, generation, member):
    response = call(sock, 12, 0, string(group) + struct.pack(">i", generation) + string(member))
    return struct.unpack(">h", response[:2])[0]


def test_protocol_errors(broker_factory):
    broker = broker_factory({"group.initial.rebalance.delay.ms": "0"})
    with socket.create_connection(("127.0.0.1", broker.port), timeout=30) as sock:
        error, _, member = join_v4(sock, "errors")
        assert error == MEMBER_ID_REQUIRED and member
        error, generation, joined = join_v4(sock, "errors", member)
        assert (error, joined) == (0, member) and generation == 1
        assert heartbeat_v0(sock, "errors", generation, member) == 0
        assert heartbeat_v0(sock, "errors", generation + 5, member) == ILLEGAL_GENERATION
        assert heartbeat_v0(sock, "errors", generation, "nobody") == UNKNOWN_MEMBER_ID
        assert heartbeat_v0(sock, "no-such-group", 1, member) == UNKNOWN_MEMBER_ID
    # A commit for a partition that does not exist.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("exists", num_partitions=1, replication_factor=1)])["exists"].result(30)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "committer"})
    try:
        consumer.commit(offsets=[TopicPartition("exists", 0, 5), TopicPartition("exists", 7, 5)], asynchronous=False)
        raise AssertionError("the commit to a missing partition must fail")
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    # The valid partition's offset was committed all the same.
    assert consumer.committed([TopicPartition("exists", 0)], timeout=10)[0].offset == 5
    consumer.close()


def test_join_storm_is_bounded_and_other_groups_work(broker_factory):
    broker = broker_factory({"group.initial.rebalance.delay.ms": "0", "group.max.size": "100"})
    start_rss = broker.rss_kib()
    codes = []
    with socket.create_connection(("127.0.0.1", broker.port), timeout=30) as sock:
        for i in range(500):
            codes.append(join_v4(sock, "storm", metadata=b"\x00" * 1024)[0])
    assert codes.count(MEMBER_ID_REQUIRED) == 100
    assert codes.count(GROUP_MAX_SIZE_REACHED) == 400
    assert broker.rss_kib() - start_rss < 64 * 1024, "memory stays bounded"
    # Another group forms normally meanwhile.
    with socket.create_connection(("127.0.0.1", broker.port), timeout=30) as sock:
        _, _, member = join_v4(sock, "calm")
        error, generation, _ = join_v4(sock, "calm", member)
        assert (error, generation) == (0, 1)
