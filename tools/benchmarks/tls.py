"""What TLS costs: one release broker with a PLAINTEXT and an SSL listener (a certificate made by
openssl for this run), 1 KiB records, acks=1, produced and then fetched over each listener in
turn, three alternated rounds in one run (a fresh topic per round, deleted and synced
afterwards). Both load generators are measured: librdkafka's `rdkafka_performance` and the
Swift client (`fjord bench produce` / `consume`). Reported as TLS ÷ plaintext throughput for
produce and for fetch (ratios of medians; goal ≥ 0.6), and as the broker's own CPU-seconds per
GB moved on each listener, which no generator's speed bounds. Plaintext fetches are
sendfile'd, TLS fetches read and encrypt in user space.

Usage: tools/bench tls [--fjord PATH] [--records N] [--generator rdkafka|swift|both] [--json]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "benchmarks"))

from e2e import (BROKER_PIDS, PROMPT_DELETES, broker_process, consume, cpu_seconds, fjord_bench,  # noqa: E402
                 free_port, produce, settle)


def certificate(directory: Path) -> tuple[Path, Path]:
    """A CA and a broker certificate for 127.0.0.1; returns (PEM keystore, CA file)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-subj", "/CN=bench-ca", "-days", "1", "-out", "ca.crt")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-subj", "/CN=localhost", "-out", "broker.csr")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
            "-extfile", "san.ext", "-out", "broker.crt")
    keystore = directory / "broker.pem"
    keystore.write_text((directory / "broker.key").read_text() + (directory / "broker.crt").read_text())
    return keystore, directory / "ca.crt"


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fjord", default=os.environ.get("FJORD_BIN", str(ROOT / ".build" / "release" / "fjord")))
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--generator", choices=("rdkafka", "swift", "both"), default="both")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.fjord = os.path.abspath(args.fjord)
    return args


def transfer(generator: str, fjord: str, kind: str, bootstrap: str, topic: str, records: int, extra: list) -> float:
    """One produce or fetch of `records` 1 KiB records by `generator`; MB/s."""
    if generator == "rdkafka":
        if kind == "produce":
            return produce(bootstrap, topic, 1024, 1, records, extra=extra)["mb_per_s"]
        fetched = consume(bootstrap, topic, records, 1024, extra=extra)
        assert fetched["messages"] == records, fetched
        return fetched["mb_per_s"]
    flags = ["--acks", "1", "-X", "linger.ms=5", "-X", "batch.size=1000000"] if kind == "produce" else []
    return fjord_bench(fjord, kind, bootstrap, topic, records, 1024, [*flags, *extra])["mb_per_sec"]


def main() -> None:
    args = arguments()
    generators = ("rdkafka", "swift") if args.generator == "both" else (args.generator,)
    pki = Path(tempfile.mkdtemp(prefix="fjord-bench-pki-"))
    results = {g: {listener: {"produce": [], "fetch": [], "broker_cpu_s_per_gb": {"produce": [], "fetch": []}}
                   for listener in ("plaintext", "tls")} for g in generators}
    try:
        keystore, ca = certificate(pki)
        tls_port = free_port()
        settings = {"ssl.keystore.type": "PEM", "ssl.keystore.location": str(keystore), **PROMPT_DELETES}
        with broker_process(args.fjord, settings, extra_listeners={"SSL": tls_port}) as bootstrap:
            broker = BROKER_PIDS[bootstrap]
            listeners = {"plaintext": (bootstrap, []),
                         "tls": (f"127.0.0.1:{tls_port}", ["-X", "security.protocol=ssl", "-X", f"ssl.ca.location={ca}"])}
            gigabytes = args.records * 1024 / 1e9
            settle()
            for round_ in range(3):
                for generator in generators:
                    for name, (address, extra) in listeners.items():
                        topic = f"{generator}-{name}-{round_}"
                        subprocess.run([args.fjord, "topics", "create", topic, "-b", bootstrap, "--partitions", "1"],
                                       capture_output=True, check=True, timeout=60)
                        for kind, key in (("produce", "produce"), ("consume", "fetch")):
                            before = cpu_seconds(broker)
                            mb_per_s = transfer(generator, args.fjord, kind, address, topic, args.records, extra)
                            results[generator][name][key].append(mb_per_s)
                            results[generator][name]["broker_cpu_s_per_gb"][key].append((cpu_seconds(broker) - before) / gigabytes)
                        subprocess.run([args.fjord, "topics", "delete", topic, "-b", bootstrap], capture_output=True, check=True, timeout=60)
                        settle()
    finally:
        shutil.rmtree(pki, ignore_errors=True)
    median = statistics.median
    for generator, r in results.items():
        r["tls_over_plaintext"] = {kind: median(r["tls"][kind]) / median(r["plaintext"][kind]) for kind in ("produce", "fetch")}
    if args.json:
        print(json.dumps({"records": args.records, "record_size": 1024, "generators": results}, indent=2))
        return
    print(f"1 KiB records, {args.records} per run, acks=1, three alternated rounds per listener and generator:")
    for generator, r in results.items():
        print(f"  {generator}:")
        for name in ("plaintext", "tls"):
            for kind in ("produce", "fetch"):
                cpu = median(r[name]["broker_cpu_s_per_gb"][kind])
                print(f"    {name:9} {kind:7}: {', '.join(f'{v:.0f}' for v in r[name][kind])} MB/s; broker {cpu:.2f} CPU-s/GB")
        ratios = r["tls_over_plaintext"]
        print(f"    TLS ÷ plaintext: produce {ratios['produce']:.2f}, fetch {ratios['fetch']:.2f} (goal ≥ 0.6)")


if __name__ == "__main__":
    main()
