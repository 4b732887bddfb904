"""Fleet-mode benchmark: N PostfixAdmin rows, one new message each, on one private Dovecot and a
private PostgreSQL (the test suite's, from tests/support); the time until every message is
delivered to an in-process aiosmtpd MTA with 1, 2, ... workers, each worker's peak RSS, and
PostgreSQL transactions per message (every statement of fetchd's is one round trip).

    .venv/bin/python contrib/fleet-bench.py --accounts 200 --workers 1 2

Run from the repository root, as the test suite runs (root with FETCHD_TEST_USER, or a user).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from tests.fleet.test_fleet_daemon import environment, fleet_rc, mail_for
from tests.support.dovecot import Dovecot
from tests.support.mta import running_mta
from tests.support.postfixadmin import FETCHMAIL_TABLE, insert_row
from tests.support.postgres import Postgres


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scraped(port: int, name: str) -> float:
    """The sum of a metric's samples at a worker's --metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def transactions(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


async def one_run(
    pg: Postgres, dovecot: Dovecot, accounts: int, workers: int, idle_seconds: float
) -> str:
    dsn = pg.dsn(pg.create_database("bench"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(FETCHMAIL_TABLE)
        for n in range(accounts):
            user = f"b{n}"
            mail_for(dovecot, user, workers)
            insert_row(conn, mailbox=f"{user}@local.test", src_server=dovecot.host,
                       src_user=user, src_password=f"{user}-pw", active=False)  # fmt: skip
    home = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    async with running_mta() as sink:
        processes = []
        ports = [free_port() for _ in range(workers)]
        for w in range(workers):
            wh = home / f"w{w}"
            wh.mkdir()
            rc = fleet_rc(wh, dovecot, sink)
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "fetchd",
                    "--fleet",
                    dsn,
                    "-N",
                    "-f",
                    str(rc),
                    "--metrics",
                    f"127.0.0.1:{ports[w]}",
                    env=environment(wh),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            )
        sockets = [home / f"w{w}" / "run" / "fetchd" / "control.sock" for w in range(workers)]
        while not all(s.exists() for s in sockets):
            await asyncio.sleep(0.05)
        before = transactions(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE fetchmail SET active = true")
        began = time.monotonic()
        while len(sink.received) < accounts:
            await asyncio.sleep(0.02)
        took = time.monotonic() - began
        xacts = transactions(dsn) - before
        polls = [int(scraped(port, "fetchd_polls_total")) for port in ports]
        # Then the steady state: every row polled, none due again (poll_time 10 minutes).
        await asyncio.sleep(2)
        idle_before = transactions(dsn)
        await asyncio.sleep(idle_seconds)
        idle = (transactions(dsn) - idle_before) / idle_seconds
        rss = [peak_rss_kib(p.pid) // 1024 for p in processes]
        for p in processes:
            p.send_signal(signal.SIGTERM)
        for p in processes:
            await p.wait()
    return (
        f"{workers} worker(s), {accounts} accounts: all delivered in {took:.2f} s "
        f"({accounts / took:.1f} accounts/s); peak RSS MB {rss}; "
        f"PostgreSQL transactions {xacts} ({xacts / accounts:.1f} per message, whole cycle); "
        f"polls per worker {polls}; idle: {idle:.0f} transactions/s"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    args = parser.parse_args()
    pg, dovecot = Postgres(), Dovecot()
    pg.start()
    dovecot.start()
    try:
        for n in range(args.accounts):
            dovecot.add_user(f"b{n}", f"b{n}-pw")
        for workers in args.workers:
            print(await one_run(pg, dovecot, args.accounts, workers, args.idle_seconds), flush=True)
    finally:
        dovecot.stop()
        pg.stop()


if __name__ == "__main__":
    os.environ.setdefault("FETCHD_TEST_USER", "fmtest")
    asyncio.run(main())
