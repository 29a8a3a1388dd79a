"""Security on real listeners: TLS (SSL://), with real clients (kcat, confluent-kafka,
kafka-python) against a real broker, certificates made by openssl for each test module."""

import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from kafka import KafkaConsumer

from conftest import Broker, free_port

KCAT = shutil.which("kcat") or shutil.which("kafkacat")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def issue(pki: Path, name: str, subject: str, san: str | None = None) -> Path:
    """A key and a certificate signed by the test CA; returns the PEM keystore (key + chain)."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=pki)
    extensions = pki / f"{name}.ext"
    extensions.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", extensions.name, "-out", f"{name}.crt", cwd=pki)
    keystore = pki / f"{name}.pem"
    keystore.write_text((pki / f"{name}.key").read_text() + (pki / f"{name}.crt").read_text() + (pki / "ca.crt").read_text())
    return keystore


@pytest.fixture(scope="module")
def pki():
    """A CA, a broker certificate for 127.0.0.1/localhost and a client certificate."""
    directory = Path(tempfile.mkdtemp(prefix="fjord-pki-"))
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-subj", "/CN=fjord-test-ca",
            "-days", "2", "-out", "ca.crt", cwd=directory)
    issue(directory, "broker", "/CN=localhost", "IP:127.0.0.1,DNS:localhost")
    issue(directory, "client", "/CN=writer/O=fjord-tests")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def secure_broker():
    """Starts one broker with the given listeners and settings; stopped at the end."""
    started: list[Broker] = []
    tmp = tempfile.TemporaryDirectory(prefix="fjord-sec-")

    def make(listeners: dict[str, int], settings: dict, port_of: str, expect_failure: bool = False) -> Broker:
        all_settings = {"listeners": ",".join(f"{name}://127.0.0.1:{port}" for name, port in listeners.items()), **settings}
        broker = Broker(Path(tmp.name) / f"data-{len(started)}", all_settings, port=listeners[port_of])
        started.append(broker)
        return broker if expect_failure else broker.start()

    yield make
    for broker in started:
        if broker.process is not None:
            broker.stop()
        print(f"--- broker {broker.bootstrap} log (tail) ---")
        print("\n".join(broker.log_text().splitlines()[-40:]))
    tmp.cleanup()


def tls_settings(pki: Path, **extra) -> dict:
    return {"ssl.keystore.type": "PEM", "ssl.keystore.location": str(pki / "broker.pem"), **extra}


def produce_numbered(config: dict, topic: str, count: int) -> None:
    producer = Producer({"linger.ms": 5, "acks": "all", **config})
    failures = []
    for i in range(count):
        producer.produce(topic, key=str(i).encode(), value=f"value-{i}".encode() * 20,
                         on_delivery=lambda err, msg: failures.append(err) if err else None)
    assert producer.flush(30) == 0
    assert failures == []


def test_clients_over_tls_and_plaintext_side_by_side(pki, secure_broker):
    plain, tls = free_port(), free_port()
    broker = secure_broker({"PLAINTEXT": plain, "SSL": tls}, tls_settings(pki), port_of="PLAINTEXT")
    over_tls = {"bootstrap.servers": f"127.0.0.1:{tls}", "security.protocol": "SSL", "ssl.ca.location": str(pki / "ca.crt")}

    # confluent-kafka produces over TLS: the metadata it gets on the TLS listener must name the
    # TLS port (the produce goes to the advertised leader, which would fail on the plaintext one).
    produce_numbered(over_tls, "secured", 2000)

    # kafka-python reads them back over TLS (fetch responses are copied, not sendfile'd, there).
    consumer = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{tls}", security_protocol="SSL", ssl_cafile=str(pki / "ca.crt"),
                             ssl_check_hostname=True, auto_offset_reset="earliest", consumer_timeout_ms=10000, group_id=None)
    consumer.subscribe(["secured"])
    keys = [int(m.key) for m in consumer]
    consumer.close()
    assert keys == list(range(2000))

    # kcat over TLS, and the same records over the plaintext listener of the same broker.
    out = subprocess.run([KCAT, "-b", f"127.0.0.1:{tls}", "-X", "security.protocol=ssl", "-X", f"ssl.ca.location={pki / 'ca.crt'}",
                          "-C", "-t", "secured", "-e", "-q", "-f", "%k\n"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [int(k) for k in out.stdout.split()] == list(range(2000))
    plain_consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "plain", "enable.auto.commit": False})
    plain_consumer.assign([TopicPartition("secured", 0, 0)])
    seen = 0
    deadline = time.time() + 30
    while seen < 2000 and time.time() < deadline:
        seen += sum(1 for m in plain_consumer.consume(num_messages=500, timeout=1) if m.error() is None)
    plain_consumer.close()
    assert seen == 2000

    # A plaintext Kafka request on the TLS port is not a TLS handshake: that connection is
    # closed, and the broker goes on serving TLS clients.
    with socket.create_connection(("127.0.0.1", tls), timeout=5) as raw:
        header = struct.pack(">hhih", 18, 3, 1, 4) + b"test" + b"\x00"
        raw.sendall(struct.pack(">i", len(header)) + header)
        raw.settimeout(5)
        received = b""
        try:
            while chunk := raw.recv(4096):
                received += chunk
        except (ConnectionResetError, socket.timeout) as error:
            assert not isinstance(error, socket.timeout), "the broker kept a plaintext connection on its TLS port open"
        assert len(received) < 64, "a plaintext client was answered like a Kafka client"
    produce_numbered(over_tls, "secured", 10)
    assert broker.process.poll() is None


def test_required_client_certificates_and_reload_on_sighup(pki, secure_broker):
    tls = free_port()
    broker = secure_broker({"SSL": tls}, tls_settings(pki, **{"ssl.client.auth": "required",
                                                              "ssl.truststore.type": "PEM",
                                                              "ssl.truststore.location": str(pki / "ca.crt")}),
                           port_of="SSL")
    base = {"bootstrap.servers": f"127.0.0.1:{tls}", "security.protocol": "SSL", "ssl.ca.location": str(pki / "ca.crt")}

    # Without a client certificate the handshake fails: nothing is produced.
    refused = Producer({**base, "message.timeout.ms": 3000})
    errors = []
    refused.produce("mtls", value=b"x", on_delivery=lambda err, msg: errors.append(err))
    refused.flush(10)
    assert len(errors) == 1 and errors[0] is not None

    with_cert = {**base, "ssl.certificate.location": str(pki / "client.crt"), "ssl.key.location": str(pki / "client.key")}
    produce_numbered(with_cert, "mtls", 100)

    # A renewed broker certificate (a new subject) is served to new connections after SIGHUP.
    def served_subject() -> str:
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
        with socket.create_connection(("127.0.0.1", tls), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as wrapped:
                return dict(x[0] for x in wrapped.getpeercert()["subject"])["commonName"]

    assert served_subject() == "localhost"
    renewed = issue(pki, "renewed", "/CN=127.0.0.1", "IP:127.0.0.1,DNS:localhost")
    shutil.copy(renewed, pki / "broker.pem")
    broker.process.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while served_subject() != "127.0.0.1":
        assert time.time() < deadline, "SIGHUP did not reload the certificate"
        time.sleep(0.2)
    assert "reloaded TLS certificate" in broker.log_text()

    # A broken file on the next SIGHUP keeps the working certificate.
    (pki / "broker.pem").write_text("not a certificate\n")
    broker.process.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert served_subject() == "127.0.0.1"
    assert "TLS certificate not reloaded" in broker.log_text()
    produce_numbered(with_cert, "mtls", 10)
    issue(pki, "broker", "/CN=localhost", "IP:127.0.0.1,DNS:localhost")


def test_a_tls_listener_without_a_loadable_certificate_refuses_to_start(pki, secure_broker):
    port = free_port()
    broker = secure_broker({"SSL": port}, {"ssl.keystore.location": str(pki / "missing.pem")}, port_of="SSL", expect_failure=True)
    with pytest.raises(RuntimeError) as failure:
        broker.start(timeout=20)
    assert "missing.pem" in str(failure.value)
    broker = secure_broker({"SSL": free_port()}, {}, port_of="SSL", expect_failure=True)
    with pytest.raises(RuntimeError) as failure:
        broker.start(timeout=20)
    assert "ssl.keystore.location" in str(failure.value)
