#!/usr/bin/env python3
"""Fjord's Swift client against librdkafka (confluent-kafka) on the same release broker, in the
same run: producer throughput (100 B and 1 KiB records, acks=1, no compression and lz4) and
consumer throughput, reported as records/s, MB/s and the ratio Swift / librdkafka.

Both producers run flat out with delivery reports (librdkafka: produce() + poll(0) + flush();
Swift: `fjord bench produce`, KafkaProducer.produce with a delivery callback); both consumers read
the same topic from the start without a group. Each figure is the best of --runs runs.

Usage: tools/bench clients [--records N] [--runs K] [--json]
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

FJORD = os.environ.get("FJORD_BIN", ".build/release/fjord")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=30)


def librdkafka_produce(bootstrap, topic, records, size, codec):
    create(bootstrap, topic)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 5, "compression.codec": codec,
                         "enable.idempotence": False, "queue.buffering.max.messages": 1_000_000})
    value = b"x" * size
    failures = []

    def report(err, _msg):
        if err is not None:
            failures.append(err)

    start = time.perf_counter()
    for _ in range(records):
        while True:
            try:
                producer.produce(topic, value, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.001)
        producer.poll(0)
    producer.flush(120)
    elapsed = time.perf_counter() - start
    assert not failures, failures[:3]
    return records / elapsed


def swift_produce(bootstrap, topic, records, size, codec):
    out = subprocess.run([FJORD, "bench", "produce", "-b", bootstrap, "-t", topic, "-n", str(records), "-s", str(size),
                          "--acks", "1", "-z", codec, "--json"], capture_output=True, text=True, check=True, timeout=300)
    result = json.loads(out.stdout)
    assert result["failures"] == 0
    return result["records_per_sec"]


def librdkafka_consume(bootstrap, topic, records):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-librdkafka", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "enable.partition.eof": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen = 0
    start = time.perf_counter()
    while seen < records:
        messages = consumer.consume(num_messages=10_000, timeout=1.0)
        for message in messages:
            assert message.error() is None
        seen += len(messages)
        if time.perf_counter() - start > 120:
            raise RuntimeError("librdkafka consumer too slow")
    elapsed = time.perf_counter() - start
    consumer.close()
    return seen / elapsed


def swift_consume(bootstrap, topic, records):
    out = subprocess.run([FJORD, "bench", "consume", "-b", bootstrap, "-t", topic, "-n", str(records), "--json"],
                         capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout)["records_per_sec"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    data = tempfile.mkdtemp(prefix="fjord-bench-clients-")
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = subprocess.Popen([FJORD, "serve", "--data-dir", data, "--listeners", f"PLAINTEXT://{bootstrap}",
                               "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        rows = []
        for size in (100, 1024):
            for codec in ("none", "lz4"):
                ours, theirs = [], []
                for run in range(args.runs):
                    theirs.append(librdkafka_produce(bootstrap, f"rd-{size}-{codec}-{run}", args.records, size, codec))
                    ours.append(swift_produce(bootstrap, f"sw-{size}-{codec}-{run}", args.records, size, codec))
                rows.append({"what": "produce", "size": size, "codec": codec, "swift": max(ours), "librdkafka": max(theirs)})
            # Consumers read the same (uncompressed) topic.
            topic = f"rd-{size}-none-0"
            ours = [swift_consume(bootstrap, topic, args.records) for _ in range(args.runs)]
            theirs = [librdkafka_consume(bootstrap, topic, args.records) for _ in range(args.runs)]
            rows.append({"what": "consume", "size": size, "codec": "none", "swift": max(ours), "librdkafka": max(theirs)})
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(timeout=30)
    for row in rows:
        row["ratio"] = row["swift"] / row["librdkafka"]
        row["swift_mb_s"] = row["swift"] * row["size"] / 1e6
        row["librdkafka_mb_s"] = row["librdkafka"] * row["size"] / 1e6
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'':8} {'size':>5} {'codec':>5} {'Swift rec/s':>12} {'librdkafka rec/s':>17} {'ratio':>6}")
    for row in rows:
        print(f"{row['what']:8} {row['size']:>5} {row['codec']:>5} {row['swift']:>12,.0f} {row['librdkafka']:>17,.0f} "
              f"{row['ratio']:>5.2f}x")


if __name__ == "__main__":
    sys.exit(main())
