"""Two ``fetchd --fleet`` workers on one database: an account is never polled by both at once
(Dovecot itself refuses a second POP3 session of a user from one address
while one is open, ``mail_max_userip_connections = 1``, and logs it), and every message is
delivered once although every row says ``keep`` and each worker has its own local state (the
UID store is PostgreSQL's)."""

from __future__ import annotations

import asyncio
import collections
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
import pytest

from tests.fleet.test_fleet_daemon import environment, fleet_rc, mail_for, results, until
from tests.support.dovecot import DOVECOT, Dovecot
from tests.support.mta import Sink, SlowSink, running_mta
from tests.support.postfixadmin import insert_row
from tests.support.tools import in_ci

pytestmark = [pytest.mark.dovecot, pytest.mark.slow]

USERS = 20
MESSAGES = 8


@pytest.fixture(scope="module")
def locking_dovecot() -> Iterator[Dovecot]:
    """A Dovecot of its own that refuses a user's second concurrent POP3 session ("Maximum
    number of connections from user+IP exceeded"): two workers polling one account at once
    cannot go unnoticed."""
    if not Path(DOVECOT).exists():
        if in_ci():
            pytest.fail("Dovecot is missing (.ci/run installs dovecot-pop3d)")
        pytest.skip("Dovecot is not installed")
    server = Dovecot(extra_config="mail_max_userip_connections = 1\n")
    server.start()
    yield server
    server.stop()


async def test_two_workers_share_the_rows_never_one_account_twice(
    locking_dovecot: Dovecot, postfix_db: str, tmp_path: Path
) -> None:
    """Two workers poll 20 keep rows every cycle for a while: all 40 messages arrive exactly
    once, no poll meets a mailbox locked by the other worker's session, both workers poll,
    and every row's returned_text is written."""
    dovecot = locking_dovecot
    users = {f"w{n}": f"w{n}-Secret" for n in range(USERS)}
    for user, password in users.items():
        dovecot.add_user(user, password)
        for n in range(MESSAGES):
            mail_for(dovecot, user, n)
    with psycopg.connect(postfix_db, autocommit=True) as conn:
        rows = [
            insert_row(conn, mailbox=f"{user}@local.test", src_server=dovecot.host,
                       src_user=user, src_password=password, keep=True, poll_time=0,
                       active=False)
            for user, password in users.items()
        ]  # fmt: skip
    # 0.1 s per message at the MTA: a poll lasts long enough that two at once would overlap.
    async with running_mta(SlowSink(delay=0.1)) as sink:
        workers = []
        for name in ("one", "two"):
            home = tmp_path / name
            home.mkdir()
            rc = fleet_rc(home, dovecot, sink)
            workers.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "fetchd",
                    "--fleet",
                    postfix_db,
                    "-N",
                    "-f",
                    str(rc),
                    env=environment(home),
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
            )
        try:
            # Both up before the rows go on: they then meet every row in the same second.
            sockets = [
                tmp_path / name / "run" / "fetchd" / "control.sock" for name in ("one", "two")
            ]
            deadline = time.monotonic() + 30
            while not all(path.exists() for path in sockets):
                assert time.monotonic() < deadline, "the workers did not start"
                await asyncio.sleep(0.05)
            with psycopg.connect(postfix_db, autocommit=True) as conn:
                conn.execute("UPDATE fetchmail SET active = true")
            deadline = time.monotonic() + 60
            while len(sink.received) < USERS * MESSAGES:
                assert time.monotonic() < deadline, f"only {len(sink.received)} arrived"
                await asyncio.sleep(0.1)
            await asyncio.sleep(4)  # four more cycles of both workers, every row due in each
        finally:
            for worker in workers:
                if worker.returncode is None:
                    worker.send_signal(signal.SIGTERM)
            outputs = [(await asyncio.wait_for(w.communicate(), 30))[0].decode() for w in workers]
    ids = collections.Counter(
        next(line for line in m.decode().split("\r\n") if line.startswith("Message-ID:"))
        for m in sink.received
    )
    assert len(ids) == USERS * MESSAGES
    assert [ident for ident, count in ids.items() if count > 1] == []
    for output in outputs:
        assert "IN-USE" not in output and "busy" not in output, output[-3000:]
    written = results(postfix_db)
    assert all(written[row][0] for row in rows)
    assert not [written[row][0] for row in rows if "exit" in (written[row][0] or "")]
    with psycopg.connect(postfix_db, autocommit=True) as conn:
        polled_by = conn.execute("SELECT DISTINCT worker FROM fetchd.polls").fetchall()
    # Dovecot's record of a login while the user's other session was open.
    log = dovecot.log_since(0)
    assert "Maximum number of connections" not in log
    logins = collections.Counter(re.findall(r"Login: user=<(w\d+)>", log))
    assert set(logins) == set(users) and min(logins.values()) >= 4  # polled over and over
    assert len(polled_by) == 2, polled_by


