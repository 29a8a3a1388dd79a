"""Stream topics (fjord.stream.versioning) through standard Kafka clients: the expected-version
header is enforced for kafka-python and confluent-kafka producers, and kcat reads stream topics
as ordinary topics."""

import subprocess
import time

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaProducer
from kafka.errors import KafkaError as PythonKafkaError

HEADER = "fjord-expected-version"


def create_stream_topic(bootstrap, name, partitions=1):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config={"fjord.stream.versioning": "true"})
    admin.create_topics([topic])[name].result(timeout=30)


def test_kafka_python_gets_the_refusal_for_a_stale_version(broker):
    create_stream_topic(broker.bootstrap, "accounts")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, retries=0, acks=1)
    # Version 0 and 1 of stream "acct-1".
    producer.send("accounts", key=b"acct-1", value=b"opened", headers=[(HEADER, b"no-stream")]).get(timeout=30)
    producer.send("accounts", key=b"acct-1", value=b"deposited", headers=[(HEADER, b"0")]).get(timeout=30)
    # A writer that still believes the stream is at version 0 is refused.
    with pytest.raises(PythonKafkaError) as refused:
        producer.send("accounts", key=b"acct-1", value=b"withdrew", headers=[(HEADER, b"0")]).get(timeout=30)
    assert "InvalidRecord" in type(refused.value).__name__ or "INVALID_RECORD" in str(refused.value).upper()
    # The right version goes through; "any" and no header always do.
    producer.send("accounts", key=b"acct-1", value=b"withdrew", headers=[(HEADER, b"1")]).get(timeout=30)
    producer.send("accounts", key=b"acct-1", value=b"noted", headers=[(HEADER, b"any")]).get(timeout=30)
    producer.send("accounts", key=b"acct-1", value=b"noted again").get(timeout=30)
    producer.close()

    # kcat reads the stream topic as an ordinary topic: four events of acct-1, in order.
    out = subprocess.run(["kcat", "-b", broker.bootstrap, "-C", "-t", "accounts", "-o", "beginning", "-e", "-q",
                          "-f", "%k %s %o\n"], capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    assert out == ["acct-1 opened 0", "acct-1 deposited 1", "acct-1 withdrew 2", "acct-1 noted 3", "acct-1 noted again 4"]


def test_confluent_kafka_producer_is_refused_invalid_record(broker):
    create_stream_topic(broker.bootstrap, "orders")
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": False, "retries": 0,
                         "linger.ms": 0})
    errors = []

    def report(err, msg):
        errors.append(err)

    producer.produce("orders", key=b"order-7", value=b"created", headers=[(HEADER, b"no-stream")], on_delivery=report)
    producer.flush(30)
    producer.produce("orders", key=b"order-7", value=b"created twice", headers=[(HEADER, b"no-stream")], on_delivery=report)
    producer.flush(30)
    assert errors[0] is None
    assert errors[1] is not None and errors[1].code() == 87  # INVALID_RECORD

    # (The broker's message names the stream and its actual version; librdkafka reports only
    # the code. The Swift EventStore tests check the message.)


def test_stream_versioning_cannot_be_compacted(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topic = NewTopic("bad-streams", num_partitions=1, replication_factor=1,
                     config={"fjord.stream.versioning": "true", "cleanup.policy": "compact"})
    with pytest.raises(KafkaException):
        admin.create_topics([topic])["bad-streams"].result(timeout=30)


def test_bank_example_runs_against_a_real_broker(broker, tmp_path):
    """Examples/Bank: commands, a refused overdraft, and the SQLite projection's answer."""
    import os
    example = os.path.abspath(os.path.join(os.path.dirname(FJORD_BIN_PATH()), "fjord-example-bank"))
    if not os.path.exists(example):
        pytest.skip(f"{example} is not built")
    out = subprocess.run([example, "demo"], cwd=tmp_path, env={**os.environ, "FJORD_BOOTSTRAP": broker.bootstrap},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("ok: open alice-") and "refused: insufficient funds: 700 cents" in lines
    assert lines[-1].endswith(": 700 cents")


def FJORD_BIN_PATH():
    from conftest import FJORD_BIN
    return FJORD_BIN


def test_versions_continue_after_sigkill(broker_factory):
    """Stream versions are rebuilt after a SIGKILL (checkpoint of the last roll + the log tail)."""
    broker = broker_factory({"log.segment.bytes": "4096"})
    create_stream_topic(broker.bootstrap, "killed")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, retries=0, acks=1)
    for i in range(300):
        stream = f"s{i % 3}"
        revision = i // 3
        expected = b"no-stream" if revision == 0 else str(revision - 1).encode()
        producer.send("killed", key=stream.encode(), value=str(i).encode(), headers=[(HEADER, expected)]).get(timeout=30)
    producer.close()
    broker.kill()
    broker.start()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, retries=0, acks=1)
    with pytest.raises(PythonKafkaError):
        producer.send("killed", key=b"s0", value=b"stale", headers=[(HEADER, b"98")]).get(timeout=30)
    producer.send("killed", key=b"s0", value=b"next", headers=[(HEADER, b"99")]).get(timeout=30)
    producer.send("killed", key=b"s2", value=b"next", headers=[(HEADER, b"99")]).get(timeout=30)
    producer.close()
    # Recovery replayed the log after the last checkpoint, and said so.
    assert "stream index: scanned" in broker.log_text()
