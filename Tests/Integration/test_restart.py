"""Restarts: clean (SIGTERM) keeps everything; SIGKILL keeps what was acknowledged durably."""

import signal

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def produce(bootstrap, topic, count, start=0):
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    acked = []
    for i in range(start, start + count):
        producer.produce(topic, key=str(i).encode(), value=f"value-{i}".encode(),
                         on_delivery=lambda err, msg: acked.append((msg.partition(), msg.offset(), msg.key())) if err is None else None)
        if i % 500 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    return acked


def read_all(bootstrap, topic, partitions):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = {}
    empty = 0
    while empty < 3:
        messages = consumer.consume(num_messages=5000, timeout=1.0)
        if not messages:
            empty += 1
        for m in messages:
            assert m.error() is None
            out[(m.partition(), m.offset())] = (m.key(), m.value())
    consumer.close()
    return out


def test_sigterm_restart_keeps_everything(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("restart", num_partitions=3, replication_factor=1)])["restart"].result(30)
    acked = produce(broker.bootstrap, "restart", 3000)
    before = read_all(broker.bootstrap, "restart", 3)
    assert len(before) == 3000
    assert broker.stop(signal.SIGTERM) == 0
    assert "closed cleanly" in broker.log_text()
    broker.start()
    after = read_all(broker.bootstrap, "restart", 3)
    assert after == before, "same records at the same offsets"
    # Producing continues after the last offsets.
    ends = {}
    for partition, offset in before:
        ends[partition] = max(ends.get(partition, -1), offset)
    more = produce(broker.bootstrap, "restart", 30, start=3000)
    assert all(offset > ends[partition] for partition, offset, _ in more)
    assert len(read_all(broker.bootstrap, "restart", 3)) == 3030


def test_sigkill_keeps_acknowledged_records(broker_factory):
    broker = broker_factory({"log.flush.interval.messages": "1"})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("durable", num_partitions=2, replication_factor=1,
                                  config={"flush.messages": "1"})])["durable"].result(30)
    acked = produce(broker.bootstrap, "durable", 2000)
    broker.kill()
    broker.start()
    stored = read_all(broker.bootstrap, "durable", 2)
    for partition, offset, key in acked:
        assert stored.get((partition, offset), (None,))[0] == key