def pop3_sessions(dovecot: Dovecot) -> int:
    """The POP3 sessions this Dovecot serves now (verbose_proctitle names each one's user)."""
    found = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            title = cmdline.read_bytes().decode(errors="replace")
        except OSError:
            continue
        found += f"{dovecot.instance}/pop3 [" in title
    return found


async def test_the_server_connection_cap_holds_across_workers(
    locking_dovecot: Dovecot, postfix_db: str, tmp_path: Path
) -> None:
    """With --fleet-server-connections 3, two workers (8 polls at once each, by themselves)
    never have more than 3 sessions open at the one server, measured at the server, and all
    the mail still arrives."""
    dovecot = locking_dovecot
    users = {f"c{n}": f"c{n}-Secret" for n in range(16)}
    for user, password in users.items():
        dovecot.add_user(user, password)
        for n in range(3):
            mail_for(dovecot, user, n)
    with psycopg.connect(postfix_db, autocommit=True) as conn:
        for user, password in users.items():
            insert_row(conn, mailbox=f"{user}@local.test", src_server=dovecot.host,
                       src_user=user, src_password=password, active=False)  # fmt: skip
    most = 0
    async with running_mta(SlowSink(delay=0.1)) as sink:
        workers = []
        for name in ("one", "two"):
            home = tmp_path / name
            home.mkdir()
            rc = fleet_rc(home, dovecot, sink)
            workers.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "fetchd", "--fleet", postfix_db, "-N", "-f", str(rc),
                    "--fleet-server-connections", "3", env=environment(home),
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                )
            )  # fmt: skip
        try:
            sockets = [tmp_path / n / "run" / "fetchd" / "control.sock" for n in ("one", "two")]
            while not all(path.exists() for path in sockets):
                await asyncio.sleep(0.05)
            with psycopg.connect(postfix_db, autocommit=True) as conn:
                conn.execute("UPDATE fetchmail SET active = true")
            deadline = time.monotonic() + 60
            while len(sink.received) < len(users) * 3:
                assert time.monotonic() < deadline, f"only {len(sink.received)} arrived"
                most = max(most, pop3_sessions(dovecot))
                await asyncio.sleep(0.01)
        finally:
            for worker in workers:
                if worker.returncode is None:
                    worker.send_signal(signal.SIGTERM)
            for worker in workers:
                await asyncio.wait_for(worker.communicate(), 30)
    assert 2 <= most <= 3, most


THREE_USERS = 250


