"""What the metrics cost on the produce path: the same release broker driven by librdkafka's
`rdkafka_performance` (1 KiB records, acks=1) with `metrics.listener` set (Prometheus backend
recording every request and byte) and without (swift-metrics' no-op backend), alternated three
times in one run so the machine's drift hits both; reported as the ratio of the medians
(goal ≥ 0.97: at most 3 % slower).

Usage: tools/bench metrics [--fjord PATH] [--records N] [--json]
"""

import json
import statistics
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "benchmarks"))

from e2e import bench_arguments, broker_process, free_port, produce  # noqa: E402


def run(fjord: str, records: int, metrics: bool) -> float:
    metrics_port = free_port()
    settings = {"metrics.listener": f"http://127.0.0.1:{metrics_port}"} if metrics else {}
    with broker_process(fjord, settings) as bootstrap:
        subprocess.run([fjord, "topics", "create", "m", "-b", bootstrap, "--partitions", "1"], capture_output=True, check=True, timeout=60)
        result = produce(bootstrap, "m", 1024, 1, records)
        if metrics:  # the backend really recorded the run
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
                assert b'kafka_server_brokertopicmetrics_messagesin_total{topic="m"}' in response.read()
        return result["mb_per_s"]


def main() -> None:
    args = bench_arguments(__doc__)
    fjord = args.fjord
    without, with_metrics = [], []
    for _ in range(3):
        without.append(run(fjord, args.records, metrics=False))
        with_metrics.append(run(fjord, args.records, metrics=True))
    ratio = statistics.median(with_metrics) / statistics.median(without)
    results = {"record_size": 1024, "records": args.records, "without_mb_per_s": without, "with_mb_per_s": with_metrics,
               "ratio_of_medians": ratio}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"1 KiB acks=1 produce, {args.records} records, three alternated runs each:")
    print(f"  without metrics.listener: {', '.join(f'{v:.0f}' for v in without)} MB/s")
    print(f"  with metrics.listener:    {', '.join(f'{v:.0f}' for v in with_metrics)} MB/s")
    print(f"  ratio of medians: {ratio:.3f}")


if __name__ == "__main__":
    main()
