"""Fleet workers through failures: PostgreSQL restarted under a running worker, and a worker
killed with SIGKILL in the middle of a poll (another worker takes its account over)."""

from __future__ import annotations

import asyncio
import collections
import re
import signal
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.fleet.test_fleet_claims import terminate_holder
from tests.fleet.test_fleet_daemon import environment, fleet_rc, mail_for, on_server, results
from tests.fleet.test_fleet_workers import locking_dovecot  # noqa: F401 (a fixture)
from tests.support.dovecot import Dovecot
from tests.support.mta import Sink, SlowSink, running_mta
from tests.support.postfixadmin import insert_row
from tests.support.postgres import Postgres

pytestmark = [pytest.mark.dovecot, pytest.mark.slow]


async def start_worker(
    home: Path, dsn: str, dovecot: Dovecot, sink: Sink
) -> asyncio.subprocess.Process:
    home.mkdir(exist_ok=True)
    rc = fleet_rc(home, dovecot, sink)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fetchd", "--fleet", dsn, "-N", "-f", str(rc),
        env=environment(home), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


async def until(condition: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not in time: {what}"
        await asyncio.sleep(0.1)


def message_ids(sink: Sink) -> collections.Counter[str]:
    return collections.Counter(
        next(line for line in m.decode().split("\r\n") if line.startswith("Message-ID:"))
        for m in sink.received
    )


async def test_postgresql_restarted_under_a_running_worker(
    dovecot: Dovecot, postgres_server: Postgres, postfix_db: str, tmp_path: Path
) -> None:
    """PostgreSQL goes away for a few seconds while the worker runs: the worker stays up,
    deletes nothing it could not record, and once the database is back it carries on: new
    mail is delivered (once) and returned_text written again."""
    dovecot.add_user("pr0", "pr0-Secret")
    mail_for(dovecot, "pr0", 0)
    with psycopg.connect(postfix_db, autocommit=True) as conn:
        row = insert_row(conn, mailbox="pr0@local.test", src_server=dovecot.host,
                         src_user="pr0", src_password="pr0-Secret", poll_time=0)  # fmt: skip
    async with running_mta() as sink:
        worker = await start_worker(tmp_path / "w", postfix_db, dovecot, sink)
        try:
            await until(lambda: len(sink.received) == 1, "the first message")
            await until(
                lambda: (results(postfix_db)[row][0] or "").startswith("fetchd: 1 "), "text"
            )
            await asyncio.to_thread(postgres_server.restart, 3.0)
            mail_for(dovecot, "pr0", 1)
            await until(lambda: len(sink.received) == 2, "the message sent while it was down")
            await until(lambda: on_server(dovecot, "pr0") == 0, "its deletion")
            await asyncio.sleep(2)
            assert worker.returncode is None, "the worker stopped"
        finally:
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)
            out = (await asyncio.wait_for(worker.communicate(), 30))[0].decode()
    assert sorted(message_ids(sink).values()) == [1, 1]
    assert "internal error" not in out and "Traceback" not in out
    assert "fleet database" in out  # the outage was reported
    assert results(postfix_db)[row][0] is not None


