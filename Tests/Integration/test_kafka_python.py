"""kafka-python (pure Python, written independently of librdkafka) against fjord."""

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic


def test_producer_consumer_round_trip(broker):
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    futures = [producer.send("kp-round-trip", key=f"k{i}".encode(), value=f"v{i}".encode(),
                             headers=[("h", f"{i}".encode())]) for i in range(2000)]
    producer.flush(30)
    offsets = [f.get(timeout=30).offset for f in futures]
    assert sorted(offsets) == list(range(2000))
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=5000)
    consumer.assign([TopicPartition("kp-round-trip", 0)])
    records = list(consumer)
    consumer.close()
    assert [(r.key, r.value) for r in records] == [(f"k{i}".encode(), f"v{i}".encode()) for i in range(2000)]
    assert records[7].headers == [("h", b"7")]


def test_admin_create_list_delete(broker):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic("kp-admin", num_partitions=3, replication_factor=1)])
    assert "kp-admin" in admin.list_topics()
    described = admin.describe_topics(["kp-admin"])
    assert len(described[0]["partitions"]) == 3
    admin.delete_topics(["kp-admin"])
    assert "kp-admin" not in admin.list_topics()
    admin.close()
