"""`fjord cdc postgres` against a real PostgreSQL 15 and a real broker.

Every test runs the connector as its own process (as an operator would), writes with psycopg,
and reads the topics back with kafka-python, decoding every Debezium envelope.
"""

import json
import os
import random
import signal
import subprocess
import threading
import time
import uuid

import pytest
from kafka import KafkaConsumer, TopicPartition

from conftest import FJORD_BIN
from postgres import PostgresServer, find_bin

pytestmark = pytest.mark.skipif(find_bin() is None, reason="PostgreSQL is not installed (tools/test installs it)")


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer()
    yield server
    server.stop()


class Connector:
    """A `fjord cdc postgres` process; its output goes to a log file."""

    def __init__(self, tmp_path, url: str, prefix: str, bootstrap: str, tables: str | None = None,
                 settings: dict | None = None):
        self.args = [FJORD_BIN, "cdc", "postgres", "--url", url, "--prefix", prefix, "-b", bootstrap]
        if tables:
            self.args += ["--tables", tables]
        for key, value in (settings or {}).items():
            self.args += ["--set", f"{key}={value}"]
        self.log_path = tmp_path / f"cdc-{prefix}.log"
        self.process = None

    def start(self) -> "Connector":
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 60.0, occurrences: int = 1) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.log_text().count(text) >= occurrences:
                return
            assert self.process.poll() is None, f"the connector exited with {self.process.returncode}: {self.log_text()[-3000:]}"
            time.sleep(0.1)
        raise AssertionError(f"no '{text}' in the connector's log within {timeout}s: {self.log_text()[-3000:]}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process is None:
            return 0
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the connector did not stop within {timeout}s: {self.log_text()[-3000:]}")
        finally:
            self.process = None
            self.log.close()
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def run_cdc(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([FJORD_BIN, "cdc", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


class TopicReader:
    """A kafka-python consumer over whole topics (every partition, from the beginning) that
    keeps reading as records arrive; each record's value is decoded as JSON."""

    def __init__(self, bootstrap: str, topics: list[str]):
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                                      consumer_timeout_ms=500)
        self.bootstrap = bootstrap
        self.topics = topics
        self.assigned: set[str] = set()
        self.records: list = []

    def _assign(self) -> None:
        missing = [t for t in self.topics if t not in self.assigned]
        if not missing:
            return
        partitions = [TopicPartition(t, p) for t in self.topics for p in (self.consumer.partitions_for_topic(t) or [])]
        self.assigned = {tp.topic for tp in partitions}
        if partitions:
            self.consumer.assign(partitions)
            self.consumer.seek_to_beginning()

    def read_until(self, done, timeout: float = 120.0, what: str = "") -> list:
        """Reads until `done(records)`; `done` runs only when a poll found nothing new (the
        reader is at the end of what was written), since it may look at every record."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            self._assign()
            fresh = 0
            if self.assigned:
                for batch in self.consumer.poll(timeout_ms=500, max_records=10_000).values():
                    self.records.extend(batch)
                    fresh += len(batch)
            else:
                time.sleep(0.2)
            if fresh == 0 and done(self.records):
                return self.records
        raise AssertionError(f"timed out waiting for {what}: {len(self.records)} records read")

    def close(self) -> None:
        self.consumer.close()


def envelope(record) -> dict | None:
    """The decoded value (None for a tombstone); every value must be a Debezium envelope."""
    if record.value is None:
        return None
    value = json.loads(record.value)
    assert set(value) >= {"before", "after", "source", "op", "ts_ms"}, value
    assert value["source"]["connector"] == "postgresql" and "lsn" in value["source"] and "txId" in value["source"]
    return value


def dedup_per_key(records, key_of) -> dict:
    """Per key, the events in topic order without the repeats of a replayed transaction
    (same key, same LSN, same op)."""
    out: dict = {}
    seen: set = set()
    for record in records:
        value = envelope(record)
        if value is None:
            continue
        key = key_of(record)
        identity = (key, value["source"]["lsn"], value["op"], value["source"]["snapshot"])
        if identity in seen:
            continue
        seen.add(identity)
        out.setdefault(key, []).append(value)
    return out


# --- crash safety ---------------------------------------------------------------------------

def test_sigkilled_connector_loses_no_committed_change(postgres, broker, tmp_path):
    """3 tables, 2,000 transactions of inserts, updates and deletes (one table's TOASTed text
    column updated without being touched), while the connector is SIGKILLed 3 times and
    restarted: every committed change is in the topics, in commit order per key."""
    postgres.create_database("shop")
    postgres.execute("""
        CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL);
        ALTER TABLE accounts REPLICA IDENTITY FULL;
        CREATE TABLE orders (id int PRIMARY KEY, account int NOT NULL, amount numeric(12,2) NOT NULL);
        CREATE TABLE documents (id int PRIMARY KEY, body text NOT NULL, revision int NOT NULL);
        ALTER TABLE documents ALTER COLUMN body SET STORAGE EXTERNAL;
        """, "shop")
    rng = random.Random(7)
    body = lambda: "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(6000))
    # expected[(table, id)]: the after-images in commit order (None: a delete).
    expected: dict = {}
    rows: dict = {"accounts": {}, "orders": {}, "documents": {}}
    next_id = {"accounts": 1, "orders": 1, "documents": 1}

    def insert(cur, table):
        i = next_id[table]
        next_id[table] += 1
        if table == "accounts":
            row = {"id": i, "owner": f"owner-{i}", "balance": rng.randint(0, 10_000)}
            cur.execute("INSERT INTO accounts VALUES (%s, %s, %s)", (i, row["owner"], row["balance"]))
        elif table == "orders":
            row = {"id": i, "account": rng.randint(1, 50), "amount": f"{rng.randint(100, 99_999) / 100:.2f}"}
            cur.execute("INSERT INTO orders VALUES (%s, %s, %s)", (i, row["account"], row["amount"]))
        else:
            row = {"id": i, "body": body(), "revision": 0}
            cur.execute("INSERT INTO documents VALUES (%s, %s, %s)", (i, row["body"], 0))
        rows[table][i] = row
        return i, dict(row)

    def update(cur, table, i):
        row = rows[table][i]
        if table == "accounts":
            row["balance"] += rng.randint(-100, 100)
            cur.execute("UPDATE accounts SET balance = %s WHERE id = %s", (row["balance"], i))
            return dict(row)
        if table == "orders":
            row["amount"] = f"{rng.randint(100, 99_999) / 100:.2f}"
            cur.execute("UPDATE orders SET amount = %s WHERE id = %s", (row["amount"], i))
            return dict(row)
        row["revision"] += 1
        if rng.random() < 0.2:
            row["body"] = body()
            cur.execute("UPDATE documents SET body = %s, revision = %s WHERE id = %s", (row["body"], row["revision"], i))
            return dict(row)
        cur.execute("UPDATE documents SET revision = %s WHERE id = %s", (row["revision"], i))
        return {**row, "body": "__debezium_unavailable_value"}  # the TOASTed value was not sent again

    with postgres.connect("shop", autocommit=False) as conn:
        with conn.cursor() as cur:
            for table in rows:
                for _ in range(50):
                    i, row = insert(cur, table)
                    expected[(table, i)] = [("r", row)]
        conn.commit()

    connector = Connector(tmp_path, postgres.url("shop"), "crash", broker.bootstrap).start()
    connector.wait_for_log("streaming changes")

    progress = {"done": 0}
    progress_changed = threading.Condition()

    def write():
        with postgres.connect("shop", autocommit=False) as conn:
            for _ in range(2_000):
                with conn.cursor() as cur:
                    touched = set()
                    changes = []
                    for _ in range(rng.randint(1, 4)):
                        table = rng.choice(list(rows))
                        live = [i for i in rows[table] if (table, i) not in touched]
                        action = rng.random()
                        if action < 0.4 or not live:
                            i, row = insert(cur, table)
                            changes.append(((table, i), ("c", row)))
                        elif action < 0.85:
                            i = rng.choice(live)
                            changes.append(((table, i), ("u", update(cur, table, i))))
                        else:
                            i = rng.choice(live)
                            cur.execute(f"DELETE FROM {table} WHERE id = %s", (i,))
                            del rows[table][i]
                            changes.append(((table, i), ("d", None)))
                        touched.add((table, i))
                conn.commit()
                for key, change in changes:
                    expected.setdefault(key, []).append(change)
                with progress_changed:
                    progress["done"] += 1
                    progress_changed.notify_all()
                time.sleep(0.002)  # about 2,000 transactions in 10 s: the kills land mid-stream

    writer = threading.Thread(target=write)
    writer.start()
    # SIGKILLed at random points of the writer's run (one in each third of it), each time once
    # the previous restart streams again: a kill that came before it (two marks a few
    # transactions apart) would not test streaming.
    marks = [random.Random().randint(low, low + 400) for low in (200, 800, 1_400)]
    for kill, mark in enumerate(marks):
        connector.wait_for_log("streaming changes", occurrences=kill + 1)
        with progress_changed:
            progress_changed.wait_for(lambda: progress["done"] >= mark or not writer.is_alive(), timeout=120)
        connector.kill()
        connector.start()
    writer.join(timeout=300)
    assert not writer.is_alive()
    connector.wait_for_log("streaming changes", occurrences=4)
    assert connector.log_text().count("resuming from the slot") == 3

    topics = [f"crash.public.{t}" for t in rows]
    total = sum(len(changes) for changes in expected.values())
    reader = TopicReader(broker.bootstrap, topics)

    def key_of(record):
        return (record.topic.rsplit(".", 1)[1], json.loads(record.key)["id"])

    try:
        records = reader.read_until(lambda rs: sum(len(v) for v in dedup_per_key(rs, key_of).values()) >= total,
                                    what=f"{total} distinct change events")
    finally:
        reader.close()
    assert connector.stop() == 0, connector.log_text()[-3000:]

    got = dedup_per_key(records, key_of)
    assert set(got) == set(expected)
    for key, changes in expected.items():
        events = got[key]
        assert [e["op"] for e in events] == [op for op, _ in changes], f"{key}: ops out of order or missing"
        for event, (op, row) in zip(events, changes):
            if op == "d":
                assert event["after"] is None and event["before"]["id"] == key[1]
                continue
            after = dict(event["after"])
            assert after == row, f"{key} {op}: {after} != {row}"
            if key[0] == "accounts" and op == "u":
                assert event["before"] is not None and event["before"]["id"] == key[1], "REPLICA IDENTITY FULL sends the old row"
    # A tombstone follows each delete.
    deletes = sum(1 for changes in expected.values() for op, _ in changes if op == "d")
    assert sum(1 for r in records if r.value is None) >= deletes


# --- snapshot and stream ----------------------------------------------------------------------

def test_snapshot_while_writing_folds_to_the_table(postgres, broker, tmp_path):
    """A 50,000-row table updated by a second writer during the snapshot: the topic, folded to
    the last value per key with deletes removed, equals `SELECT *` at the end."""
    postgres.create_database("big")
    postgres.execute("""
        CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL);
        INSERT INTO items SELECT g, 'item-' || g, 0 FROM generate_series(1, 50000) g;
        ANALYZE items;
        """, "big")
    connector = Connector(tmp_path, postgres.url("big"), "big", broker.bootstrap, tables="public.items").start()
    stop = threading.Event()

    def write():
        rng = random.Random(11)
        next_id = 50_001
        with postgres.connect("big") as conn:
            while not stop.is_set():
                action = rng.random()
                if action < 0.7:
                    conn.execute("UPDATE items SET qty = qty + 1 WHERE id = %s", (rng.randint(1, next_id - 1),))
                elif action < 0.85:
                    conn.execute("INSERT INTO items VALUES (%s, %s, 1)", (next_id, f"new-{next_id}"))
                    next_id += 1
                else:
                    conn.execute("DELETE FROM items WHERE id = %s", (rng.randint(1, next_id - 1),))

    writer = threading.Thread(target=write)
    writer.start()
    try:
        connector.wait_for_log("snapshot complete", timeout=120)
        time.sleep(1.0)
    finally:
        stop.set()
        writer.join()
    table = {row[0]: {"id": row[0], "name": row[1], "qty": row[2]} for row in postgres.execute("SELECT id, name, qty FROM items", "big")}
    reader = TopicReader(broker.bootstrap, ["big.public.items"])

    def fold(records):
        state = {}
        for record in records:
            key = json.loads(record.key)["id"]
            value = envelope(record)
            if value is None or value["op"] == "d":
                state.pop(key, None)
            else:
                state[key] = value["after"]
        return state

    try:
        records = reader.read_until(lambda rs: fold(rs) == table, what="the folded topic to equal the table")
    except AssertionError as error:
        folded = fold(reader.records)
        missing = sorted(set(table) - set(folded))[:5]
        extra = sorted(set(folded) - set(table))[:5]
        different = [(k, folded[k], table[k]) for k in sorted(set(table) & set(folded)) if folded[k] != table[k]][:5]
        raise AssertionError(f"{error}; missing {missing}, extra {extra}, different {different}") from None
    finally:
        reader.close()
    assert connector.stop() == 0
    snapshot_reads = [r for r in records if r.value is not None and json.loads(r.value)["op"] == "r"]
    assert len(snapshot_reads) >= 49_000
    assert json.loads(snapshot_reads[-1].value)["source"]["snapshot"] == "last"


# --- outbox ----------------------------------------------------------------------------------

def test_outbox_rows_become_events(postgres, broker, tmp_path):
    """1,000 outbox rows in 1,000 transactions become 1,000 events on outbox.event.<type>, keyed
    by aggregate id, with the event id and type as headers, in order per aggregate."""
    postgres.create_database("orders")
    postgres.execute("""
        CREATE TABLE outbox (id uuid PRIMARY KEY, aggregatetype text NOT NULL, aggregateid text NOT NULL,
                             type text NOT NULL, payload jsonb);
        """, "orders")
    connector = Connector(tmp_path, postgres.url("orders"), "shop", broker.bootstrap, tables="public.outbox",
                          settings={"outbox.tables": "public.outbox"}).start()
    connector.wait_for_log("streaming changes")
    expected = []
    with postgres.connect("orders", autocommit=False) as conn:
        for n in range(1_000):
            kind = "order" if n % 3 else "customer"
            event_id = str(uuid.uuid4())
            aggregate = f"{kind}-{n % 17}"
            payload = {"seq": n, "aggregate": aggregate}
            conn.execute("INSERT INTO outbox VALUES (%s, %s, %s, %s, %s)", (event_id, kind, aggregate, f"{kind.title()}Changed", json.dumps(payload)))
            if n % 2:  # the outbox pattern's usual cleanup, in the same transaction
                conn.execute("DELETE FROM outbox WHERE id = %s", (event_id,))
            conn.commit()
            expected.append((f"outbox.event.{kind}", aggregate, event_id, f"{kind.title()}Changed", n))
    reader = TopicReader(broker.bootstrap, ["outbox.event.order", "outbox.event.customer"])
    try:
        records = reader.read_until(lambda rs: len(rs) >= 1_000, what="1,000 outbox events")
    finally:
        reader.close()
    assert connector.stop() == 0
    assert len(records) == 1_000
    got = {}
    for record in records:
        headers = {k: v.decode() for k, v in record.headers}
        payload = json.loads(record.value)
        got.setdefault((record.topic, record.key.decode()), []).append((headers["id"], headers["type"], payload["seq"]))
    want = {}
    for topic, aggregate, event_id, kind, n in expected:
        want.setdefault((topic, aggregate), []).append((event_id, kind, n))
    assert got == want


# --- schema change ---------------------------------------------------------------------------

def test_added_column_appears_in_later_events(postgres, broker, tmp_path):
    postgres.create_database("evolve")
    postgres.execute("CREATE TABLE people (id int PRIMARY KEY, name text)", "evolve")
    connector = Connector(tmp_path, postgres.url("evolve"), "evolve", broker.bootstrap).start()
    connector.wait_for_log("streaming changes")
    postgres.execute("INSERT INTO people VALUES (1, 'ada')", "evolve")
    postgres.execute("ALTER TABLE people ADD COLUMN email text", "evolve")
    postgres.execute("INSERT INTO people VALUES (2, 'grace', 'grace@example.com')", "evolve")
    postgres.execute("UPDATE people SET email = 'ada@example.com' WHERE id = 1", "evolve")
    reader = TopicReader(broker.bootstrap, ["evolve.public.people"])
    try:
        records = reader.read_until(lambda rs: len(rs) >= 3, what="3 events")
    finally:
        reader.close()
    afters = [json.loads(r.value)["after"] for r in records]
    assert afters == [{"id": 1, "name": "ada"}, {"id": 2, "name": "grace", "email": "grace@example.com"},
                      {"id": 1, "name": "ada", "email": "ada@example.com"}]
    status = run_cdc("status", "--url", postgres.url("evolve"), "--prefix", "evolve", "-b", broker.bootstrap)
    assert status.returncode == 0, status.stderr
    assert "fjord_evolve (active)" in status.stdout and "confirmed LSN:" in status.stdout and "lag:" in status.stdout
    assert connector.stop() == 0
    # Stopped cleanly: the slot stays for the next start and has confirmed the last commit.
    postgres.wait_slot_inactive("fjord_evolve")
    assert "fjord_evolve" in postgres.slots()


# --- bad input -------------------------------------------------------------------------------

def test_bad_input_is_one_clear_error_and_creates_nothing(postgres, broker, tmp_path):
    postgres.create_database("refusals")
    postgres.execute("CREATE TABLE t (id int PRIMARY KEY)", "refusals")
    slots_before = postgres.slots()

    wrong = run_cdc("postgres", "--url", postgres.url("refusals", password="wrong"), "--prefix", "wrong", "-b", broker.bootstrap)
    assert wrong.returncode == 1
    assert "password authentication failed" in wrong.stderr, wrong.stderr

    missing = run_cdc("postgres", "--url", postgres.url("refusals"), "--prefix", "nopub", "-b", broker.bootstrap,
                      "--set", "publication.autocreate.mode=disabled")
    assert missing.returncode == 1
    assert "publication fjord_nopub does not exist" in missing.stderr, missing.stderr

    no_table = run_cdc("postgres", "--url", postgres.url("refusals"), "--prefix", "notable", "-b", broker.bootstrap,
                       "--tables", "public.absent")
    assert no_table.returncode == 1 and "no such table: public.absent" in no_table.stderr, no_table.stderr

    assert postgres.slots() == slots_before
    assert postgres.execute("SELECT pubname FROM pg_publication", "refusals") == []

    replica = PostgresServer(wal_level="replica")
    try:
        replica.create_database("r")
        refused = run_cdc("postgres", "--url", replica.url("r"), "--prefix", "replica", "-b", broker.bootstrap)
        assert refused.returncode == 1
        assert "wal_level=replica" in refused.stderr and "logical" in refused.stderr, refused.stderr
        assert replica.slots() == []
        assert replica.execute("SELECT pubname FROM pg_publication", "r") == []
    finally:
        replica.stop()


# --- snapshot modes, heartbeats, stopping ----------------------------------------------------

def test_snapshot_modes_heartbeats_and_slot_drop(postgres, broker, tmp_path):
    """initial_only snapshots and exits leaving no slot; never streams without reading the
    tables; heartbeats move an idle database's slot past WAL written elsewhere; Ctrl-C stops
    cleanly and slot.drop.on.stop drops the slot."""
    postgres.create_database("modes")
    postgres.execute("CREATE TABLE things (id int PRIMARY KEY, label text); INSERT INTO things SELECT g, 'x' FROM generate_series(1, 10) g",
                     "modes")
    only = run_cdc("postgres", "--url", postgres.url("modes"), "--prefix", "once", "-b", broker.bootstrap,
                   "--set", "snapshot.mode=initial_only", timeout=120)
    assert only.returncode == 0, only.stderr
    assert "fjord_once" not in postgres.slots(), "initial_only leaves no slot behind (it is temporary)"
    reader = TopicReader(broker.bootstrap, ["once.public.things"])
    try:
        records = reader.read_until(lambda rs: len(rs) >= 10, what="10 snapshot reads")
    finally:
        reader.close()
    assert sorted(json.loads(r.value)["after"]["id"] for r in records) == list(range(1, 11))
    assert {json.loads(r.value)["op"] for r in records} == {"r"}

    connector = Connector(tmp_path, postgres.url("modes"), "live", broker.bootstrap,
                          settings={"snapshot.mode": "never", "heartbeat.interval.ms": "300", "slot.drop.on.stop": "true"}).start()
    connector.wait_for_log("streaming changes")
    postgres.execute("INSERT INTO things VALUES (11, 'y')", "modes")
    reader = TopicReader(broker.bootstrap, ["live.public.things"])
    try:
        records = reader.read_until(lambda rs: len(rs) >= 1, what="the insert")
    finally:
        reader.close()
    assert [json.loads(r.value)["op"] for r in records] == ["c"], "snapshot.mode=never reads no table"
    # WAL written in another database: only the heartbeats can move this slot past it.
    postgres.execute("CREATE TABLE elsewhere (n int); INSERT INTO elsewhere SELECT generate_series(1, 1000)")
    target = postgres.execute("SELECT pg_current_wal_lsn()")[0][0]
    deadline = time.time() + 30
    while time.time() < deadline:
        moved = postgres.execute(f"SELECT confirmed_flush_lsn > '{target}'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'fjord_live'")
        if moved and moved[0][0]:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("heartbeats did not advance the idle slot")
    assert connector.stop(signal.SIGINT) == 0, connector.log_text()[-2000:]
    assert "fjord_live" not in postgres.slots(), "slot.drop.on.stop dropped the slot"


def test_a_stop_during_the_snapshot_is_clean_and_the_next_start_takes_it_again(postgres, broker, tmp_path):
    postgres.create_database("interrupted")
    postgres.execute("""
        CREATE TABLE rows (id int PRIMARY KEY, payload text NOT NULL);
        INSERT INTO rows SELECT g, repeat('p', 200) FROM generate_series(1, 100000) g;
        ANALYZE rows;
        """, "interrupted")
    connector = Connector(tmp_path, postgres.url("interrupted"), "cut", broker.bootstrap).start()
    connector.wait_for_log("snapshot: reading")
    time.sleep(0.5)
    assert connector.stop() == 0, connector.log_text()[-2000:]
    assert "stopped during the snapshot" in connector.log_text()
    connector.start()
    connector.wait_for_log("the previous snapshot did not complete", timeout=60)
    connector.wait_for_log("snapshot complete", timeout=180)
    connector.wait_for_log("streaming changes")
    postgres.execute("DELETE FROM rows WHERE id = 1", "interrupted")
    reader = TopicReader(broker.bootstrap, ["cut.public.rows"])

    def folded(records):
        state = {}
        for record in records:
            key = json.loads(record.key)["id"]
            value = envelope(record)
            if value is None or value["op"] == "d":
                state.pop(key, None)
            else:
                state[key] = True
        return state

    try:
        reader.read_until(lambda rs: len(folded(rs)) == 99_999 and 1 not in folded(rs), what="every row but the deleted one")
    finally:
        reader.close()
    assert connector.stop() == 0


# --- a cluster -------------------------------------------------------------------------------

def test_capture_into_a_cluster_survives_the_leaders_sigkill(postgres, tmp_path):
    """Against etcd and three brokers (RF=3, min.insync.replicas=2): the leader of the change
    topic's partition is SIGKILLed mid-stream; the connector's producer follows the new leader
    and every committed change is in the topic, in commit order."""
    import tempfile
    from pathlib import Path

    from cluster import Cluster

    root = tempfile.TemporaryDirectory(prefix="fjord-cdc-cluster-")
    cluster = Cluster(Path(root.name), settings={"replica.lag.time.max.ms": "4000", "min.insync.replicas": "2"}).start()
    try:
        postgres.create_database("clustered")
        postgres.execute("CREATE TABLE ledger (id int PRIMARY KEY, amount int NOT NULL)", "clustered")
        connector = Connector(tmp_path, postgres.url("clustered"), "clu", cluster.bootstrap(), tables="public.ledger").start()
        connector.wait_for_log("streaming changes")
        with postgres.connect("clustered") as conn:
            for i in range(1, 301):
                conn.execute("INSERT INTO ledger VALUES (%s, %s)", (i, i))
                if i == 100:
                    cluster.wait_for(lambda m: len(cluster.registration("clu.public.ledger", 0, m)["isr"]) == 3, "the change topic's ISR")
                    leader = cluster.registration("clu.public.ledger", 0)["leader"]
                    cluster.brokers[leader].kill()
        # The reader (kafka-python) starts once the dead broker's lease is gone from the metadata.
        cluster.wait_for(lambda m: len(m["brokers"]) == 2 and cluster.registration("clu.public.ledger", 0, m)["leader"] not in (leader, -1),
                         "a new leader, the dead broker unregistered")
        reader = TopicReader(cluster.bootstrap(), ["clu.public.ledger"])
        try:
            records = reader.read_until(lambda rs: len({json.loads(r.key)["id"] for r in rs}) >= 300, what="300 inserts")
        finally:
            reader.close()
        got = dedup_per_key(records, lambda r: json.loads(r.key)["id"])
        assert sorted(got) == list(range(1, 301))
        assert all([e["op"] for e in events] == ["c"] for events in got.values())
        # Commit order: the first appearance of each id is ascending.
        first = []
        for record in records:
            key = json.loads(record.key)["id"]
            if key not in first:
                first.append(key)
        assert first == sorted(first)
        assert connector.stop() == 0, connector.log_text()[-3000:]
    finally:
        cluster.stop()
        root.cleanup()