def fleet_worker_command(dsn: str, rc: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fetchd", "--fleet", dsn, "-N", "-f", str(rc), *extra]


async def test_three_workers_a_few_hundred_users_each_mailbox_once_at_a_time(
    locking_dovecot: Dovecot, postfix_db: str, tmp_path: Path
) -> None:
    """Three workers on one database, 250 keep rows due at every cycle (poll_time 0), so all
    three reach for every row every second: Dovecot never sees a user's second session while
    one is open (it refuses and logs one: mail_max_userip_connections = 1), every message
    arrives exactly once, every user is polled again and again, and all three workers poll
    (their --metrics endpoints count the polls)."""
    dovecot = locking_dovecot
    users = {f"t{n}": f"t{n}-Secret" for n in range(THREE_USERS)}
    for user, password in users.items():
        dovecot.add_user(user, password)
        for n in range(2):
            mail_for(dovecot, user, n)
    with psycopg.connect(postfix_db, autocommit=True) as conn:
        for user, password in users.items():
            insert_row(conn, mailbox=f"{user}@local.test", src_server=dovecot.host,
                       src_user=user, src_password=password, keep=True, poll_time=0,
                       active=False)  # fmt: skip
    offset = len(dovecot.log_since(0).encode())
    outputs: list[str] = []
    async with (
        running_mta(SlowSink(delay=0.01)) as sink,
        _metered_workers(tmp_path, dovecot, sink, postfix_db, outputs) as ports,
    ):
        with psycopg.connect(postfix_db, autocommit=True) as conn:
            conn.execute("UPDATE fetchmail SET active = true")
        deadline = time.monotonic() + 60
        while len(sink.received) < THREE_USERS * 2:
            assert time.monotonic() < deadline, f"only {len(sink.received)} arrived"
            await asyncio.sleep(0.1)

        # Then every row is polled at least once more (all three reach for each again).
        def polled_again() -> bool:
            seen = collections.Counter(
                re.findall(r"Login: user=<(t\d+)>", dovecot.log_since(offset))
            )
            return len(seen) == len(users) and min(seen.values()) >= 2

        await until(polled_again, "every user polled twice", 30)
        polls = [_polls_counted(port) for port in ports]
    for output in outputs:
        assert "IN-USE" not in output and "busy" not in output, output[-3000:]
    log = dovecot.log_since(offset)
    assert "Maximum number of connections" not in log  # the server saw no two at once
    ids = collections.Counter(
        next(line for line in m.decode().split("\r\n") if line.startswith("Message-ID:"))
        for m in sink.received
    )
    assert len(ids) == THREE_USERS * 2 and max(ids.values()) == 1
    logins = collections.Counter(re.findall(r"Login: user=<(t\d+)>", log))
    assert set(logins) == set(users) and min(logins.values()) >= 2
    assert all(count > 0 for count in polls), polls  # no worker idles
    assert sum(polls) >= sum(logins.values()) * 0.9, (polls, sum(logins.values()))


async def test_due_rows_spread_over_the_workers(
    locking_dovecot: Dovecot, postfix_db: str, tmp_path: Path
) -> None:
    """48 rows fall due at once, each poll about 0.25 s (a slow MTA): a worker claims a row
    only when it has a free connection (8), so the first worker to read the table does not
    take them all while the other two idle: each of the three polls at least 8 of them."""
    dovecot = locking_dovecot
    users = {f"s{n}": f"s{n}-Secret" for n in range(48)}
    for user, password in users.items():
        dovecot.add_user(user, password)
        mail_for(dovecot, user, 0)
    with psycopg.connect(postfix_db, autocommit=True) as conn:
        for user, password in users.items():
            insert_row(conn, mailbox=f"{user}@local.test", src_server=dovecot.host,
                       src_user=user, src_password=password, active=False)  # fmt: skip
    async with (
        running_mta(SlowSink(delay=0.25)) as sink,
        _metered_workers(tmp_path, dovecot, sink, postfix_db, []) as ports,
    ):
        with psycopg.connect(postfix_db, autocommit=True) as conn:
            conn.execute("UPDATE fetchmail SET active = true")
        await until(lambda: len(sink.received) == len(users), "every message", 60)
        # Counted as each poll ends (after its QUIT); poll_time 10 minutes: each row once.
        await until(lambda: sum(_polls_counted(p) for p in ports) == len(users), "polls")
        polls = [_polls_counted(port) for port in ports]
    assert min(polls) >= 8, polls


@asynccontextmanager
async def _metered_workers(
    tmp_path: Path, dovecot: Dovecot, sink: Sink, postfix_db: str, outputs: list[str]
) -> AsyncIterator[list[int]]:
    """Three fleet workers, each serving --metrics on a port of its own (yielded), started and
    listening; stopped with SIGTERM at the end, each one's output appended to ``outputs``."""
    names = ("one", "two", "three")
    ports = [_free_port() for _ in names]
    workers = []
    try:
        for name, port in zip(names, ports, strict=True):
            home = tmp_path / name
            home.mkdir()
            rc = fleet_rc(home, dovecot, sink)
            command = fleet_worker_command(postfix_db, rc, "--metrics", f"127.0.0.1:{port}")
            workers.append(
                await asyncio.create_subprocess_exec(
                    *command, env=environment(home), stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
            )  # fmt: skip
        for name in names:
            await until((tmp_path / name / "run" / "fetchd" / "control.sock").exists, name)
        yield ports
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            out, _ = await asyncio.wait_for(worker.communicate(), 30)
            outputs.append(out.decode())


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _polls_counted(port: int) -> int:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return int(
        sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "fetchd_polls_total"
        )
    )
