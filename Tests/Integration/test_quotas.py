"""Client quotas on a real broker: a flat-out confluent-kafka producer held to its
producer_byte_rate (told through throttle_cb), a consumer held to its consumer_byte_rate, other
clients unaffected, and `fjord quotas` to set, show and remove them. Each load runs for a fixed
time and stops by itself."""

import json
import subprocess
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import FJORD_BIN

MIB = 1024 * 1024


def fjord(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([FJORD_BIN, *args], capture_output=True, text=True, timeout=60)


def produce_flat_out(bootstrap: str, client_id: str, topic: str, seconds: float) -> tuple[list[tuple[float, int]], list[float], float]:
    """Produces 1 KiB records as fast as the client will take them for `seconds`; returns each
    acknowledgement's (time, bytes), the throttle times reported, and the start time."""
    acked: list[tuple[float, int]] = []
    throttles: list[float] = []
    producer = Producer({"bootstrap.servers": bootstrap, "client.id": client_id, "linger.ms": 5,
                         "throttle_cb": lambda event: throttles.append(event.throttle_time)})
    value = b"x" * 1024
    start = time.time()
    while time.time() - start < seconds:
        try:
            producer.produce(topic, value, on_delivery=lambda err, msg: acked.append((time.time(), len(msg.value()))) if err is None else None)
        except BufferError:
            producer.poll(0.01)
        producer.poll(0)
    producer.purge(in_queue=True)  # what never left the client is not part of the measurement
    producer.flush(30)
    return acked, throttles, start


def rate(acked: list[tuple[float, int]], start: float, end: float) -> float:
    return sum(n for t, n in acked if start <= t <= end) / (end - start) / MIB


def test_producer_and_consumer_byte_rates_hold_and_others_are_unaffected(broker):
    result = fjord("quotas", "alter", "--client-id", "capped", "--add-config", "producer_byte_rate=1048576,consumer_byte_rate=2097152",
                   "-b", broker.bootstrap)
    assert result.returncode == 0, result.stderr

    # A flat-out producer with the capped client id: within 20% of 1 MiB/s over 10 s, told why.
    acked, throttles, start = produce_flat_out(broker.bootstrap, "capped", "quota-topic", 10)
    measured = rate(acked, start, start + 10)
    assert 0.8 <= measured <= 1.2, f"capped producer ran at {measured:.2f} MiB/s"
    assert throttles and max(throttles) > 0, "the client was never told it was throttled"

    # Another client id is not throttled: it runs well above the quota on the same broker.
    free, free_throttles, free_start = produce_flat_out(broker.bootstrap, "free", "quota-topic", 3)
    assert rate(free, free_start, free_start + 3) > 3, "an unquoted client was held back"
    assert free_throttles == [] or max(free_throttles) == 0

    # The capped consumer reads at about 2 MiB/s; the same read by another client id is faster.
    def read_for(client_id: str, seconds: float) -> float:
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "client.id": client_id, "group.id": f"g-{client_id}",
                             "enable.auto.commit": False, "fetch.max.bytes": 1048576})
        consumer.assign([TopicPartition("quota-topic", 0, 0)])
        got, began = 0, time.time()
        while time.time() - began < seconds:
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                if message.error() is None:
                    got += len(message.value())
        consumer.close()
        return got / seconds / MIB

    capped_read = read_for("capped", 6)
    assert 1.4 <= capped_read <= 2.6, f"capped consumer read {capped_read:.2f} MiB/s"
    assert read_for("reader", 2) > 2 * capped_read


def test_quota_management_validation_and_persistence(broker):
    for args in (["--user", "alice", "--add-config", "producer_byte_rate=5000"],
                 ["--user-default", "--add-config", "consumer_byte_rate=7000"],
                 ["--user", "alice", "--client-id", "app", "--add-config", "request_percentage=12.5"]):
        result = fjord("quotas", "alter", *args, "-b", broker.bootstrap)
        assert result.returncode == 0, result.stderr
    listed = json.loads(fjord("quotas", "describe", "--json", "-b", broker.bootstrap).stdout)
    assert {"user": "alice", "values": {"producer_byte_rate": 5000}} in listed
    assert {"user": None, "values": {"consumer_byte_rate": 7000}} in listed
    assert {"user": "alice", "client-id": "app", "values": {"request_percentage": 12.5}} in listed
    only_alice = json.loads(fjord("quotas", "describe", "--json", "--user", "alice", "-b", broker.bootstrap).stdout)
    assert len(only_alice) == 2 and all(entry["user"] == "alice" for entry in only_alice)

    # Refused with a clear message: an unknown key, a fractional byte rate, a non-positive value.
    for config, message in (("bogus_rate=1", "Invalid configuration key"), ("producer_byte_rate=1.5", "fractional"),
                            ("consumer_byte_rate=0", "positive")):
        result = fjord("quotas", "alter", "--user", "bob", "--add-config", config, "-b", broker.bootstrap)
        assert result.returncode != 0 and message in result.stderr, result.stderr

    # Quotas live in the metadata: they survive a restart; --delete-config removes a key.
    broker.restart()
    assert json.loads(fjord("quotas", "describe", "--json", "-b", broker.bootstrap).stdout) == listed
    assert fjord("quotas", "alter", "--user", "alice", "--delete-config", "producer_byte_rate", "-b", broker.bootstrap).returncode == 0
    after = json.loads(fjord("quotas", "describe", "--json", "--user", "alice", "-b", broker.bootstrap).stdout)
    assert after == [{"user": "alice", "client-id": "app", "values": {"request_percentage": 12.5}}]
