"""What replication costs: produce throughput of a three-broker cluster (RF=3, acks=all,
min.insync.replicas=2, idempotent) divided by the same single broker (RF=1, acks=1), both driven
by librdkafka's C load generator `rdkafka_performance` with 1 KiB records, in one run on this
machine (the three brokers and etcd share its cores). Then acks=all latency percentiles (p50,
p99, from rdkafka_performance's per-message latency file) at half the replicated throughput.

Usage: tools/bench replication [--fjord PATH] [--records N] [--json]
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "benchmarks"))
sys.path.insert(0, str(ROOT / "Tests" / "Integration"))

from e2e import bench_arguments, broker_process, peer, produce  # noqa: E402

SIZE = 1024


def single_broker(fjord: str, records: int) -> dict:
    with broker_process(fjord) as bootstrap:
        subprocess.run([fjord, "topics", "create", "rf1", "-b", bootstrap, "--partitions", "1"], capture_output=True, check=True, timeout=60)
        return produce(bootstrap, "rf1", SIZE, 1, records)


def latencies(bootstrap: str, topic: str, rate: int, records: int) -> dict:
    """acks=all at a fixed rate: per-message produce→delivery latency percentiles (ms)."""
    with tempfile.NamedTemporaryFile(prefix="fjord-latency-", suffix=".txt") as file:
        peer(["-P", "-t", topic, "-p", "0", "-b", bootstrap, "-s", str(SIZE), "-c", str(records), "-a", "-1",
              "-r", str(rate), "-l", "-A", file.name, "-X", "linger.ms=5", "-X", "enable.idempotence=true"])
        values = sorted(int(line) for line in Path(file.name).read_text().split() if line.strip().isdigit())
    if not values:
        raise RuntimeError("rdkafka_performance wrote no latencies")

    def percentile(p: float) -> float:
        return values[min(len(values) - 1, int(p * len(values)))] / 1000

    return {"rate": rate, "messages": len(values), "p50_ms": percentile(0.50), "p99_ms": percentile(0.99),
            "max_ms": values[-1] / 1000}


def replicated(fjord: str, records: int) -> tuple[dict, dict]:
    os.environ["FJORD_BIN"] = fjord
    from cluster import Cluster  # reads FJORD_BIN at import

    root = Path(tempfile.mkdtemp(prefix="fjord-bench-rf3-"))
    cluster = Cluster(root, settings={"min.insync.replicas": "2"})
    try:
        cluster.start()
        bootstrap = cluster.bootstrap()
        for topic in ("rf3", "rf3-latency"):
            subprocess.run([fjord, "topics", "create", topic, "-b", bootstrap, "--partitions", "1", "--replication-factor", "3"],
                           capture_output=True, check=True, timeout=60)
        cluster.wait_for(lambda m: all(len(cluster.registration(t, 0, m)["isr"]) == 3 for t in ("rf3", "rf3-latency")),
                         "the topics' ISRs")
        throughput = produce(bootstrap, "rf3", SIZE, -1, records)
        half = max(100, int(throughput["messages"] / throughput["seconds"] / 2))
        # Ten seconds at that rate, past librdkafka's and the brokers' warm-up.
        latency = latencies(bootstrap, "rf3-latency", half, half * 10)
        return throughput, latency
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    args = bench_arguments(__doc__)
    fjord = args.fjord

    rf1 = single_broker(fjord, args.records)
    rf3, latency = replicated(fjord, args.records)
    results = {"record_size": SIZE, "rf1_acks1": rf1, "rf3_acks_all": rf3, "ratio": rf3["mb_per_s"] / rf1["mb_per_s"],
               "acks_all_at_half_load": latency}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"1 KiB records, {args.records} each, rdkafka_performance:")
    print(f"  single broker RF=1 acks=1:        {rf1['mb_per_s']:8.1f} MB/s")
    print(f"  three brokers RF=3 acks=all:      {rf3['mb_per_s']:8.1f} MB/s   ratio {results['ratio']:.2f}")
    print(f"  acks=all at {latency['rate']} msg/s (half): p50 {latency['p50_ms']:.2f} ms, p99 {latency['p99_ms']:.2f} ms, "
          f"max {latency['max_ms']:.2f} ms over {latency['messages']} messages")


if __name__ == "__main__":
    main()
