"""kcat (librdkafka's CLI) against a real fjord broker."""

import subprocess


def kcat(*args, input_bytes=None, timeout=120):
    return subprocess.run(["kcat", *args], input=input_bytes, capture_output=True, timeout=timeout, check=True)


def test_produce_and_consume_100000_lines(broker, tmp_path):
    lines = "".join(f"line-{i:06d} {'x' * (i % 50)}\n" for i in range(100_000)).encode()
    source = tmp_path / "lines.txt"
    source.write_bytes(lines)
    kcat("-b", broker.bootstrap, "-P", "-t", "lines", "-l", str(source))
    out = kcat("-b", broker.bootstrap, "-C", "-t", "lines", "-o", "beginning", "-e", "-q").stdout
    assert out == lines


def test_metadata_listing(broker):
    kcat("-b", broker.bootstrap, "-P", "-t", "listed", input_bytes=b"one\n")
    out = kcat("-b", broker.bootstrap, "-L").stdout.decode()
    assert f"broker 1 at {broker.bootstrap}" in out
    assert 'topic "listed" with 1 partitions' in out
