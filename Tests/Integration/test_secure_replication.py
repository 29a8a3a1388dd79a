"""Replication over a secured inter-broker listener: three brokers on a real etcd whose followers
fetch from their leaders over SASL_SSL (SCRAM-SHA-512, the CA checked), while clients use a
PLAINTEXT listener; every acknowledged acks=all record reaches all three replicas."""

import json
import subprocess
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from cluster import PREFIX, Etcd
from conftest import FJORD_BIN, Broker, free_port
from test_security import pki  # noqa: F401  (the module's certificate authority fixture)

JAAS = 'org.apache.kafka.common.security.scram.ScramLoginModule required username="{user}" password="{password}";'


def test_followers_replicate_over_sasl_ssl(pki):  # noqa: F811
    tmp = tempfile.TemporaryDirectory(prefix="fjord-secure-repl-")
    root = Path(tmp.name)
    etcd = Etcd(root / "etcd").start()
    brokers: dict[int, Broker] = {}
    try:
        for node in (1, 2, 3):
            client, replication = free_port(), free_port()
            settings = {
                "listeners": f"CLIENT://127.0.0.1:{client},REPLICATION://127.0.0.1:{replication}",
                "listener.security.protocol.map": "CLIENT:PLAINTEXT,REPLICATION:SASL_SSL",
                "inter.broker.listener.name": "REPLICATION",
                "sasl.enabled.mechanisms": "SCRAM-SHA-512",
                "listener.name.replication.scram-sha-512.sasl.jaas.config": JAAS.format(user="replicator", password="r3pl"),
                "ssl.keystore.type": "PEM", "ssl.keystore.location": str(pki / "broker.pem"),
                "ssl.truststore.type": "PEM", "ssl.truststore.location": str(pki / "ca.crt"),
                "broker.session.timeout.ms": "3000", "offsets.topic.num.partitions": "3", "default.replication.factor": "3",
                "min.insync.replicas": "2", "replica.lag.time.max.ms": "4000", "replica.fetch.backoff.ms": "200",
            }
            brokers[node] = Broker(root / f"broker-{node}" / "data", settings, port=client,
                                   extra_args=["--node-id", str(node), "--cluster", etcd.endpoint]).start()
        bootstrap = ",".join(b.bootstrap for b in brokers.values())

        # The replication user lives in etcd like any SCRAM user; the followers log in once it exists.
        created = subprocess.run([FJORD_BIN, "users", "create", "replicator", "--password", "r3pl", "--mechanism", "SCRAM-SHA-512",
                                  "-b", brokers[1].bootstrap], capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stderr
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("secured-replicas", 2, 3)])["secured-replicas"].result(60)

        acknowledged, failed = [], []
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
        for i in range(2000):
            producer.produce("secured-replicas", key=str(i).encode(), value=f"v{i}".encode(),
                             on_delivery=lambda err, msg: (failed if err else acknowledged).append(err or msg.offset()))
        producer.flush(60)
        assert failed == [] and len(acknowledged) == 2000

        # Every replica holds every record: the partitions' segment files are identical on all brokers.
        def segments(node: int, index: int) -> bytes:
            directory = brokers[node].data_dir / f"secured-replicas-{index}"
            return b"".join(p.read_bytes() for p in sorted(directory.glob("*.log")))

        deadline = time.time() + 30
        while time.time() < deadline:
            if all(segments(1, i) == segments(n, i) and len(segments(1, i)) > 0 for i in (0, 1) for n in (2, 3)):
                break
            time.sleep(0.5)
        for index in (0, 1):
            assert segments(1, index) == segments(2, index) == segments(3, index), f"partition {index} differs between replicas"
        # The ISR is whole in etcd: the followers are caught up, not merely written to.
        kvs, _ = etcd.range(PREFIX + "/partitions/secured-replicas/")
        for kv in kvs:
            assert sorted(json.loads(kv["value"])["isr"]) == [1, 2, 3], kv
        logs = "".join(b.log_text() for b in brokers.values())
        assert "SASL authentication failed" not in logs.split("SCRAM credentials changed")[-1]
    finally:
        for broker in brokers.values():
            if broker.process is not None:
                broker.stop()
        for node, broker in brokers.items():
            print(f"--- broker {node} ---")
            print("\n".join(broker.log_text().splitlines()[-25:]))
        etcd.stop()
        tmp.cleanup()
