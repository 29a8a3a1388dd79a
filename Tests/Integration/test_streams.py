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


def test_fjord_streams_cli(broker):
    """`fjord streams`: create, append with expected versions (a stale one refused with exit 1
    and the actual version), read forwards/backwards/JSON, version; kcat sees the same records."""
    import json

    def fjord(*args, stdin=None, check=True):
        result = subprocess.run([FJORD_BIN_PATH(), "streams", *args, "-b", broker.bootstrap], input=stdin,
                                capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"fjord streams {args} exited {result.returncode}: {result.stderr}")
        return result

    fjord("create", "ledger", "--partitions", "2")
    assert fjord("append", "ledger", "acct-1", "-e", "no-stream", "-t", "Deposited", "100", "250").stdout.strip() == "1"
    assert fjord("append", "ledger", "acct-1", "-e", "1", "-t", "Withdrew", "--metadata", "by=atm", stdin="30\n").stdout.strip() == "2"
    stale = fjord("append", "ledger", "acct-1", "-e", "1", "-t", "Withdrew", "999", check=False)
    assert stale.returncode == 1
    assert "wrong expected version for stream 'acct-1': expected 1, actual version 2" in stale.stderr

    assert fjord("read", "ledger", "acct-1").stdout.splitlines() == ["0 Deposited 100", "1 Deposited 250", "2 Withdrew 30"]
    assert fjord("read", "ledger", "acct-1", "--backwards", "--limit", "2").stdout.splitlines() == ["2 Withdrew 30", "1 Deposited 250"]
    events = [json.loads(line) for line in fjord("read", "ledger", "acct-1", "--from", "2", "--json").stdout.splitlines()]
    assert [(e["revision"], e["type"], e["data"], e["metadata"]) for e in events] == [(2, "Withdrew", "30", {"by": "atm"})]
    assert fjord("version", "ledger", "acct-1").stdout.strip() == "2"
    assert fjord("version", "ledger", "acct-2").stdout.strip() == "-1"

    partition = events[0]["partition"]
    out = subprocess.run(["kcat", "-b", broker.bootstrap, "-C", "-t", "ledger", "-p", str(partition), "-o", "beginning", "-e", "-q",
                          "-f", "%k %s\n"], capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    assert out == ["acct-1 100", "acct-1 250", "acct-1 30"]
