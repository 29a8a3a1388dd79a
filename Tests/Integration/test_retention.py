"""Retention deletes whole old segments; the log start offset and ListOffsets earliest follow."""

import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def test_retention_ms_deletes_old_segments(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("short-lived", num_partitions=1, replication_factor=1,
                                  config={"retention.ms": "1000", "segment.bytes": "16384",
                                          "file.delete.delay.ms": "0"})])["short-lived"].result(30)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "batch.num.messages": 10})
    for i in range(2000):
        producer.produce("short-lived", value=b"x" * 200)
        if i % 100 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused"})
    tp = TopicPartition("short-lived", 0)
    low, high = consumer.get_watermark_offsets(tp, timeout=10)
    assert (low, high) == (0, 2000)
    time.sleep(1.5)
    # One more record makes the old segments' newest timestamp older than retention.ms... they
    # already are: the background check (every 500 ms) deletes every closed segment.
    deadline = time.time() + 15
    while time.time() < deadline:
        low, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
        if low > 0:
            break
        time.sleep(0.25)
    assert low > 0, "the log start offset moved"
    assert high == 2000
    earliest = consumer.offsets_for_times([TopicPartition("short-lived", 0, 0)], timeout=10)[0]
    assert earliest.offset >= low
    consumer.close()
