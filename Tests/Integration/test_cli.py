"""The `fjord` CLI (produce, consume, topics, groups, bench) against a real broker process,
and the Swift client (through the CLI) interoperating with confluent-kafka (librdkafka)."""

import json
import subprocess
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import FJORD_BIN


def fjord(broker, *args, stdin=None, timeout=60, check=True):
    """Runs `fjord <args> -b <broker>`; returns the CompletedProcess."""
    command = [FJORD_BIN, *args]
    if broker is not None:
        command += ["-b", broker.bootstrap]
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{command} exited {result.returncode}: {result.stderr}")
    return result


def test_produce_consume_round_trip_text_and_json(broker):
    fjord(broker, "topics", "create", "lines", "--partitions", "3")
    lines = "".join(f"key-{i}:value {i}\n" for i in range(300))
    fjord(broker, "produce", "lines", "-K", ":", "-H", "source=cli", "-H", "run=1", stdin=lines)

    text = fjord(broker, "consume", "lines", "--from-beginning", "-e", "-f", "%k|%s|%h|%p\n").stdout.splitlines()
    assert len(text) == 300
    parsed = {line.split("|")[0]: line.split("|") for line in text}
    assert parsed["key-7"][1] == "value 7" and parsed["key-7"][2] == "source=cli,run=1"

    records = [json.loads(line) for line in fjord(broker, "consume", "lines", "--from-beginning", "-e", "--json").stdout.splitlines()]
    assert len(records) == 300
    by_key = {r["key"]: r for r in records}
    assert by_key["key-42"]["value"] == "value 42"
    assert by_key["key-42"]["headers"] == [{"key": "source", "value": "cli"}, {"key": "run", "value": "1"}]
    # Offsets per partition are 0..n-1, and each key went to one partition only.
    for partition in range(3):
        offsets = sorted(r["offset"] for r in records if r["partition"] == partition)
        assert offsets == list(range(len(offsets)))

    # --offset, --partition and --max-messages.
    first = [r for r in records if r["partition"] == 0]
    out = fjord(broker, "consume", "lines", "-p", "0", "-o", "1", "-c", "2", "--json").stdout.splitlines()
    assert [json.loads(line)["offset"] for line in out] == [1, 2][: len(first) - 1]


def test_json_base64_for_binary_values(broker):
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    producer.produce("binary", key=b"\xff\x00k", value=b"\x80\x81", headers=[("h", b"\xfe")], partition=0)
    producer.flush(10)
    record = json.loads(fjord(broker, "consume", "binary", "--from-beginning", "-e", "--json").stdout.splitlines()[0])
    assert record["key_base64"] == "/wBr" and record["value_base64"] == "gIE="
    assert record["headers"] == [{"key": "h", "value_base64": "/g=="}]


def test_topics_create_describe_alter_delete(broker):
    out = fjord(broker, "topics", "create", "admin-t", "--partitions", "4", "--replication-factor", "1",
                "--config", "retention.ms=3600000").stdout
    assert "Created topic admin-t" in out
    again = fjord(broker, "topics", "create", "admin-t", "--partitions", "4", check=False)
    assert again.returncode == 1 and "TOPIC_ALREADY_EXISTS" in again.stderr
    assert fjord(broker, "topics", "create", "admin-t", "--if-not-exists").returncode == 0

    fjord(broker, "produce", "admin-t", "-p", "2", stdin="a\nb\nc\n")
    described = json.loads(fjord(broker, "topics", "describe", "admin-t", "--json").stdout)[0]
    assert len(described["partitions"]) == 4
    p2 = described["partitions"][2]
    assert p2["leader"] == 1 and p2["replicas"] == [1] and p2["isr"] == [1]
    assert p2["log_start_offset"] == 0 and p2["log_end_offset"] == 3
    assert described["configs"]["retention.ms"] == "3600000"
    text = fjord(broker, "topics", "describe", "admin-t").stdout
    assert "Partition: 2\tLeader: 1" in text and "LogEndOffset: 3" in text

    fjord(broker, "topics", "alter-config", "admin-t", "--set", "retention.ms=7200000", "--set", "cleanup.policy=compact")
    configs = json.loads(fjord(broker, "topics", "describe", "admin-t", "--json").stdout)[0]["configs"]
    assert configs["retention.ms"] == "7200000" and configs["cleanup.policy"] == "compact"
    fjord(broker, "topics", "alter-config", "admin-t", "--delete", "cleanup.policy")
    configs = json.loads(fjord(broker, "topics", "describe", "admin-t", "--json").stdout)[0]["configs"]
    assert configs["cleanup.policy"] == "delete"

    fjord(broker, "topics", "add-partitions", "admin-t", "--total", "6")
    assert len(json.loads(fjord(broker, "topics", "describe", "admin-t", "--json").stdout)[0]["partitions"]) == 6
    assert "admin-t" in fjord(broker, "topics", "list").stdout.split()
    fjord(broker, "topics", "delete", "admin-t")
    deadline = time.time() + 10
    while "admin-t" in fjord(broker, "topics", "list").stdout.split() and time.time() < deadline:
        time.sleep(0.2)
    assert "admin-t" not in fjord(broker, "topics", "list").stdout.split()


