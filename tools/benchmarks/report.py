#!/usr/bin/env python3
"""Writes a benchmark report a user can read: Markdown with PNG plots.

- Throughput per record size: the Swift client (`fjord bench produce` / `consume`) against
  librdkafka's `rdkafka_performance` (C) on the same release broker, in the same run, as
  records/s and as the ratio Swift / librdkafka (tools/benchmarks/clients.py).
- Produce latency percentiles per configuration (acks=1 and acks=all, 100 B and 1 KiB, at a fixed
  rate so that the figure is the broker's and client's latency, not queueing at saturation):
  `fjord bench produce --rate`, HdrHistogram p50/p90/p99/p99.9/max, send → acknowledgement.

Usage: tools/bench report [--out DIR] [--runs K] [--quick]
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clients  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FJORD = clients.FJORD


def records_for(size, budget_bytes, cap):
    return max(50_000, min(cap, budget_bytes // size))


def latency(configs, rate, records):
    rows = []
    with clients.release_broker("fjord-bench-report-") as bootstrap:
        for size, acks in configs:
            topic = f"latency-{size}-{acks}"
            out = subprocess.run([FJORD, "bench", "produce", "-b", bootstrap, "-t", topic, "-n", str(records), "-s", str(size),
                                  "--acks", acks, "--rate", str(rate), "--json"],
                                 capture_output=True, text=True, check=True, timeout=600)
            result = json.loads(out.stdout)
            assert result["failures"] == 0, result
            rows.append({"size": size, "acks": acks, "rate": rate, **result["latency_ms"]})
    return rows


def plot_throughput(rows, path):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, what in zip(axes, ("produce", "consume")):
        chosen = sorted((r for r in rows if r["what"] == what and r["codec"] == "none"), key=lambda r: r["size"])
        sizes = [r["size"] for r in chosen]
        axis.plot(sizes, [r["swift"] for r in chosen], "o-", label="Fjord Swift client")
        axis.plot(sizes, [r["librdkafka"] for r in chosen], "s--", label="librdkafka rdkafka_performance")
        for r in chosen:
            axis.annotate(f"{r['ratio']:.2f}x", (r["size"], r["swift"]), textcoords="offset points", xytext=(4, 6), fontsize=8)
        axis.set_xscale("log", base=2)
        axis.set_xticks(sizes, [f"{s} B" for s in sizes])
        axis.set_yscale("log")
        axis.set_xlabel("record size")
        axis.set_ylabel("records/s")
        axis.set_title(f"{what}, one partition, no compression")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(rows, path):
    fig, axis = plt.subplots(figsize=(8, 4.2))
    percentiles = ["p50", "p90", "p99", "p99_9", "max"]
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        xs = [j + i * width for j in range(len(percentiles))]
        axis.bar(xs, [row[p] for p in percentiles], width, label=f"{row['size']} B, acks={row['acks']}")
    axis.set_xticks([j + 0.4 - width / 2 for j in range(len(percentiles))], ["p50", "p90", "p99", "p99.9", "max"])
    axis.set_yscale("log")
    axis.set_ylabel("ms (send → acknowledgement)")
    axis.set_title(f"Swift producer latency at {rows[0]['rate']:,} records/s")
    axis.grid(True, axis="y", which="both", alpha=0.3)
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/benchmarks")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer records and sizes (a smoke run)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    sizes = [100, 1024] if args.quick else [100, 256, 1024, 4096]
    budget, cap = (50_000_000, 300_000) if args.quick else (1_000_000_000, 2_000_000)

    throughput = []
    for size in sizes:
        throughput += clients.run(records_for(size, budget, cap), args.runs, [size], ["none"])
    configs = [(100, "1"), (100, "all"), (1024, "1"), (1024, "all")]
    rate, records = (20_000, 60_000) if args.quick else (50_000, 300_000)
    latencies = latency(configs, rate, records)

    plot_throughput(throughput, os.path.join(args.out, "throughput.png"))
    plot_latency(latencies, os.path.join(args.out, "latency.png"))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"throughput": throughput, "latency": latencies}, f, indent=2)

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpus = os.cpu_count()
    lines = [
        "# Fjord benchmark report",
        "",
        f"Measured {now} on {platform.machine()} with {cpus} CPUs ({platform.platform()}), by `tools/bench report`",
        f"(best of {args.runs} alternating runs per figure). One release `fjord serve`, the clients on the same",
        "machine. These machines are noisy: compare the ratios, which are measured in the same run, rather",
        "than the absolute figures.",
        "",
        "## Throughput: Swift client vs librdkafka",
        "",
        "`fjord bench produce` / `fjord bench consume` against librdkafka's `rdkafka_performance -P` / `-C`,",
        "acks=1, linger.ms=5, batch.size=1 MB, no idempotence, one partition, no compression; records/s;",
        "each run starts after a one-second pause, so no client pays for the previous one's exit.",
        "",
        "![throughput](throughput.png)",
        "",
        "| | record size | Swift records/s | rdkafka_performance records/s | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in throughput:
        lines.append(f"| {r['what']} | {r['size']} B | {r['swift']:,.0f} | {r['librdkafka']:,.0f} | {r['ratio']:.2f}x |")
    lines += [
        "",
        f"## Produce latency at {rate:,} records/s",
        "",
        "`fjord bench produce --rate`: send → acknowledgement, HdrHistogram (1 record in 8 sampled), ms.",
        "",
        "![latency](latency.png)",
        "",
        "| record size | acks | p50 | p90 | p99 | p99.9 | max |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in latencies:
        lines.append(f"| {r['size']} B | {r['acks']} | {r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} | {r['p99_9']:.2f} | {r['max']:.2f} |")
    lines.append("")
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out}/README.md, throughput.png, latency.png, results.json")


if __name__ == "__main__":
    sys.exit(main())
