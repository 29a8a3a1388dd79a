"""A real PostgreSQL (Debian's, installed by tools/test) for the CDC tests.

`initdb` into a temporary directory, started on a free loopback port with the given
`wal_level`, a superuser `postgres` (password `postgres`) over TCP with scram-sha-256 and a trust
Unix socket for the harness itself. As root the server runs as Debian's `postgres` user
(initdb refuses root). Stopped with `pg_ctl stop -m immediate` and removed at the end.
"""

import glob
import os
import shutil
import subprocess
import tempfile
import time

import psycopg

from conftest import free_port


def find_bin() -> str | None:
    for version in ("17", "16", "15"):
        path = f"/usr/lib/postgresql/{version}/bin"
        if os.access(f"{path}/initdb", os.X_OK):
            return path
    return None


class PostgresServer:
    def __init__(self, wal_level: str = "logical"):
        self.bin = find_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (tools/test installs postgresql)")
        self.as_postgres = os.getuid() == 0
        self.directory = tempfile.mkdtemp(prefix="fjord-pg-", dir="/tmp")
        self.data = os.path.join(self.directory, "data")
        self.port = free_port()
        if self.as_postgres:
            shutil.chown(self.directory, "postgres", "postgres")
        password_file = os.path.join(self.directory, "pw")
        with open(password_file, "w") as f:
            f.write("postgres\n")
        if self.as_postgres:
            shutil.chown(password_file, "postgres", "postgres")
        self._run(f"{self.bin}/initdb", "-D", self.data, "-U", "postgres", f"--pwfile={password_file}",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"""
listen_addresses = '127.0.0.1'
port = {self.port}
unix_socket_directories = '{self.directory}'
wal_level = {wal_level}
max_replication_slots = 16
max_wal_senders = 16
fsync = off
""")
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\n")
        if self.as_postgres:
            for path in glob.glob(os.path.join(self.data, "*.conf")):
                shutil.chown(path, "postgres", "postgres")
        # The server inherits pg_ctl's output: a log file, never a pipe this harness would wait on.
        self._run(f"{self.bin}/pg_ctl", "-D", self.data, "-l", os.path.join(self.directory, "log"), "-w", "-t", "60", "start",
                  capture=False)

    def _run(self, *args: str, capture: bool = True) -> str:
        command = ["runuser", "-u", "postgres", "--", *args] if self.as_postgres else list(args)
        # From `/`: PostgreSQL's programs warn when the postgres user cannot enter the current
        # directory (a 0700 mktemp clone), and the warning would be read as output.
        result = subprocess.run(command, stdin=subprocess.DEVNULL, cwd="/",
                                stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                                stderr=subprocess.STDOUT if capture else subprocess.DEVNULL, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stdout}")
        return result.stdout or ""

    def url(self, database: str, user: str = "postgres", password: str = "postgres") -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}?sslmode=disable"

    def connect(self, database: str = "postgres", autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", password="postgres", dbname=database,
                               autocommit=autocommit)

    def execute(self, sql: str, database: str = "postgres") -> list[tuple]:
        with self.connect(database) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def create_database(self, name: str) -> None:
        self.execute(f'CREATE DATABASE "{name}"')

    def slots(self) -> list[str]:
        return [row[0] for row in self.execute("SELECT slot_name FROM pg_replication_slots ORDER BY 1")]

    def wait_slot_inactive(self, slot: str, timeout: float = 10.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            rows = self.execute(f"SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'")
            if not rows or not rows[0][0]:
                return
            time.sleep(0.1)
        raise AssertionError(f"slot {slot} still active after {timeout}s")

    def stop(self) -> None:
        try:
            self._run(f"{self.bin}/pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        except Exception:
            pass
        shutil.rmtree(self.directory, ignore_errors=True)
