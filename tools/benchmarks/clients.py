#!/usr/bin/env python3
"""Fjord's Swift client against librdkafka's own C load generator, `rdkafka_performance`
(built by ../shared/bin/rdkafka-performance), on the same release broker in the same run:
producer throughput (100 B and 1 KiB records, acks=1, no compression and lz4) and consumer
throughput, as records/s, MB/s and the ratio Swift / librdkafka.

Both producers run flat out with the same settings (acks=1, linger.ms=5, batch.size=1 MB, no
idempotence) and count only records the broker acknowledged: `rdkafka_performance -P` (delivery
reports), `fjord bench produce` (KafkaProducer.produce with delivery callbacks). Both consumers
read the same topic from the start without a group: `rdkafka_performance -C -e` and
`fjord bench consume`. Runs alternate between the two clients and each figure is the best of
--runs runs, so a noisy moment hurts both alike.

Usage: tools/bench clients [--records N] [--runs K] [--sizes 100,1024] [--json]
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

FJORD = os.environ.get("FJORD_BIN", ".build/release/fjord")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEER = os.environ.get("RDKAFKA_PERFORMANCE", os.path.join(os.path.dirname(ROOT), "shared", "bin", "rdkafka-performance"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create(bootstrap, topic):
    subprocess.run([FJORD, "topics", "create", topic, "-b", bootstrap, "--partitions", "1"],
                   capture_output=True, text=True, check=True, timeout=60)


# Pause before each run: a client that just exited can leave the broker busy for a moment
# (its last long-poll fetch, closing its connection), which would count against the next one.
SETTLE_SECONDS = 1.0


def rdkafka_performance(args, timeout=300):
    """Runs rdkafka_performance and returns its final summary's records/s."""
    time.sleep(SETTLE_SECONDS)
    out = subprocess.run([PEER, *args], capture_output=True, text=True, timeout=timeout)
    text = out.stdout + out.stderr
    if out.returncode != 0:
        raise RuntimeError(f"rdkafka_performance {' '.join(args)} exited {out.returncode}: {text[-2000:]}")
    summaries = [line for line in text.splitlines() if "msgs/s" in line]
    if not summaries:
        raise RuntimeError(f"no summary from rdkafka_performance: {text[-2000:]}")
    return summaries[-1], float(re.search(r"(\d+) msgs/s", summaries[-1]).group(1))


def librdkafka_produce(bootstrap, topic, records, size, codec):
    create(bootstrap, topic)
    summary, rate = rdkafka_performance(["-P", "-t", topic, "-p", "0", "-b", bootstrap, "-s", str(size), "-c", str(records),
                                         "-z", codec, "-a", "1", "-X", "linger.ms=5", "-X", "batch.size=1000000",
                                         "-X", "enable.idempotence=false", "-X", "queue.buffering.max.messages=1000000"])
    delivered = re.search(r"(\d+) delivered", summary)
    failed = re.search(r"(\d+) failed", summary)
    assert delivered and int(delivered.group(1)) == records, summary
    assert failed is None or int(failed.group(1)) == 0, summary
    return rate


def swift_produce(bootstrap, topic, records, size, codec):
    time.sleep(SETTLE_SECONDS)
    out = subprocess.run([FJORD, "bench", "produce", "-b", bootstrap, "-t", topic, "-n", str(records), "-s", str(size),
                          "--acks", "1", "-z", codec, "--json"], capture_output=True, text=True, check=True, timeout=300)
    result = json.loads(out.stdout)
    assert result["failures"] == 0 and result["records"] == records, result
    return result["records_per_sec"]


def librdkafka_consume(bootstrap, topic, records):
    summary, rate = rdkafka_performance(["-C", "-t", topic, "-p", "0", "-b", bootstrap, "-o", "beginning", "-e",
                                         "-c", str(records)])
    consumed = re.search(r"(\d+) messages", summary)
    assert consumed and int(consumed.group(1)) >= records, summary
    return rate


def swift_consume(bootstrap, topic, records):
    time.sleep(SETTLE_SECONDS)
    out = subprocess.run([FJORD, "bench", "consume", "-b", bootstrap, "-t", topic, "-n", str(records), "--json"],
                         capture_output=True, text=True, check=True, timeout=300)
    result = json.loads(out.stdout)
    assert result["records"] >= records, result
    return result["records_per_sec"]


@contextlib.contextmanager
def release_broker(prefix):
    """A release `fjord serve` on a free loopback port with a temporary data directory; yields
    its bootstrap address once it listens, and stops it (SIGTERM) afterwards."""
    data = tempfile.mkdtemp(prefix=prefix)
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
        yield bootstrap
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


def run(records, runs, sizes, codecs):
    rows = []
    with release_broker("fjord-bench-clients-") as bootstrap:
        for size in sizes:
            for codec in codecs:
                ours, theirs = [], []
                for attempt in range(runs):
                    theirs.append(librdkafka_produce(bootstrap, f"rd-{size}-{codec}-{attempt}", records, size, codec))
                    ours.append(swift_produce(bootstrap, f"sw-{size}-{codec}-{attempt}", records, size, codec))
                rows.append({"what": "produce", "size": size, "codec": codec, "swift": max(ours), "librdkafka": max(theirs)})
            # Both consumers read the same uncompressed topic.
            topic = f"rd-{size}-none-0" if "none" in codecs else f"rd-{size}-{codecs[0]}-0"
            ours, theirs = [], []
            for _ in range(runs):
                theirs.append(librdkafka_consume(bootstrap, topic, records))
                ours.append(swift_consume(bootstrap, topic, records))
            rows.append({"what": "consume", "size": size, "codec": "none", "swift": max(ours), "librdkafka": max(theirs)})
    for row in rows:
        row["ratio"] = row["swift"] / row["librdkafka"]
        row["swift_mb_s"] = row["swift"] * row["size"] / 1e6
        row["librdkafka_mb_s"] = row["librdkafka"] * row["size"] / 1e6
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="100,1024")
    parser.add_argument("--codecs", default="none,lz4")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = run(args.records, args.runs, [int(s) for s in args.sizes.split(",")], args.codecs.split(","))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'':8} {'size':>5} {'codec':>5} {'Swift rec/s':>12} {'rdkafka_performance rec/s':>26} {'ratio':>6}")
    for row in rows:
        print(f"{row['what']:8} {row['size']:>5} {row['codec']:>5} {row['swift']:>12,.0f} {row['librdkafka']:>26,.0f} "
              f"{row['ratio']:>5.2f}x")


if __name__ == "__main__":
    sys.exit(main())
