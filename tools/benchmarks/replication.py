"""What replication costs: produce throughput of a three-broker cluster (RF=3, acks=all,
min.insync.replicas=2, idempotent) divided by the same single broker (RF=1, acks=1), with 1 KiB
records to one partition, in one run on this machine (the three brokers and etcd share its
cores). Both load generators are measured: librdkafka's C `rdkafka_performance` and the Swift
client (`fjord bench produce`), with the same settings (linger.ms=5, batch.size=1000000).

The single broker and the cluster run side by side for the whole benchmark, and the RF=1 and
RF=3 runs alternate (`--rounds` of each, a fresh topic per run, deleted afterwards), so a slow
spell of this noisy machine falls on both sides; the ratio is of the medians. Then acks=all
latency percentiles (p50, p99) at half the replicated throughput, per generator.

Usage: tools/bench replication [--fjord PATH] [--records N] [--rounds N]
                               [--generator rdkafka|swift|both] [--json]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "benchmarks"))
sys.path.insert(0, str(ROOT / "Tests" / "Integration"))

from e2e import PROMPT_DELETES, broker_process, fjord_bench, peer, produce, settle  # noqa: E402

SIZE = 1024
SETTINGS = ["-X", "linger.ms=5", "-X", "batch.size=1000000"]



def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fjord", default=os.environ.get("FJORD_BIN", str(ROOT / ".build" / "release" / "fjord")))
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--generator", choices=("rdkafka", "swift", "both"), default="both")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.fjord = os.path.abspath(args.fjord)
    return args


class Generator:
    """One load generator: a throughput run of `records` as fast as it goes, and a latency run
    at a fixed rate, both to partition 0 of `topic`."""

    def __init__(self, name: str, fjord: str):
        self.name, self.fjord = name, fjord

    def throughput(self, bootstrap: str, topic: str, acks: int, records: int) -> dict:
        if self.name == "rdkafka":
            return produce(bootstrap, topic, SIZE, acks, records)
        result = self.swift(bootstrap, topic, acks, records)
        return {"messages": result["records"], "bytes": result["records"] * SIZE, "seconds": result["seconds"],
                "mb_per_s": result["records"] * SIZE / result["seconds"] / 1e6}

    def latency(self, bootstrap: str, topic: str, rate: int, records: int) -> dict:
        """acks=all at `rate` records/s: per-record produce→acknowledgement percentiles (ms)."""
        if self.name == "swift":
            result = self.swift(bootstrap, topic, -1, records, ["--rate", str(rate)])
            ms = result["latency_ms"]
            return {"rate": rate, "messages": result["records"], "p50_ms": ms["p50"], "p99_ms": ms["p99"], "max_ms": ms["max"]}
        with tempfile.NamedTemporaryFile(prefix="fjord-latency-", suffix=".txt") as file:
            peer(["-P", "-t", topic, "-p", "0", "-b", bootstrap, "-s", str(SIZE), "-c", str(records), "-a", "-1",
                  "-r", str(rate), "-l", "-A", file.name, *SETTINGS, "-X", "enable.idempotence=true"])
            values = sorted(int(line) for line in Path(file.name).read_text().split() if line.strip().isdigit())
        if not values:
            raise RuntimeError("rdkafka_performance wrote no latencies")

        def percentile(p: float) -> float:
            return values[min(len(values) - 1, int(p * len(values)))] / 1000

        return {"rate": rate, "messages": len(values), "p50_ms": percentile(0.50), "p99_ms": percentile(0.99),
                "max_ms": values[-1] / 1000}

    def swift(self, bootstrap: str, topic: str, acks: int, records: int, extra: tuple = ()) -> dict:
        idempotence = ["-X", "enable.idempotence=true"] if acks == -1 else []
        return fjord_bench(self.fjord, "produce", bootstrap, topic, records, SIZE,
                           ["--acks", "all" if acks == -1 else str(acks), *SETTINGS, *idempotence, *extra])


def topics(fjord: str, bootstrap: str, command: str, topic: str, *extra: str) -> None:
    subprocess.run([fjord, "topics", command, topic, "-b", bootstrap, *extra], capture_output=True, check=True, timeout=60)


def main() -> None:
    args = arguments()
    os.environ["FJORD_BIN"] = args.fjord
    from cluster import Cluster  # reads FJORD_BIN at import

    generators = [Generator(name, args.fjord) for name in (("rdkafka", "swift") if args.generator == "both" else (args.generator,))]
    root = Path(tempfile.mkdtemp(prefix="fjord-bench-rf3-"))
    results: dict = {"record_size": SIZE, "records_per_run": args.records, "generators": {}}
    with ExitStack() as stack:
        single = stack.enter_context(broker_process(args.fjord, settings=PROMPT_DELETES))
        cluster = Cluster(root, settings={"min.insync.replicas": "2", **PROMPT_DELETES})
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        stack.callback(cluster.stop)
        cluster.start()
        replicated = cluster.bootstrap()
        settle()

        def fresh(bootstrap: str, topic: str, rf: int) -> None:
            topics(args.fjord, bootstrap, "create", topic, "--partitions", "1", "--replication-factor", str(rf))
            if rf > 1:
                cluster.wait_for(lambda m: len(cluster.registration(topic, 0, m)["isr"]) == rf, f"{topic}'s ISR")

        for generator in generators:
            runs = {"rf1_acks1": [], "rf3_acks_all": []}
            for round in range(args.rounds):
                for key, bootstrap, rf, acks in (("rf1_acks1", single, 1, 1), ("rf3_acks_all", replicated, 3, -1)):
                    topic = f"{generator.name}-rf{rf}-{round}"
                    fresh(bootstrap, topic, rf)
                    runs[key].append(generator.throughput(bootstrap, topic, acks, args.records))
                    topics(args.fjord, bootstrap, "delete", topic)
                    settle()
            rf1 = statistics.median(r["mb_per_s"] for r in runs["rf1_acks1"])
            rf3 = statistics.median(r["mb_per_s"] for r in runs["rf3_acks_all"])
            half = max(100, int(rf3 * 1e6 / SIZE / 2))
            fresh(replicated, f"{generator.name}-latency", 3)
            settle()
            # As many records as a throughput run, at half its rate: the same bytes in twice the
            # time (ten seconds at that rate wrote gigabytes more than the runs it halves, and
            # measured the page cache's growth rather than the load).
            latency = generator.latency(replicated, f"{generator.name}-latency", half, args.records)
            topics(args.fjord, replicated, "delete", f"{generator.name}-latency")
            results["generators"][generator.name] = {
                **runs, "rf1_median_mb_per_s": rf1, "rf3_median_mb_per_s": rf3, "ratio": rf3 / rf1,
                "acks_all_at_half_load": latency}

    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"1 KiB records, {args.records} per run, {args.rounds} alternated rounds, ratio of medians:")
    for name, r in results["generators"].items():
        each = lambda key: "/".join(f"{run['mb_per_s']:.0f}" for run in r[key])  # noqa: E731
        latency = r["acks_all_at_half_load"]
        print(f"  {name}: RF=1 acks=1 {each('rf1_acks1')} MB/s, RF=3 acks=all {each('rf3_acks_all')} MB/s, "
              f"ratio {r['ratio']:.2f}")
        print(f"    acks=all at {latency['rate']} msg/s (half): p50 {latency['p50_ms']:.2f} ms, p99 {latency['p99_ms']:.2f} ms, "
              f"max {latency['max_ms']:.2f} ms over {latency['messages']} messages")


if __name__ == "__main__":
    main()
