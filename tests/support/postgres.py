"""A private PostgreSQL cluster for the test suite: its own data directory, made by ``initdb``
and run by ``pg_ctl`` in a temporary directory, listening on a Unix socket only (no TCP port at
all, ``listen_addresses = ''``).

As root (CI) the cluster belongs to FETCHD_TEST_USER (default ``fmtest``): PostgreSQL refuses to
run as root. Its superuser has that user's name and logs in over the socket with ``trust``
(nothing but this machine's processes can reach the socket, and its directory is ours). Tests
get a fresh database each (``create_database``), so nothing leaks between them.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

PG_BIN = Path(os.environ.get("FETCHD_PG_BIN", "/usr/lib/postgresql/15/bin"))
INITDB = PG_BIN / "initdb"
PG_CTL = PG_BIN / "pg_ctl"


class Postgres:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="fetchd-pg-"))
        self.root.chmod(0o755)  # the cluster's owner must get in when we are root
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.logfile = self.root / "postgres.log"
        self.port = 5432  # only names the socket file (.s.PGSQL.5432); nothing listens on TCP
        self._names = itertools.count()
        if os.geteuid() == 0:
            self.owner = pwd.getpwnam(os.environ.get("FETCHD_TEST_USER", "fmtest"))
        else:
            self.owner = pwd.getpwuid(os.geteuid())
        self.superuser = self.owner.pw_name

    def _as_owner(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", self.owner.pw_name, "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, check=False, cwd=self.root)

    def start(self) -> None:
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            for path in (self.root, self.socket_dir):
                os.chown(path, self.owner.pw_uid, self.owner.pw_gid)
        made = self._as_owner(
            [str(INITDB), "-D", str(self.data), "-U", self.superuser, "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync"]
        )  # fmt: skip
        if made.returncode != 0:
            raise RuntimeError(f"initdb failed: {made.stdout}{made.stderr}")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "listen_addresses = ''\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                f"port = {self.port}\n"
                "fsync = off\n"  # a test cluster: speed over surviving a power cut
                "full_page_writes = off\n"
                "max_connections = 200\n"
                "shared_buffers = 16MB\n"
            )
        self._pg_ctl_start()

    def _pg_ctl_start(self) -> None:
        started = self._as_owner(
            [str(PG_CTL), "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "30",
             "start"]
        )  # fmt: skip
        if started.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {started.stdout}{started.stderr}{self.log()}")

    def restart(self, down_for: float = 0.0) -> None:
        """Stop the server (fast: sessions are cut), wait ``down_for`` seconds, start it."""
        self._as_owner([str(PG_CTL), "-D", str(self.data), "-m", "fast", "-w", "stop"])
        time.sleep(down_for)
        self._pg_ctl_start()

    def dsn(self, database: str = "postgres", user: str | None = None) -> str:
        """A libpq URL for ``database`` over the socket (the socket directory as ``host``)."""
        return f"postgresql://{user or self.superuser}@/{database}?host={self.socket_dir}"

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; its name."""
        import psycopg

        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")[-4000:] if self.logfile.exists() else ""

    def stop(self) -> None:
        if self.data.exists():
            self._as_owner([str(PG_CTL), "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)
