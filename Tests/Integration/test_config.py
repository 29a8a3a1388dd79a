"""fjord serve configuration: Kafka's server.properties keys, --set overrides, clear refusals."""

import signal
import subprocess
import time

from conftest import FJORD_BIN, Broker, free_port


def test_bad_value_refuses_to_start_with_a_clear_message(tmp_path):
    result = subprocess.run([FJORD_BIN, "serve", "--data-dir", str(tmp_path / "d"), "--listeners",
                             f"PLAINTEXT://127.0.0.1:{free_port()}", "--set", "num.partitions=zero"],
                            capture_output=True, timeout=30)
    assert result.returncode != 0
    assert b"num.partitions=zero" in result.stderr


def test_properties_file_and_unknown_keys(tmp_path):
    port = free_port()
    properties = tmp_path / "server.properties"
    properties.write_text(f"""# a Kafka-style file
log.dirs={tmp_path / 'data'}
listeners=PLAINTEXT://127.0.0.1:{port}
num.partitions=3
log.retention.hours=1
some.unknown.key=1
""")
    process = subprocess.Popen([FJORD_BIN, "serve", "--config", str(properties)], stderr=subprocess.PIPE)
    try:
        from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
        from confluent_kafka import Producer
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                import socket
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        producer = Producer({"bootstrap.servers": f"127.0.0.1:{port}"})
        producer.produce("auto", b"x")
        assert producer.flush(30) == 0
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
        assert len(admin.list_topics(timeout=10).topics["auto"].partitions) == 3
        resource = ConfigResource(ResourceType.TOPIC, "auto")
        configs = admin.describe_configs([resource])[resource].result(30)
        assert configs["retention.ms"].value == "3600000"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert b"some.unknown.key" in stderr


def test_sigterm_stops_within_five_seconds(broker):
    start = time.time()
    assert broker.stop(signal.SIGTERM) == 0
    assert time.time() - start < 5
