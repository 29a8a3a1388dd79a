"""Whether CDC keeps up: pgbench's TPC-B-like workload (3 updates and 1 insert per transaction)
against a real PostgreSQL while `fjord cdc postgres` (release build) streams it into a release
broker, in one run.

1. Throughput: with the connector stopped, pgbench runs flat out for --seconds (its TPS is the
   database's rate for this workload); then the connector starts and drains that WAL backlog.
   Reported: drain rate (transactions per second from "streaming changes" until the slot
   confirmed pgbench's last commit) ÷ pgbench's TPS (goal ≥ 1.0: CDC keeps up).
2. Live: pgbench flat out again with the connector running; how long after pgbench's end the
   slot confirmed its last commit.
3. Latency: pgbench throttled to half its TPS (`-R`); for each transaction's history insert,
   commit → broker append time (the topic keeps LogAppendTime), p50/p99.

Usage: tools/bench cdc [--fjord PATH] [--seconds N] [--json]
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "benchmarks"))
sys.path.insert(0, str(ROOT / "Tests" / "Integration"))

from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from e2e import broker_process  # noqa: E402
from postgres import PostgresServer  # noqa: E402


def pgbench(server: PostgresServer, *args: str) -> dict:
    out = subprocess.run([f"{server.bin}/pgbench", "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", *args, "bench"],
                         env={**os.environ, "PGPASSWORD": "postgres"}, capture_output=True, text=True, check=True).stdout
    tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))
    transactions = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))
    return {"tps": tps, "transactions": transactions}


def wait_confirmed(server: PostgresServer, slot: str, target: str, timeout: float = 300.0) -> float:
    """Seconds until the slot's confirmed_flush_lsn reaches `target`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = server.execute(f"SELECT confirmed_flush_lsn >= '{target}'::pg_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'", "bench")
        if done and done[0][0]:
            return time.time()
        time.sleep(0.02)
    raise RuntimeError(f"slot {slot} did not reach {target} within {timeout}s")


def lags(bootstrap: str, topic: str, since_ms: int) -> list[float]:
    """Commit → broker append (ms) of every event on `topic` committed after `since_ms`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "cdc-bench", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    out = []
    idle = 0
    while idle < 10:
        messages = consumer.consume(10_000, timeout=0.5)
        if not messages:
            idle += 1
            continue
        idle = 0
        for message in messages:
            if message.error() or message.value() is None:
                continue
            committed = json.loads(message.value())["source"]["ts_ms"]
            if committed >= since_ms:
                out.append(message.timestamp()[1] - committed)
    consumer.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fjord", default=os.environ.get("FJORD_BIN", str(ROOT / ".build" / "release" / "fjord")))
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    server = PostgresServer()
    results = {}
    try:
        server.create_database("bench")
        subprocess.run([f"{server.bin}/pgbench", "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "-i", "-s", "1", "-q", "bench"],
                       env={**os.environ, "PGPASSWORD": "postgres"}, capture_output=True, check=True)
        with broker_process(args.fjord, {"log.message.timestamp.type": "LogAppendTime"}) as bootstrap:
            log_path = Path(tempfile.mkdtemp(prefix="fjord-cdc-bench-")) / "cdc.log"

            def start_connector() -> tuple[subprocess.Popen, float]:
                """Starts the connector; returns it and when it began streaming."""
                before = log_path.read_bytes().count(b"streaming changes") if log_path.exists() else 0
                log = open(log_path, "ab")
                process = subprocess.Popen([args.fjord, "cdc", "postgres", "--url", server.url("bench"), "--prefix", "bench", "-b", bootstrap,
                                            "--set", "snapshot.mode=never"], stdout=log, stderr=subprocess.STDOUT)
                deadline = time.time() + 60
                while log_path.read_bytes().count(b"streaming changes") <= before:
                    if process.poll() is not None or time.time() > deadline:
                        raise RuntimeError(log_path.read_text()[-2000:])
                    time.sleep(0.01)
                return process, time.time()

            def stop_connector(process: subprocess.Popen) -> None:
                process.send_signal(signal.SIGTERM)
                if process.wait(timeout=60) != 0:
                    raise RuntimeError(log_path.read_text()[-2000:])

            connector, _ = start_connector()
            try:
                # A warm-up, so the topics exist and the broker and PostgreSQL caches are warm.
                pgbench(server, "-c", "2", "-j", "2", "-T", "2")
                wait_confirmed(server, "fjord_bench", server.execute("SELECT pg_current_wal_lsn()::text", "bench")[0][0])
                stop_connector(connector)

                flat = pgbench(server, "-c", "4", "-j", "2", "-T", str(args.seconds))
                end = server.execute("SELECT pg_current_wal_lsn()::text", "bench")[0][0]
                connector, streaming = start_connector()
                drained = wait_confirmed(server, "fjord_bench", end)
                drain_tps = flat["transactions"] / (drained - streaming)
                results["throughput"] = {"pgbench_tps": flat["tps"], "transactions": flat["transactions"], "drain_tps": drain_tps,
                                         "ratio": drain_tps / flat["tps"]}

                live = pgbench(server, "-c", "4", "-j", "2", "-T", str(args.seconds))
                ended = time.time()
                end = server.execute("SELECT pg_current_wal_lsn()::text", "bench")[0][0]
                results["live"] = {"pgbench_tps": live["tps"], "caught_up_after_s": wait_confirmed(server, "fjord_bench", end) - ended}

                rate = max(1, int(flat["tps"] / 2))
                since = int(time.time() * 1000)
                half = pgbench(server, "-c", "4", "-j", "2", "-R", str(rate), "-T", str(min(args.seconds, 15)))
                wait_confirmed(server, "fjord_bench", server.execute("SELECT pg_current_wal_lsn()::text", "bench")[0][0])
                measured = sorted(lags(bootstrap, "bench.public.pgbench_history", since))
                cuts = statistics.quantiles(measured, n=100)
                results["latency"] = {"rate_tps": rate, "pgbench_tps": half["tps"], "events": len(measured), "p50_ms": cuts[49], "p99_ms": cuts[98]}
            finally:
                if connector.poll() is None:
                    stop_connector(connector)
                shutil.rmtree(log_path.parent, ignore_errors=True)
    finally:
        server.stop()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    t, v, l = results["throughput"], results["live"], results["latency"]
    print(f"pgbench (TPC-B-like: 3 updates + 1 insert, 4 clients, {args.seconds} s): {t['pgbench_tps']:.0f} TPS; the connector drained "
          f"its {t['transactions']} transactions at {t['drain_tps']:.0f}/s: ratio {t['ratio']:.2f} (goal ≥ 1.0)")
    print(f"live, pgbench at {v['pgbench_tps']:.0f} TPS beside the connector: caught up {v['caught_up_after_s']:.2f} s after pgbench ended")
    print(f"at half that rate ({l['rate_tps']} TPS, {l['events']} transactions): commit → broker append p50 {l['p50_ms']:.0f} ms, "
          f"p99 {l['p99_ms']:.0f} ms")


if __name__ == "__main__":
    main()