async def test_a_killed_worker_s_account_is_taken_over(
    dovecot: Dovecot, postfix_db: str, tmp_path: Path
) -> None:
    """Worker one is killed (SIGKILL) while it delivers an account's mail; PostgreSQL ends its
    session and so its claim, worker two takes the account over: all mail arrives, at most one
    message twice (the one being delivered when the worker died)."""
    dovecot.add_user("kx0", "kx0-Secret")
    for n in range(20):
        mail_for(dovecot, "kx0", n)
    with psycopg.connect(postfix_db, autocommit=True) as conn:
        insert_row(conn, mailbox="kx0@local.test", src_server=dovecot.host,
                   src_user="kx0", src_password="kx0-Secret", poll_time=0)  # fmt: skip
    async with running_mta(SlowSink(delay=0.3)) as sink:
        one = await start_worker(tmp_path / "one", postfix_db, dovecot, sink)
        two: asyncio.subprocess.Process | None = None
        try:
            await until(lambda: len(sink.received) >= 3, "worker one under way")
            two = await start_worker(tmp_path / "two", postfix_db, dovecot, sink)
            await asyncio.sleep(1.5)  # worker two is up and finds the account claimed
            one.kill()
            assert 3 <= len(message_ids(sink)) < 20, "worker one was not killed mid-poll"
            await one.wait()
            await until(lambda: len(message_ids(sink)) == 20, "all twenty messages", 60)
            await until(lambda: on_server(dovecot, "kx0") == 0, "all deleted")
        finally:
            for worker in (one, two):
                if worker is not None and worker.returncode is None:
                    worker.send_signal(signal.SIGTERM)
                if worker is not None:
                    await asyncio.wait_for(worker.communicate(), 30)
    twice = [ident for ident, count in message_ids(sink).items() if count > 1]
    assert len(twice) <= 1, twice
    with psycopg.connect(postfix_db, autocommit=True) as conn:
        [(last_worker,)] = conn.execute("SELECT worker FROM fetchd.polls").fetchall()
    assert last_worker.endswith(f":{two.pid}") if two else False


async def test_a_worker_whose_claim_was_killed_deletes_nothing(
    locking_dovecot: Dovecot,  # noqa: F811 (the fixture imported above)
    postfix_db: str,
    tmp_path: Path,
) -> None:
    """PostgreSQL ends worker one's claim session (pg_terminate_backend) while it delivers an
    account's mail and the worker lives on: it abandons its POP3 session with nothing deleted
    (Dovecot logs del=0 for it), worker two takes the account over only once worker one has
    left (this Dovecot refuses a second concurrent session of the user, and logs it: it never
    does), and all 20 messages arrive, at most one twice."""
    dovecot = locking_dovecot
    dovecot.add_user("lc0", "lc0-Secret")
    for n in range(20):
        mail_for(dovecot, "lc0", n)
    offset = dovecot.log_offset()
    with psycopg.connect(postfix_db, autocommit=True) as conn:
        row = insert_row(conn, mailbox="lc0@local.test", src_server=dovecot.host,
                         src_user="lc0", src_password="lc0-Secret", poll_time=0)  # fmt: skip
    async with running_mta(SlowSink(delay=0.3)) as sink:
        one = await start_worker(tmp_path / "one", postfix_db, dovecot, sink)
        two: asyncio.subprocess.Process | None = None
        try:
            await until(lambda: len(sink.received) >= 3, "worker one under way")
            two = await start_worker(tmp_path / "two", postfix_db, dovecot, sink)
            await asyncio.sleep(1.5)  # worker two is up and finds the account claimed
            await asyncio.to_thread(terminate_holder, postfix_db, row)
            assert len(message_ids(sink)) < 20, "worker one was done before its claim ended"
            await until(lambda: len(message_ids(sink)) == 20, "all twenty messages", 60)
            await until(lambda: on_server(dovecot, "lc0") == 0, "all deleted")
            assert one.returncode is None, "worker one stopped"
        finally:
            for worker in (one, two):
                if worker is not None and worker.returncode is None:
                    worker.send_signal(signal.SIGTERM)
            outs = [
                (await asyncio.wait_for(w.communicate(), 30))[0].decode() for w in (one, two) if w
            ]
    log = dovecot.log_since(offset)
    assert "Maximum number of connections" not in log, "two sessions of lc0 at once"
    ends = re.findall(r"pop3\(lc0\).*?Disconnected.*?del=(\d+)/", log)
    assert ends and ends[0] == "0", ends  # worker one's session: nothing deleted
    assert sum(int(n) for n in ends) == 20, ends
    twice = [ident for ident, count in message_ids(sink).items() if count > 1]
    assert len(twice) <= 1, twice
    assert "claim lost" in outs[0] and "Traceback" not in outs[0] + outs[1]
