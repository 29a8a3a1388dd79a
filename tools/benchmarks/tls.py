"""What TLS costs: one release broker with a PLAINTEXT and an SSL listener (a certificate made by
openssl for this run), driven by librdkafka's `rdkafka_performance` (1 KiB records, acks=1) over
each, alternated three times in one run; reported as TLS ÷ plaintext for produce and for fetch
(ratios of medians; goal ≥ 0.6). Plaintext fetches are sendfile'd, TLS fetches read and encrypt
in user space.

Usage: tools/bench tls [--fjord PATH] [--records N] [--json]
"""

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "benchmarks"))

from e2e import bench_arguments, broker_process, consume, free_port, produce  # noqa: E402


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


def main() -> None:
    args = bench_arguments(__doc__, records=500_000)
    pki = Path(tempfile.mkdtemp(prefix="fjord-bench-pki-"))
    try:
        keystore, ca = certificate(pki)
        tls_port = free_port()
        settings = {"ssl.keystore.type": "PEM", "ssl.keystore.location": str(keystore)}
        results = {"plaintext": {"produce": [], "fetch": []}, "tls": {"produce": [], "fetch": []}}
        with broker_process(args.fjord, settings, extra_listeners={"SSL": tls_port}) as bootstrap:
            tls = {"bootstrap": f"127.0.0.1:{tls_port}", "extra": ["-X", "security.protocol=ssl", "-X", f"ssl.ca.location={ca}"]}
            plain = {"bootstrap": bootstrap, "extra": []}
            for round_ in range(3):
                for name, listener in (("plaintext", plain), ("tls", tls)):
                    topic = f"{name}-{round_}"
                    subprocess.run([args.fjord, "topics", "create", topic, "-b", bootstrap, "--partitions", "1"],
                                   capture_output=True, check=True, timeout=60)
                    produced = produce(listener["bootstrap"], topic, 1024, 1, args.records, extra=listener["extra"])
                    fetched = consume(listener["bootstrap"], topic, args.records, 1024, extra=listener["extra"])
                    assert fetched["messages"] == args.records, fetched
                    results[name]["produce"].append(produced["mb_per_s"])
                    results[name]["fetch"].append(fetched["mb_per_s"])
    finally:
        shutil.rmtree(pki, ignore_errors=True)
    ratios = {kind: statistics.median(results["tls"][kind]) / statistics.median(results["plaintext"][kind]) for kind in ("produce", "fetch")}
    if args.json:
        print(json.dumps({"records": args.records, "record_size": 1024, "mb_per_s": results, "tls_over_plaintext": ratios}, indent=2))
        return
    print(f"1 KiB records, {args.records} per run, acks=1, three alternated runs per listener:")
    for name in ("plaintext", "tls"):
        for kind in ("produce", "fetch"):
            print(f"  {name:9} {kind:7}: {', '.join(f'{v:.0f}' for v in results[name][kind])} MB/s")
    print(f"  TLS ÷ plaintext: produce {ratios['produce']:.2f}, fetch {ratios['fetch']:.2f} (goal ≥ 0.6)")


if __name__ == "__main__":
    main()
