"""End-to-end produce/fetch throughput of a real fjord broker, driven by librdkafka's own C load
generator `rdkafka_performance` (built by ../shared/bin/rdkafka-performance), reported as MB/s
and as a ratio to the loopback TCP bandwidth that iperf3 measures in the same run. Also reports
produce latency (librdkafka's per-message produce() to delivery report: average and maximum in
ms, from rdkafka_performance -l).

Usage: tools/bench e2e [--fjord PATH] [--records N] [--json]
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

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEER = os.environ.get("RDKAFKA_PERFORMANCE", os.path.join(os.path.dirname(ROOT), "shared", "bin", "rdkafka-performance"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The process id of each broker `broker_process` runs, by its bootstrap address.
BROKER_PIDS = {}


def cpu_seconds(pid):
    """User plus system CPU time a process has used so far, in seconds (from /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fjord_bench(fjord, mode, bootstrap, topic, records, size, extra=()):
    """`fjord bench produce|consume` (the Swift client) with --json: its result object, checked
    for failures and for the whole count."""
    out = subprocess.run([fjord, "bench", mode, "-b", bootstrap, "-t", topic, "-n", str(records), "-s", str(size),
                          "--json", *extra], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"fjord bench {mode} exited {out.returncode}: {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["failures"] != 0 or result["records"] < records:
        raise RuntimeError(f"fjord bench {mode}: {result}")
    return result


@contextlib.contextmanager
def broker_process(fjord, settings=None, extra_listeners=None):
    """A release `fjord serve` on a free port and a temporary data directory, for one benchmark;
    yields its (PLAINTEXT) bootstrap address and stops it (SIGTERM) and deletes its data
    afterwards. `extra_listeners` adds listeners by name and port (`{"SSL": 9093}`)."""
    data = tempfile.mkdtemp(prefix="fjord-bench-")
    port = free_port()
    listeners = [f"PLAINTEXT://127.0.0.1:{port}"] + [f"{name}://127.0.0.1:{p}" for name, p in (extra_listeners or {}).items()]
    args = [fjord, "serve", "--data-dir", data, "--listeners", ",".join(listeners), "--log-level", "warning"]
    for key, value in (settings or {}).items():
        args += ["--set", f"{key}={value}"]
    broker = subprocess.Popen(args)
    BROKER_PIDS[f"127.0.0.1:{port}"] = broker.pid
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"fjord did not listen on {port}")
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


# A deleted topic's files go at the next maintenance pass instead of a minute later (Kafka's
# default delay), so a benchmark that deletes each run's topic does not write its next run beside
# the previous runs' gigabytes of page cache.
PROMPT_DELETES = {"log.segment.delete.delay.ms": "0", "log.retention.check.interval.ms": "500"}


def settle():
    """Between runs of a broker started with PROMPT_DELETES, after deleting the run's topic: lets
    the broker remove its files and writes the dirty page cache back, so no run pays for its
    predecessors (page-cache writes on these VMs slow from 3 GB/s to 0.3 as the cache grows by
    gigabytes, and move whole runs by 3x)."""
    time.sleep(2)
    os.sync()


def bench_arguments(doc, records=1_000_000):
    """The flags every end-to-end benchmark takes (--fjord, --records, --json), parsed; `fjord`
    is made absolute."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fjord", default=os.environ.get("FJORD_BIN", os.path.join(ROOT, ".build", "release", "fjord")))
    ap.add_argument("--records", type=int, default=records)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.fjord = os.path.abspath(args.fjord)
    return args


def iperf3_bandwidth(seconds):
    """Loopback TCP bandwidth in bytes/s, measured by iperf3."""
    for attempt in range(3):
        port = free_port()
        server = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(50):  # until the server listens
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            # The probe above used the one-shot server's only connection on some versions: restart.
            server.kill()
            server.wait()
            server = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"],
                                 capture_output=True, timeout=seconds + 30).stdout
            end = json.loads(out or b"{}").get("end", {})
            if "sum_received" in end:
                return end["sum_received"]["bits_per_second"] / 8
        finally:
            server.kill()
            server.wait()
    raise RuntimeError("iperf3 did not measure the loopback bandwidth")


def peer(args, timeout=300):
    out = subprocess.run([PEER, *args], capture_output=True, text=True, timeout=timeout)
    text = out.stdout + out.stderr
    if out.returncode != 0:
        raise RuntimeError(f"rdkafka_performance {' '.join(args)} exited {out.returncode}: {text[-2000:]}")
    return text


def produce(bootstrap, topic, size, acks, records, extra=()):
    """rdkafka_performance -P with latency measurement; its table's last row gives the
    latency average and maximum (ms), the final summary the rate."""
    text = peer(["-P", "-t", topic, "-p", "0", "-b", bootstrap, "-s", str(size), "-c", str(records), "-a", str(acks),
                 "-l", "-u", "-X", "linger.ms=5", "-X", "batch.size=1000000",
                 "-X", f"enable.idempotence={'true' if acks == -1 else 'false'}", *extra])
    rows = [line for line in text.splitlines() if line.startswith("|") and re.match(r"\|\s+\d", line)]
    if not rows:
        raise RuntimeError(f"no statistics from rdkafka_performance: {text[-2000:]}")
    # Columns: elapsed ms, msgs, bytes, rtt, dr, dr_m/s, dr_MB/s, dr_err, tx_err, outq, offset,
    # lat_curr, lat_avg, lat_lo, lat_hi (latencies in ms).
    cells = [c.strip() for c in rows[-1].strip().strip("|").split("|")]
    seconds, delivered = int(cells[0]) / 1000, int(cells[4])
    # dr_err: failed deliveries (must be none); tx_err counts produce() calls refused while
    # the local queue was full, which rdkafka_performance retries.
    assert int(cells[7]) == 0 and delivered == records, rows[-1]
    return {"messages": delivered, "bytes": delivered * size, "seconds": seconds,
            "mb_per_s": delivered * size / seconds / 1e6, "latency_avg_ms": float(cells[12]), "latency_max_ms": float(cells[14])}


def consume(bootstrap, topic, expected, size, extra=()):
    text = peer(["-C", "-t", topic, "-p", "0", "-b", bootstrap, "-o", "beginning", "-e", "-c", str(expected), *extra])
    summaries = [line for line in text.splitlines() if "consumed in" in line]
    summary = max(summaries, key=lambda line: int(re.search(r"(\d+) messages", line).group(1)))
    got = int(re.search(r"(\d+) messages", summary).group(1))
    total = int(re.search(r"\((\d+) bytes\)", summary).group(1))
    seconds = int(re.search(r"in (\d+)ms", summary).group(1)) / 1000
    return {"messages": got, "bytes": total, "seconds": seconds, "mb_per_s": total / seconds / 1e6}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fjord", default=os.environ.get("FJORD_BIN", ".build/release/fjord"))
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    with broker_process(args.fjord) as bootstrap:
        loopback = iperf3_bandwidth(3)
        results = {"loopback_mb_per_s": loopback / 1e6, "runs": []}
        for size in (100, 1024):
            for acks in (1, -1):
                topic = f"bench-{size}-{'all' if acks == -1 else acks}"
                subprocess.run([args.fjord, "topics", "create", topic, "-b", bootstrap, "--partitions", "1"],
                               capture_output=True, check=True, timeout=60)
                p = produce(bootstrap, topic, size, acks, args.records if size < 1000 else args.records // 4)
                c = consume(bootstrap, topic, p["messages"], size)
                results["runs"].append({
                    "record_size": size, "acks": acks, "produce": p, "consume": c,
                    "produce_ratio_to_loopback": p["mb_per_s"] * 1e6 / loopback,
                    "consume_ratio_to_loopback": c["mb_per_s"] * 1e6 / loopback,
                })
        if args.json:
            print(json.dumps(results, indent=2))
        else:
            print(f"loopback TCP (iperf3): {results['loopback_mb_per_s']:.0f} MB/s")
            print(f"{'size':>6} {'acks':>5} {'produce MB/s':>13} {'ratio':>7} {'avg ms':>8} {'max ms':>8} {'fetch MB/s':>11} {'ratio':>7}")
            for r in results["runs"]:
                print(f"{r['record_size']:>6} {r['acks']:>5} {r['produce']['mb_per_s']:>13.1f} {r['produce_ratio_to_loopback']:>7.3f} "
                      f"{r['produce']['latency_avg_ms']:>8.2f} {r['produce']['latency_max_ms']:>8.2f} {r['consume']['mb_per_s']:>11.1f} "
                      f"{r['consume_ratio_to_loopback']:>7.3f}")


if __name__ == "__main__":
    main()
