#!/usr/bin/env python3
"""End-to-end produce/fetch throughput of a real fjord broker, driven by librdkafka
(confluent-kafka), reported as MB/s and as a ratio to the loopback TCP bandwidth that iperf3
measures in the same run. Also reports produce latency percentiles (librdkafka's per-message
latency: produce() to delivery report).

Usage: tools/bench e2e [--fjord PATH] [--seconds N] [--json]
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def iperf3_bandwidth(seconds):
    """Loopback TCP bandwidth in bytes/s, measured by iperf3."""
    port = free_port()
    server = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"],
                             capture_output=True, check=True, timeout=seconds + 30).stdout
        return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 8
    finally:
        server.kill()
        server.wait()


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def produce(bootstrap, topic, size, acks, seconds):
    latencies = []
    delivered = [0]

    def report(err, msg):
        if err is None:
            delivered[0] += 1
            if len(latencies) < 200_000:
                latencies.append(msg.latency())

    producer = Producer({"bootstrap.servers": bootstrap, "acks": str(acks), "linger.ms": 5,
                         "batch.size": 1_000_000, "queue.buffering.max.kbytes": 262144,
                         "enable.idempotence": acks == -1})
    payload = b"x" * size
    start = time.time()
    sent = 0
    while time.time() - start < seconds:
        for _ in range(1000):
            try:
                producer.produce(topic, payload, on_delivery=report)
                sent += 1
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)
    elapsed = time.time() - start
    return {
        "messages": delivered[0], "bytes": delivered[0] * size, "seconds": elapsed,
        "mb_per_s": delivered[0] * size / elapsed / 1e6,
        "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000,
    }


def consume(bootstrap, topic, expected):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False,
                         "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 10485760})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got = 0
    size = 0
    start = time.time()
    while got < expected and time.time() - start < 120:
        for m in consumer.consume(num_messages=10000, timeout=1.0):
            if m.error() is None:
                got += 1
                size += len(m.value())
    elapsed = time.time() - start
    consumer.close()
    return {"messages": got, "bytes": size, "seconds": elapsed, "mb_per_s": size / elapsed / 1e6}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fjord", default=os.environ.get("FJORD_BIN", ".build/release/fjord"))
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    data = tempfile.mkdtemp(prefix="fjord-bench-")
    port = free_port()
    broker = subprocess.Popen([args.fjord, "serve", "--data-dir", data, "--listeners", f"PLAINTEXT://127.0.0.1:{port}",
                               "--log-level", "warning"])
    bootstrap = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        loopback = iperf3_bandwidth(3)
        results = {"loopback_mb_per_s": loopback / 1e6, "runs": []}
        for size in (100, 1024):
            for acks in (1, -1):
                topic = f"bench-{size}-{'all' if acks == -1 else acks}"
                admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
                p = produce(bootstrap, topic, size, acks, args.seconds)
                c = consume(bootstrap, topic, p["messages"])
                results["runs"].append({
                    "record_size": size, "acks": acks, "produce": p, "consume": c,
                    "produce_ratio_to_loopback": p["mb_per_s"] * 1e6 / loopback,
                    "consume_ratio_to_loopback": c["mb_per_s"] * 1e6 / loopback,
                })
        if args.json:
            print(json.dumps(results, indent=2))
        else:
            print(f"loopback TCP (iperf3): {results['loopback_mb_per_s']:.0f} MB/s")
            print(f"{'size':>6} {'acks':>5} {'produce MB/s':>13} {'ratio':>7} {'p50 ms':>8} {'p99 ms':>8} {'fetch MB/s':>11} {'ratio':>7}")
            for r in results["runs"]:
                print(f"{r['record_size']:>6} {r['acks']:>5} {r['produce']['mb_per_s']:>13.1f} {r['produce_ratio_to_loopback']:>7.3f} "
                      f"{r['produce']['p50_ms']:>8.2f} {r['produce']['p99_ms']:>8.2f} {r['consume']['mb_per_s']:>11.1f} "
                      f"{r['consume_ratio_to_loopback']:>7.3f}")
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
