"""KIP-848 (ConsumerGroupHeartbeat) at the protocol level: no client in the test virtualenv speaks
it yet, so these frames are encoded here, following the schemas."""

import socket
import struct
import uuid

from confluent_kafka.admin import AdminClient, NewTopic

FENCED_MEMBER_EPOCH = 110
UNKNOWN_MEMBER_ID = 25


def uvarint(n):
    out = b""
    while n >= 0x80:
        out += bytes([(n & 0x7F) | 0x80])
        n >>= 7
    return out + bytes([n])


def cstr(s):
    if s is None:
        return uvarint(0)
    b = s.encode()
    return uvarint(len(b) + 1) + b


def carray(items, encode):
    if items is None:
        return uvarint(0)
    return uvarint(len(items) + 1) + b"".join(encode(i) for i in items)


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int8(self): return struct.unpack(">b", self.take(1))[0]
    def int16(self): return struct.unpack(">h", self.take(2))[0]
    def int32(self): return struct.unpack(">i", self.take(4))[0]

    def uvarint(self):
        shift = result = 0
        while True:
            b = self.take(1)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def cstr(self):
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1).decode()

    def tags(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


def heartbeat(sock, group, member, epoch, topics=None, owned=None, correlation=[0]):
    correlation[0] += 1
    body = cstr(group) + cstr(member) + struct.pack(">i", epoch) + cstr(None) + cstr(None) + struct.pack(">i", 30000)
    body += carray(topics, cstr) + cstr(None) + cstr(None)
    body += carray(owned, lambda tp: tp[0] + carray(tp[1], lambda p: struct.pack(">i", p)) + uvarint(0))
    body += uvarint(0)
    header = struct.pack(">hhi", 68, 1, correlation[0]) + struct.pack(">h", 4) + b"test" + uvarint(0)
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))[0]
    r = Reader(sock.recv(size, socket.MSG_WAITALL))
    assert r.int32() == correlation[0]
    r.tags()
    r.int32()  # throttle
    error = r.int16()
    message = r.cstr()
    member_id = r.cstr()
    member_epoch = r.int32()
    r.int32()  # heartbeat interval
    assignment = None
    if r.int8() >= 0:
        assignment = []
        for _ in range(r.uvarint() - 1):
            topic_id = r.take(16)
            partitions = [r.int32() for _ in range(r.uvarint() - 1)]
            r.tags()
            assignment.append((topic_id, partitions))
        r.tags()
    return {"error": error, "message": message, "member": member_id, "epoch": member_epoch, "assignment": assignment}


def partitions(response):
    return sorted(p for _, ps in (response["assignment"] or []) for p in ps)


def test_two_members_converge_without_overlap(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("kip848", num_partitions=4, replication_factor=1)])["kip848"].result(30)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
        ra = heartbeat(sock, "g848", a, 0, topics=["kip848"])
        assert ra["error"] == 0 and ra["epoch"] == 1 and partitions(ra) == [0, 1, 2, 3]
        owned_a = ra["assignment"]

        rb = heartbeat(sock, "g848", b, 0, topics=["kip848"])
        assert rb["error"] == 0 and partitions(rb) == [], "nothing is free while A still owns everything"
        epoch_b = rb["epoch"]

        # A learns its smaller target; it keeps two partitions and must release two.
        ra = heartbeat(sock, "g848", a, 1, owned=owned_a)
        assert ra["epoch"] == 1, "A's epoch waits until it has released the revoked partitions"
        kept = ra["assignment"]
        assert len(partitions(ra)) == 2
        ra = heartbeat(sock, "g848", a, 1, owned=kept)
        assert ra["epoch"] == 2

        rb = heartbeat(sock, "g848", b, epoch_b, owned=[])
        assert sorted(partitions(rb) + partitions(ra)) == [0, 1, 2, 3], "disjoint and complete"
        assert set(partitions(rb)).isdisjoint(partitions(ra))

        # A stale epoch is fenced; an unknown member is refused.
        assert heartbeat(sock, "g848", a, 1)["error"] == FENCED_MEMBER_EPOCH
        assert heartbeat(sock, "g848", "nobody", 3)["error"] == UNKNOWN_MEMBER_ID

        # B leaves: A gets everything back.
        assert heartbeat(sock, "g848", b, -1)["epoch"] == -1
        ra = heartbeat(sock, "g848", a, 2, owned=kept)
        assert partitions(ra) == [0, 1, 2, 3]


