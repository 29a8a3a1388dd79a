"""A real etcd and several `fjord serve --cluster` processes on loopback ports, for cluster tests.

etcd is Debian's etcd-server (tools/test installs it); the tests read what the brokers wrote
through etcd's JSON gateway (`/v3/kv/range`), which etcd 3.4 serves on its client port.
"""

import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from conftest import Broker, free_port

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
PREFIX = "/fjord"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def prefix_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


class Etcd:
    """One etcd member with its data in a directory; stop and start keep the data."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.client_port = free_port()
        self.peer_port = free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = directory / "etcd.log"

    @property
    def endpoint(self) -> str:
        return f"etcd://127.0.0.1:{self.client_port}{PREFIX}"

    def start(self, timeout: float = 20.0) -> "Etcd":
        self.directory.mkdir(parents=True, exist_ok=True)
        peer = f"http://127.0.0.1:{self.peer_port}"
        client = f"http://127.0.0.1:{self.client_port}"
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [ETCD, "--name", "fjord-test", "--data-dir", str(self.directory / "data"),
             "--listen-client-urls", client, "--advertise-client-urls", client,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"fjord-test={peer}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"etcd exited: {self.log_path.read_text()[-2000:]}")
            try:
                self.call("/v3/kv/range", {"key": b64("probe")})
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("etcd did not answer")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        self.log.close()

    def call(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(f"http://127.0.0.1:{self.client_port}{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def range(self, prefix: str, revision: int = 0) -> tuple[list[dict], int]:
        """Keys under `prefix` at `revision` (0: now): decoded key/value plus etcd's revisions."""
        body = {"key": b64(prefix), "range_end": prefix_end(prefix)}
        if revision:
            body["revision"] = revision
        answer = self.call("/v3/kv/range", body)
        kvs = []
        for kv in answer.get("kvs", []):
            kvs.append({
                "key": base64.b64decode(kv["key"]).decode(),
                "value": base64.b64decode(kv.get("value", "")).decode(),
                "create_revision": int(kv.get("create_revision", 0)),
                "mod_revision": int(kv.get("mod_revision", 0)),
            })
        return kvs, int(answer["header"]["revision"])


class Cluster:
    """etcd plus `size` brokers (node ids 1…size), each with its own data directory."""

    def __init__(self, root: Path, size: int = 3, settings: dict | None = None):
        self.root = root
        self.etcd = Etcd(root / "etcd")
        self.settings = {"broker.session.timeout.ms": "3000", "offsets.topic.num.partitions": "6",
                         "default.replication.factor": "3",
                         "log.retention.check.interval.ms": "1000", **(settings or {})}
        self.brokers: dict[int, Broker] = {}
        self.size = size

    @property
    def ttl(self) -> float:
        return int(self.settings["broker.session.timeout.ms"]) / 1000

    def start(self) -> "Cluster":
        self.etcd.start()
        for node in range(1, self.size + 1):
            # FJORD_TEST_LOG_LEVEL=debug shows the brokers' debug logs in a failing test's output.
            level = os.environ.get("FJORD_TEST_LOG_LEVEL", "info")
            broker = Broker(self.root / f"broker-{node}" / "data", self.settings,
                            extra_args=["--node-id", str(node), "--cluster", self.etcd.endpoint, "--log-level", level])
            self.brokers[node] = broker
            broker.start()
        self.wait_for(lambda m: len(m["brokers"]) == self.size and m["controller"] > 0, "every broker registered")
        return self

    def bootstrap(self, exclude: tuple[int, ...] = ()) -> str:
        return ",".join(b.bootstrap for n, b in self.brokers.items() if n not in exclude and b.process is not None)

    def live(self) -> list[int]:
        return [n for n, b in self.brokers.items() if b.process is not None]

    def metadata(self) -> dict:
        """The cluster as etcd holds it: live brokers, controller id and epoch, partitions."""
        kvs, revision = self.etcd.range(PREFIX + "/")
        result = {"brokers": [], "controller": -1, "controller_epoch": 0, "topics": {}, "partitions": {}, "revision": revision}
        for kv in kvs:
            key = kv["key"][len(PREFIX) + 1:]
            if key.startswith("brokers/"):
                result["brokers"].append(json.loads(kv["value"]))
            elif key == "controller":
                result["controller"] = json.loads(kv["value"])["nodeID"]
                result["controller_epoch"] = kv["create_revision"]
            elif key.startswith("topics/"):
                result["topics"][key[len("topics/"):]] = json.loads(kv["value"])
            elif key.startswith("partitions/"):
                topic, index = key[len("partitions/"):].rsplit("/", 1)
                result["partitions"][(topic, int(index))] = json.loads(kv["value"])
        return result

    def registration(self, topic: str, index: int, metadata: dict | None = None) -> dict:
        """A partition's registration: its own key, or the topic's initial assignment."""
        m = metadata or self.metadata()
        if (topic, index) in m["partitions"]:
            return m["partitions"][(topic, index)]
        replicas = m["topics"][topic]["assignment"][index]
        return {"replicas": replicas, "isr": replicas, "leader": replicas[0], "leaderEpoch": 0, "partitionEpoch": 0}

    def wait_for(self, condition, what: str, timeout: float = 30.0):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                last = self.metadata()
                if condition(last):
                    return last
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; last etcd state: {last}")

    def stop(self) -> None:
        for broker in self.brokers.values():
            if broker.process is not None:
                broker.stop(signal.SIGKILL)
        self.etcd.stop()

    def logs(self) -> str:
        parts = []
        for node, broker in self.brokers.items():
            parts.append(f"--- broker {node} ({broker.bootstrap}) log (tail) ---")
            parts += broker.log_text().splitlines()[-int(os.environ.get("FJORD_TEST_LOG_LINES", "30")):]
        return "\n".join(parts)
