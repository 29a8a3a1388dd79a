"""Real-process fixtures for Fjord's integration tests.

Every test talks to a real `fjord serve` process on 127.0.0.1 (a free port, a temporary data
directory) through real clients: kcat, confluent-kafka (librdkafka) and kafka-python.
"""

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FJORD_BIN = os.environ.get("FJORD_BIN", str(ROOT / ".build" / "debug" / "fjord"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_exactly(conn: socket.socket, count: int) -> bytes:
    """`count` bytes from a socket (a response frame's size prefix, then its body)."""
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


class Broker:
    """A `fjord serve` child process on a loopback port."""

    def __init__(self, data_dir: Path, settings: dict | None = None, port: int | None = None,
                 extra_args: list[str] | None = None):
        self.data_dir = data_dir
        self.settings = dict(settings or {})
        self.extra_args = list(extra_args or [])
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir.parent / f"fjord-{self.port}.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "Broker":
        args = [FJORD_BIN, "serve", "--data-dir", str(self.data_dir)] + self.extra_args
        # A test that sets its own listeners gives the port of one of them as `port`.
        if "listeners" not in self.settings:
            args += ["--listeners", f"PLAINTEXT://127.0.0.1:{self.port}"]
        for key, value in self.settings.items():
            args += ["--set", f"{key}={value}"]
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fjord exited with {self.process.returncode}: {self.log_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"fjord did not listen on {self.port} within {timeout}s")

    def stop(self, sig=signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.process is None:
            return 0
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
            raise AssertionError(f"fjord did not stop within {timeout}s after {sig}")
        finally:
            self.process = None
            self.log.close()
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, sig=signal.SIGTERM) -> "Broker":
        self.stop(sig)
        return self.start()

    def rss_kib(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@pytest.fixture
def broker_factory():
    """Starts brokers with given settings; all are stopped at the end of the test."""
    started: list[Broker] = []
    tmp = tempfile.TemporaryDirectory(prefix="fjord-it-")

    def make(settings: dict | None = None) -> Broker:
        data = Path(tmp.name) / f"data-{len(started)}"
        broker = Broker(data, settings).start()
        started.append(broker)
        return broker

    yield make
    for broker in started:
        if broker.process is not None:
            broker.stop()
        # Shown by pytest only when the test failed.
        print(f"--- broker {broker.bootstrap} log (tail) ---")
        print("\n".join(broker.log_text().splitlines()[-40:]))
    tmp.cleanup()


@pytest.fixture
def broker(broker_factory) -> Broker:
    return broker_factory({"log.retention.check.interval.ms": "500"})
