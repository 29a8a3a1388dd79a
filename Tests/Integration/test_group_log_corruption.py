"""A damaged `__consumer_offsets` record never deletes the offsets or groups around it.

The broker is stopped cleanly, bytes of one offset commit's value and of one group's metadata
value are flipped in the segment file on disk (the batch CRC is recomputed, so the log layer
sees an intact batch whose record no longer decodes), and the broker is restarted on that log:
every other committed offset must read back, the damaged commit's previous offset stands, and
the group whose metadata record was damaged keeps its offsets.
"""

import signal
import struct
import time
import uuid

import crc32c
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TOPIC = "ledger"
PARTITIONS = 3


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint (Kafka's record fields): (value, next position)."""
    shift = 0
    raw = 0
    while True:
        byte = data[pos]
        pos += 1
        raw |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    return (raw >> 1) ^ -(raw & 1), pos


def records(segment: bytes):
    """Every record of every (uncompressed) batch: (batch position, key, value span or None)."""
    pos = 0
    while pos + 61 <= len(segment):
        (length,) = struct.unpack_from(">i", segment, pos + 8)
        end = pos + 12 + length
        (attributes,) = struct.unpack_from(">h", segment, pos + 21)
        assert attributes & 0x7 == 0, "group records are written uncompressed"
        (count,) = struct.unpack_from(">i", segment, pos + 57)
        at = pos + 61
        for _ in range(count):
            size, at = read_varint(segment, at)
            record_end = at + size
            at += 1  # attributes
            _, at = read_varint(segment, at)  # timestamp delta
            _, at = read_varint(segment, at)  # offset delta
            key_length, at = read_varint(segment, at)
            key = segment[at:at + key_length]
            at += key_length
            value_length, at = read_varint(segment, at)
            value = (at, at + value_length) if value_length >= 0 else None
            yield pos, key, value
            at = record_end
        pos = end


def offset_key(group: str, topic: str, partition: int) -> bytes:
    g, t = group.encode(), topic.encode()
    return struct.pack(">hh", 1, len(g)) + g + struct.pack(">h", len(t)) + t + struct.pack(">i", partition)


def group_key(group: str) -> bytes:
    g = group.encode()
    return struct.pack(">hh", 2, len(g)) + g


def damage_last(data: bytearray, key: bytes) -> None:
    """Flips every byte of the last non-tombstone value under `key` and re-seals its batch."""
    found = [(batch, value) for batch, k, value in records(bytes(data)) if k == key and value is not None]
    assert found, f"no record with key {key!r}"
    batch, (start, end) = found[-1]
    for i in range(start, end):
        data[i] ^= 0xFF
    (length,) = struct.unpack_from(">i", data, batch + 8)
    struct.pack_into(">I", data, batch + 17, crc32c.crc32c(bytes(data[batch + 21:batch + 12 + length])))


def commit(bootstrap: str, group: str, offsets: dict[int, int]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(TOPIC, p, o) for p, o in offsets.items()], asynchronous=False)
    consumer.close()


def committed(bootstrap: str, group: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    found = consumer.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=10)
    consumer.close()
    return {tp.partition: tp.offset for tp in found if tp.offset >= 0}


def test_damaged_group_records_are_skipped_not_taken_for_deletions(broker_factory):
    broker = broker_factory({"offsets.topic.num.partitions": "1", "group.initial.rebalance.delay.ms": "0",
                             "group.min.session.timeout.ms": "1000"})
    bootstrap = broker.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)])[TOPIC].result(30)
    run = uuid.uuid4().hex[:6]
    expected: dict[str, dict[int, int]] = {}
    for i in range(6):
        group = f"bystander-{run}-{i}"
        expected[group] = {p: 100 * i + p + 1 for p in range(PARTITIONS)}
        commit(bootstrap, group, expected[group])
        if i == 2:
            # The victim commits twice; its second commit is the record that gets damaged.
            victim = f"victim-{run}"
            commit(bootstrap, victim, {0: 50, 1: 51})
            commit(bootstrap, victim, {0: 70})
            expected[victim] = {0: 50, 1: 51}
    # A group that really ran the protocol: its metadata records are GroupMetadataValue.
    member_group = f"members-{run}"
    member = Consumer({"bootstrap.servers": bootstrap, "group.id": member_group, "enable.auto.commit": False,
                       "session.timeout.ms": 6000, "heartbeat.interval.ms": 300})
    member.subscribe([TOPIC])
    deadline = time.time() + 30
    while not member.assignment() and time.time() < deadline:
        member.poll(0.2)
    assert member.assignment(), "the member never got an assignment"
    member.commit(offsets=[TopicPartition(TOPIC, p, 7 + p) for p in range(PARTITIONS)], asynchronous=False)
    member.close()
    expected[member_group] = {p: 7 + p for p in range(PARTITIONS)}
    for group, offsets in expected.items():
        if group == victim:
            offsets = {**offsets, 0: 70}
        assert committed(bootstrap, group) == offsets, f"{group} before the restart"

    assert broker.stop(signal.SIGTERM) == 0
    segments = sorted((broker.data_dir / "__consumer_offsets-0").glob("*.log"))
    assert segments, "no __consumer_offsets segment"
    path = segments[-1]
    data = bytearray(path.read_bytes())
    damage_last(data, offset_key(victim, TOPIC, 0))
    damage_last(data, group_key(member_group))
    path.write_bytes(bytes(data))

    broker.start()
    for group, offsets in expected.items():
        assert committed(bootstrap, group) == offsets, f"{group} after the restart on the damaged log"
    log = broker.log_text()
    assert log.count("skipped an undecodable group record") == 2, log[-3000:]
    assert "truncated" not in log.split("closed cleanly")[-1], "the log layer saw an intact batch"