def test_group_describe_lag_and_reset_offsets(broker):
    fjord(broker, "topics", "create", "lagged", "--partitions", "2")
    fjord(broker, "produce", "lagged", "-p", "0", stdin="".join(f"{i}\n" for i in range(10)))
    fjord(broker, "produce", "lagged", "-p", "1", stdin="".join(f"{i}\n" for i in range(4)))
    # Read 7 of 14 records as group "readers", committing what was printed.
    out = fjord(broker, "consume", "lagged", "-G", "readers", "--from-beginning", "-c", "7").stdout.splitlines()
    assert len(out) == 7
    described = json.loads(fjord(broker, "groups", "describe", "readers", "--json").stdout)
    assert described["state"] == "Empty" and described["members"] == []
    rows = {p["partition"]: p for p in described["partitions"]}
    assert sum(p["current_offset"] for p in rows.values()) == 7
    assert {p: rows[p]["log_end_offset"] for p in rows} == {0: 10, 1: 4}
    assert sum(p["lag"] for p in rows.values()) == 7
    for p in rows.values():
        assert p["lag"] == p["log_end_offset"] - p["current_offset"]
    table = fjord(broker, "groups", "describe", "readers").stdout
    assert "CURRENT-OFFSET" in table and "LOG-END-OFFSET" in table and "LAG" in table
    assert "readers" in fjord(broker, "groups", "list").stdout

    before = {p: rows[p]["current_offset"] for p in rows}
    plan = fjord(broker, "groups", "reset-offsets", "readers", "--topic", "lagged", "--to-earliest", "--dry-run").stdout
    assert "NEW-OFFSET" in plan and "Dry run" in plan
    after_dry = json.loads(fjord(broker, "groups", "describe", "readers", "--json").stdout)
    assert {p["partition"]: p["current_offset"] for p in after_dry["partitions"]} == before

    fjord(broker, "groups", "reset-offsets", "readers", "--topic", "lagged", "--to-earliest", "--execute")
    moved = json.loads(fjord(broker, "groups", "describe", "readers", "--json").stdout)
    assert {p["partition"]: p["current_offset"] for p in moved["partitions"]} == {0: 0, 1: 0}
    fjord(broker, "groups", "reset-offsets", "readers", "--topic", "lagged:0", "--shift-by", "3", "--execute")
    fjord(broker, "groups", "reset-offsets", "readers", "--topic", "lagged:1", "--to-latest", "--execute")
    moved = json.loads(fjord(broker, "groups", "describe", "readers", "--json").stdout)
    assert {p["partition"]: p["current_offset"] for p in moved["partitions"]} == {0: 3, 1: 4}
    # The group resumes from the reset offsets.
    rest = fjord(broker, "consume", "lagged", "-G", "readers", "-e").stdout.splitlines()
    assert rest == [str(i) for i in range(3, 10)]
    fjord(broker, "groups", "delete", "readers")
    assert "readers" not in fjord(broker, "groups", "list").stdout


