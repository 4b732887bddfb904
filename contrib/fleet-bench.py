"""Fleet-mode benchmark: N PostfixAdmin rows, one new message each, on one private Dovecot and a
private PostgreSQL (the test suite's, from tests/support); the time until every message is
delivered to an in-process aiosmtpd MTA with 1, 2, ... workers (each with --metrics: polls per
worker from its scrape), each worker's peak RSS, and PostgreSQL transactions per message
(pg_stat_database; a statement outside a transaction is one round trip, the UID store's
transactions add a BEGIN and a COMMIT each, so round trips are somewhat more). With
``--fetchmail-pl ROWS``, also PostfixAdmin's fetchmail.pl loop run with the real fetchmail
(our own rendition of it, below), extrapolated to 2,000 rows.

    .venv/bin/python contrib/fleet-bench.py --accounts 200 --workers 1 2
    .venv/bin/python contrib/fleet-bench.py --accounts 300 --workers --fetchmail-pl 300

Figures (2 cores shared with other jobs; Dovecot, PostgreSQL, the MTA and the workers all on
them, so more workers do not add CPU here), 2,000 accounts, one message each:
1 worker 46.2 s (43 accounts/s), 2 workers 60.9 s, 3 workers 54.7 s; peak RSS 70-71 MB per
worker; polls per worker [2000], [965, 1035], [665, 669, 666]; 11.0, 12.4, 13.3 transactions
per message for the cycle; idle (every row polled) 2-5 transactions/s. fetchmail.pl's loop
with fetchmail 6.4, 300 rows (plain POP3, see below): 20.6 s, 69 ms per row, so about 137 s
for 2,000 rows, one after another, against 46 s for one fetchd worker (with STARTTLS).

Run from the repository root, as the test suite runs (root with FETCHD_TEST_USER, or a user).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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
from psycopg.rows import dict_row

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
        await asyncio.sleep(1.5)  # sessions report their statistics at most once a second
        xacts = transactions(dsn) - before
        polls = [int(scraped(port, "fetchd_polls_total")) for port in ports]
        # Then the steady state: every row polled, none due again (poll_time 10 minutes).
        await asyncio.sleep(0.5)
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


# What PostfixAdmin's ADDITIONS/fetchmail.pl does (written from a reading of it, not copied):
# under one lock, for each active row whose `date` is poll_time minutes old, a temporary rc
# file with fixed globals and one poll entry, one fetchmail process on it (with one id file
# for all rows), its output stored as returned_text; one row after another.
FETCHMAIL_PL_GLOBALS = (
    'set postmaster "postmaster"\nset nobouncemail\nset no spambounce\nset properties ""\n'
    "set syslog\n\n"
)


def fetchmail_pl_rc(row: dict[str, object], service: int, extra: str) -> str:
    """One row's rc file, as fetchmail.pl writes it. ``service`` is its (unset) src_service
    variable, given the test Dovecot's port here; ``extra`` stands for extra_options."""
    password = base64.b64decode(str(row["src_password"])).decode()
    cmd = f"user '{row['src_user']}' there with password '{password}'"
    cmd += f" is '{row['mailbox']}' here"
    cmd += " keep" if row["keep"] else ""
    cmd += " fetchall" if row["fetchall"] else ""
    cmd += f" {extra}"
    return (
        FETCHMAIL_PL_GLOBALS
        + f"poll {row['src_server']} with proto {row['protocol']} service {service}\n\t{cmd}"
    )


async def fetchmail_pl_run(pg: Postgres, dovecot: Dovecot, accounts: int) -> str:
    """The serial loop over ``accounts`` rows with the real fetchmail; the time per row."""
    from tests.support.fetchmail import run_fetchmail

    dsn = pg.dsn(pg.create_database("fmpl"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(FETCHMAIL_TABLE)
        for n in range(accounts):
            user = f"b{n}"
            mail_for(dovecot, user, 100)
            # localhost: fetchmail 6.4 matches the certificate's DNS names only, not its IP.
            insert_row(conn, mailbox=f"{user}@local.test", src_server="localhost",
                       src_user=user, src_password=f"{user}-pw", date="2000-01-01")  # fmt: skip
    home = Path(tempfile.mkdtemp(prefix="fetchmail-pl-"))
    home.chmod(0o755)
    async with running_mta() as sink:
        # extra_options: the MTA, and no TLS: fetchmail 6.4 refuses the test certificate (it
        # wants the name in its CN, trustme puts it in subjectAltName only). Plain POP3 spares
        # fetchmail the TLS handshake that fetchd's polls make: the comparison favours it.
        extra = f"smtphost 127.0.0.1/{sink.port} sslproto ''"
        began = time.monotonic()
        failed = 0
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
            rows = conn.execute(
                "SELECT * FROM fetchmail WHERE active"
                " AND date_part('epoch', now()) - date_part('epoch', date) > poll_time * 60"
            ).fetchall()
            for row in rows:
                rc = home / "fetchmail-all.rc"  # mkstemp's file: one at a time
                rc.write_text(fetchmail_pl_rc(row, dovecot.pop3_port, extra))
                rc.chmod(0o600)
                code, out = await run_fetchmail(home, rc)
                if code not in (0, 1):
                    failed += 1
                    if failed == 1:
                        print(f"fetchmail exit {code} on row {row['id']}: {out[-600:]}")
                rc.unlink()
                conn.execute(
                    "UPDATE fetchmail SET returned_text = %s, date = now() WHERE id = %s",
                    [out, row["id"]],
                )
        took = time.monotonic() - began
    per_row = took / max(len(rows), 1)
    return (
        f"fetchmail.pl's loop (real fetchmail), {len(rows)} rows: {took:.2f} s "
        f"({per_row * 1000:.0f} ms per row, {len(sink.received)} delivered, {failed} failed); "
        f"2,000 rows would take about {per_row * 2000:.0f} s per cycle"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument(
        "--fetchmail-pl",
        type=int,
        default=0,
        metavar="ROWS",
        help="also run fetchmail.pl's serial loop, with the real fetchmail, on ROWS rows",
    )
    args = parser.parse_args()
    pg, dovecot = Postgres(), Dovecot()
    pg.start()
    dovecot.start()
    try:
        for n in range(args.accounts):
            dovecot.add_user(f"b{n}", f"b{n}-pw")
        for workers in args.workers:
            print(await one_run(pg, dovecot, args.accounts, workers, args.idle_seconds), flush=True)
        if args.fetchmail_pl:
            print(await fetchmail_pl_run(pg, dovecot, args.fetchmail_pl), flush=True)
    finally:
        dovecot.stop()
        pg.stop()


if __name__ == "__main__":
    os.environ.setdefault("FETCHD_TEST_USER", "fmtest")
    asyncio.run(main())
