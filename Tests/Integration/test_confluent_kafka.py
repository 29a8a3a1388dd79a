"""confluent-kafka (librdkafka) producers, consumers and AdminClient against fjord."""

import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic, ResourceType


def create_topic(bootstrap, name, partitions, config=None):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})])
    futures[name].result(timeout=30)
    return admin


def consume_all(bootstrap, topic, partitions, expected, timeout=60):
    """Assigns every partition from the beginning (no group) and reads `expected` records."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "enable.partition.eof": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = []
    deadline = time.time() + timeout
    while len(seen) < expected and time.time() < deadline:
        for message in consumer.consume(num_messages=5000, timeout=1.0):
            assert message.error() is None, message.error()
            seen.append((message.partition(), message.offset(), message.key(), message.value()))
    # Nothing more arrives.
    extra = consumer.consume(num_messages=100, timeout=1.0)
    consumer.close()
    return seen, extra


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_idempotent_producer_each_codec(broker, codec):
    topic = f"codec-{codec}"
    create_topic(broker.bootstrap, topic, 6)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "acks": "all",
                         "compression.codec": codec, "linger.ms": 5, "batch.num.messages": 2000})
    delivered, failed = [], []

    def report(err, msg):
        (failed if err else delivered).append((err, msg.partition(), msg.offset(), msg.key()))

    total = 50_000
    for i in range(total):
        while True:
            try:
                producer.produce(topic, key=f"key-{i}".encode(), value=f"value-{i}-{'v' * (i % 80)}".encode(), on_delivery=report)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    assert failed == [], failed[:5]
    assert len(delivered) == total
    assert {p for _, p, _, _ in delivered} == set(range(6))

    seen, extra = consume_all(broker.bootstrap, topic, 6, total)
    assert extra == []
    keys = [k for _, _, k, _ in seen]
    assert len(keys) == total and len(set(keys)) == total, "each message exactly once"
    for partition, offset, key, value in seen:
        i = int(key.decode().split("-")[1])
        assert value == f"value-{i}-{'v' * (i % 80)}".encode()
    # Offsets in each partition are dense and in order.
    by_partition = {}
    for partition, offset, _, _ in seen:
        by_partition.setdefault(partition, []).append(offset)
    for offsets in by_partition.values():
        assert offsets == list(range(len(offsets)))


def test_admin_client(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics([NewTopic("admin-a", num_partitions=2, replication_factor=1,
                                            config={"retention.ms": "3600000", "cleanup.policy": "compact"})])
    futures["admin-a"].result(timeout=30)
    # Creating it again fails with TOPIC_ALREADY_EXISTS.
    again = admin.create_topics([NewTopic("admin-a", num_partitions=1, replication_factor=1)])
    with pytest.raises(Exception) as info:
        again["admin-a"].result(timeout=30)
    assert info.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

    # An absurd partition count is refused before any log is created.
    huge = admin.create_topics([NewTopic("admin-huge", num_partitions=50_000, replication_factor=1)])
    with pytest.raises(Exception) as info:
        huge["admin-huge"].result(timeout=30)
    assert info.value.args[0].code() == KafkaError.INVALID_PARTITIONS

    # validate_only creates nothing.
    admin.create_topics([NewTopic("admin-validate", num_partitions=3, replication_factor=1)], validate_only=True)["admin-validate"].result(30)
    assert "admin-validate" not in admin.list_topics(timeout=10).topics

    metadata = admin.list_topics(timeout=10)
    assert len(metadata.topics["admin-a"].partitions) == 2

    resource = ConfigResource(ResourceType.TOPIC, "admin-a")
    configs = admin.describe_configs([resource])[resource].result(timeout=30)
    assert configs["retention.ms"].value == "3600000"
    assert configs["cleanup.policy"].value == "compact"
    assert configs["segment.bytes"].value == "1073741824"

    # incremental_alter_configs: set one key, leave the rest.
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    resource = ConfigResource(ResourceType.TOPIC, "admin-a", incremental_configs=[
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)
    resource = ConfigResource(ResourceType.TOPIC, "admin-a")
    configs = admin.describe_configs([resource])[resource].result(timeout=30)
    assert configs["retention.ms"].value == "7200000"
    assert configs["cleanup.policy"].value == "compact"

    # An unknown config is refused with INVALID_CONFIG.
    bad = ConfigResource(ResourceType.TOPIC, "admin-a", incremental_configs=[
        ConfigEntry("no.such.config", "1", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(Exception) as info:
        admin.incremental_alter_configs([bad])[bad].result(timeout=30)
    assert info.value.args[0].code() == KafkaError.INVALID_CONFIG

    admin.create_partitions([NewPartitions("admin-a", 5)])["admin-a"].result(timeout=30)
    assert len(admin.list_topics(timeout=10).topics["admin-a"].partitions) == 5

    admin.delete_topics(["admin-a"])["admin-a"].result(timeout=30)
    assert "admin-a" not in admin.list_topics(timeout=10).topics