def test_bench_prints_throughput_percentiles_and_json(broker):
    text = fjord(broker, "bench", "produce", "-t", "bench", "-n", "20000", "-s", "100", "--partitions", "2").stdout
    assert "records/s" in text and "p99.9" in text
    result = json.loads(fjord(broker, "bench", "produce", "-t", "bench", "-n", "5000", "-z", "lz4", "--json").stdout)
    assert result["records"] == 5000 and result["failures"] == 0 and result["records_per_sec"] > 0
    assert set(result["latency_ms"]) == {"p50", "p90", "p99", "p99_9", "max"}
    assert result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] <= result["latency_ms"]["max"]
    consumed = json.loads(fjord(broker, "bench", "consume", "-t", "bench", "-n", "25000", "--json").stdout)
    assert consumed["records"] == 25000
    e2e = json.loads(fjord(broker, "bench", "e2e", "-t", "bench-e2e", "-n", "3000", "--rate", "3000", "--json").stdout)
    assert e2e["records"] == 3000 and e2e["latency_ms"]["max"] > 0


def test_unreachable_broker_is_a_clear_error(tmp_path):
    started = time.time()
    result = subprocess.run([FJORD_BIN, "topics", "list", "-b", "127.0.0.1:1"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip() == "fjord topics list: connection failed: 127.0.0.1:1: Connection refused"
    assert time.time() - started < 10
    result = subprocess.run([FJORD_BIN, "produce", "t", "-b", "127.0.0.1:1"], input="x\n", capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "Connection refused" in result.stderr
    usage = subprocess.run([FJORD_BIN, "consume"], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 64


def test_typo_in_client_property_is_refused(broker):
    result = fjord(broker, "produce", "t", "-X", "linger.mss=5", stdin="x\n", check=False)
    assert result.returncode == 1 and "unknown producer property 'linger.mss'" in result.stderr


def test_swift_producer_to_confluent_consumer_identical_records(broker):
    """Records produced by the Swift client are read by librdkafka with the same keys, values,
    headers and partitions (the partitions are murmur2's, as librdkafka's and Java's)."""
    fjord(broker, "topics", "create", "interop", "--partitions", "6")
    lines = "".join(f"k{i}=v{i}\n" for i in range(500))
    fjord(broker, "produce", "interop", "-K", "=", "-H", "trace=abc", stdin=lines)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "interop-check", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition("interop", p, 0) for p in range(6)])
    seen = {}
    deadline = time.time() + 30
    while len(seen) < 500 and time.time() < deadline:
        for message in consumer.consume(num_messages=1000, timeout=1.0):
            assert message.error() is None
            seen[message.key().decode()] = (message.value().decode(), message.partition(), message.headers())
    consumer.close()
    assert len(seen) == 500
    # librdkafka's own murmur2 partitioner puts each key where the Swift client did.
    fjord(broker, "topics", "create", "interop-check", "--partitions", "6")
    producer = Producer({"bootstrap.servers": broker.bootstrap, "partitioner": "murmur2_random"})
    placed = {}
    for i in range(500):
        producer.produce("interop-check", key=f"k{i}", value=b"x",
                         on_delivery=lambda err, msg: placed.__setitem__(msg.key().decode(), msg.partition()))
    producer.flush(30)
    for i in range(500):
        value, partition, headers = seen[f"k{i}"]
        assert value == f"v{i}" and headers == [("trace", b"abc")]
        assert partition == placed[f"k{i}"], f"k{i}: Swift chose {partition}, librdkafka {placed[f'k{i}']}"


def test_confluent_producer_to_swift_consumer_identical_records(broker):
    fjord(broker, "topics", "create", "reverse", "--partitions", "4")
    producer = Producer({"bootstrap.servers": broker.bootstrap, "compression.codec": "zstd", "linger.ms": 5})
    sent = {}
    for i in range(400):
        headers = [("n", str(i).encode()), ("empty", b"")]
        producer.produce("reverse", key=f"key{i}", value=f"value-{i}", headers=headers,
                         on_delivery=lambda err, msg: sent.__setitem__(msg.key().decode(), (msg.partition(), msg.offset())))
    producer.flush(30)
    assert len(sent) == 400
    records = [json.loads(line) for line in fjord(broker, "consume", "reverse", "--from-beginning", "-e", "--json").stdout.splitlines()]
    assert len(records) == 400
    for record in records:
        i = int(record["key"][3:])
        assert record["value"] == f"value-{i}"
        assert (record["partition"], record["offset"]) == sent[record["key"]]
        assert record["headers"] == [{"key": "n", "value": str(i)}, {"key": "empty", "value": ""}]