def test_group_state_survives_a_broker_crash(broker):
    """The group's epochs, members and assignments are in __consumer_offsets: after a SIGKILL and
    restart the members heartbeat on with their epochs and keep their partitions (no rebalance)."""
    import signal

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("durable848", num_partitions=4, replication_factor=1)])["durable848"].result(30)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
        ra = heartbeat(sock, "d848", a, 0, topics=["durable848"])
        rb = heartbeat(sock, "d848", b, 0, topics=["durable848"])
        ra = heartbeat(sock, "d848", a, ra["epoch"], owned=ra["assignment"])
        ra = heartbeat(sock, "d848", a, ra["epoch"], owned=ra["assignment"])
        rb = heartbeat(sock, "d848", b, rb["epoch"], owned=[])
        assert ra["epoch"] == rb["epoch"] == 2
        held_a, held_b = ra["assignment"], rb["assignment"]
        assert sorted(partitions(ra) + partitions(rb)) == [0, 1, 2, 3]

    broker.restart(signal.SIGKILL)

    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
        after_a = heartbeat(sock, "d848", a, 2, owned=held_a)
        after_b = heartbeat(sock, "d848", b, 2, owned=held_b)
        assert after_a["error"] == 0 and after_b["error"] == 0, "the members are still known"
        assert after_a["epoch"] == 2 and after_b["epoch"] == 2, "no new group epoch: nothing rebalanced"
        assert partitions(after_a) == partitions(ra) and partitions(after_b) == partitions(rb)
        # The restored group goes on as before: a leaving member's partitions go to the other.
        assert heartbeat(sock, "d848", b, -1)["epoch"] == -1
        assert partitions(heartbeat(sock, "d848", a, 2, owned=held_a)) == [0, 1, 2, 3]


def test_failed_heartbeats_leave_no_group_and_a_classic_group_can_take_an_emptied_id(broker):
    """A heartbeat refused before anyone joined creates no group; once a KIP-848 group's last
    member leaves, a classic consumer (kafka-python) can use the id and its commits stick."""
    from kafka import KafkaConsumer, KafkaProducer

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("handover", num_partitions=1, replication_factor=1)])["handover"].result(30)
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
        assert heartbeat(sock, "ghost", str(uuid.uuid4()), 3)["error"] == UNKNOWN_MEMBER_ID
        member = str(uuid.uuid4())
        joined = heartbeat(sock, "handover-group", member, 0, topics=["handover"])
        assert joined["error"] == 0
        assert heartbeat(sock, "handover-group", member, -1)["epoch"] == -1
    import json
    import subprocess
    from conftest import FJORD_BIN
    listing = subprocess.run([FJORD_BIN, "groups", "list", "-b", broker.bootstrap], capture_output=True, text=True,
                             timeout=60, check=True).stdout.splitlines()
    listed = {line.split("\t")[0]: line.split("\t") for line in listing}
    assert "ghost" not in listed
    assert listed["handover-group"][1:] == ["Empty", "consumer", "consumer"], "an emptied KIP-848 group, until taken over"
    # The emptied group keeps committed offsets (so it is not expired away before the handover).
    subprocess.run([FJORD_BIN, "groups", "reset-offsets", "handover-group", "--topic", "handover", "--to-earliest", "--execute",
                    "-b", broker.bootstrap], capture_output=True, text=True, timeout=60, check=True)

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i in range(10):
        producer.send("handover", value=b"%d" % i)
    producer.flush()
    consumer = KafkaConsumer("handover", bootstrap_servers=broker.bootstrap, group_id="handover-group",
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=15000)
    seen = 0
    for _ in consumer:
        seen += 1
        if seen == 10:
            break
    consumer.commit()
    consumer.close()
    described = json.loads(subprocess.run([FJORD_BIN, "groups", "describe", "handover-group", "--json", "-b", broker.bootstrap],
                                          capture_output=True, text=True, timeout=60, check=True).stdout)
    assert [p["current_offset"] for p in described["partitions"]] == [10], "the classic group's commit stuck"
