"""``fetchd --fleet DSN`` end to end: rows in a real PostgreSQL, mailboxes in a real Dovecot
(POP3 over STARTTLS), mail delivered to an aiosmtpd MTA, and the rows' ``returned_text`` and
``date`` written back; rows added, changed and deactivated while the daemon runs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.dovecot import Dovecot
from tests.support.mta import Sink, running_mta
from tests.support.postfixadmin import insert_row

pytestmark = [pytest.mark.dovecot, pytest.mark.slow]


def environment(home: Path) -> dict[str, str]:
    (home / "run").mkdir(mode=0o700, exist_ok=True)
    return {
        "HOME": str(home),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_RUNTIME_DIR": str(home / "run"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "FETCHD_SYSLOG_SOCKET": str(home / "syslog.sock"),
    }


def fleet_rc(home: Path, dovecot: Dovecot, sink: Sink) -> Path:
    """The global settings and the defaults entry every row gets: Dovecot's POP3 port (the
    table has no port column), its CA, and the MTA; one-second cycles."""
    rc = home / "fleetrc"
    rc.write_text(
        "set daemon 1\nset postmaster fleet-admin\n"
        f"defaults proto pop3 port {dovecot.pop3_port}\n"
        f'  sslcertfile "{dovecot.ca_file}" smtphost 127.0.0.1/{sink.port}\n'
    )
    rc.chmod(0o600)
    return rc


def mail_for(dovecot: Dovecot, user: str, n: int) -> bytes:
    """A message put straight into ``user``'s Maildir (as the local delivery agent would)."""
    maildir = dovecot.root / "mail" / user
    data = f"From: x@example.org\nSubject: {user} #{n}\nMessage-ID: <{user}.{n}@t>\n\nhi\n"
    target = maildir / "new" / f"{time.time_ns()}.{user}.{n}.fixture"
    target.write_text(data)
    if os.geteuid() == 0:
        os.chown(target, dovecot.uid, dovecot.gid)
    return data.replace("\n", "\r\n").encode()


def on_server(dovecot: Dovecot, user: str) -> int:
    maildir = dovecot.root / "mail" / user
    return sum(1 for sub in ("new", "cur") for _ in (maildir / sub).iterdir())


def results(dsn: str) -> dict[int, tuple[str | None, Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT id, returned_text, date FROM fetchmail").fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not in time: {what}"
        await asyncio.sleep(0.1)


async def fetchd(home: Path, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fetchd", *args, env=environment(home),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_rows_polled_results_written_and_changes_followed(
    dovecot: Dovecot, postfix_db: str, tmp_path: Path
) -> None:
    """Each active row's mail is delivered once to its mailbox and deleted on the server, its
    returned_text and date are written, a bad row gets its error there; then a row added, one
    changed (a wrong password) and one deactivated while the daemon runs take effect within a
    cycle or two, with no restart."""
    users = {f"fl{n}": f"fl{n}-Secret-{n}" for n in range(3)}
    users_list = sorted(users)
    for user, password in users.items():
        dovecot.add_user(user, password)
    sent = {user: mail_for(dovecot, user, 0) for user in users}
    with psycopg.connect(postfix_db, autocommit=True) as conn:
        rows = {
            user: insert_row(conn, mailbox=f"{user}@local.test", src_server=dovecot.host,
                             src_user=user, src_password=password, poll_time=10)
            for user, password in users.items()
        }  # fmt: skip
        bad = insert_row(conn, mailbox="z@local.test", src_server=dovecot.host, src_user="z",
                         src_password="x", extra_options="port 1")  # fmt: skip
        asleep = insert_row(conn, mailbox="s@local.test", src_server=dovecot.host,
                            src_user="fl0", src_password=users["fl0"], active=False)  # fmt: skip
        started_at = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    async with running_mta() as sink:
        rc = fleet_rc(tmp_path, dovecot, sink)
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fetchd", "--fleet", postfix_db, "-N", "-f", str(rc),
            env=environment(tmp_path), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            done = lambda: all(results(postfix_db)[r][0] for r in rows.values())  # noqa: E731
            await until(done, "returned_text of every row")
            assert sorted(sink.bodies()) == sorted(sent.values())
            assert sorted(rcpts for _, rcpts in sink.envelopes) == [
                [f"{user}@local.test"] for user in sorted(users)
            ]
            assert all(on_server(dovecot, user) == 0 for user in users)
            written = results(postfix_db)
            for user, row_id in rows.items():
                text, date = written[row_id]
                assert text == (
                    f"fetchd: 1 message for {user} at {dovecot.host} delivered to {user}@local.test"
                )
                assert date >= started_at
            assert written[bad][0] is not None
            assert written[bad][0].startswith(f"fetchd: fetchmail row {bad}: extra_options")
            assert written[asleep][0] is None

            code, status = await fetchd(tmp_path, "--status", "--json")
            assert code == 0, status
            document = json.loads(status)
            fleet = document["daemon"]["fleet"]
            assert (fleet["rows"], fleet["rows_refused"]) == (3, 1)
            assert "password" not in status.lower()
            code, table = await fetchd(tmp_path, "--status")
            assert code == 0, table
            assert "fleet: accounts from dbname=" in table and "3 rows, 1 refused" in table
            assert f"{users_list[0]}@{dovecot.host}" in table

            # While it runs: a new row, a changed password, a deactivated row.
            dovecot.add_user("fl3", "fl3-Secret-3")
            new_mail = mail_for(dovecot, "fl3", 0)
            with psycopg.connect(postfix_db, autocommit=True) as conn:
                added = insert_row(conn, mailbox="fl3@local.test", src_server=dovecot.host,
                                   src_user="fl3", src_password="fl3-Secret-3")  # fmt: skip
                conn.execute(
                    "UPDATE fetchmail SET src_password = %s WHERE id = %s",
                    ["d3Jvbmc=", rows["fl1"]],  # base64 of "wrong"
                )
                conn.execute("UPDATE fetchmail SET active = false WHERE id = %s", [rows["fl2"]])
            mail_for(dovecot, "fl2", 1)  # must stay: its row is off
            await until(lambda: len(sink.received) == 4, "the added row's mail")
            assert sink.bodies()[-1] == new_mail
            await until(
                lambda: (
                    "auth" in (results(postfix_db)[rows["fl1"]][0] or "").lower()
                    and "exit 3" in (results(postfix_db)[rows["fl1"]][0] or "")
                ),
                "the changed row's login failure in returned_text",
            )
            # The table was read again since (the changed row failed): the deactivated row is
            # no account any more, so waking it is refused and its new mail stays.
            code, out = await fetchd(tmp_path, "--poll", f"row{rows['fl2']}")
            assert code != 0 and "no account" in out, out
            code, out = await fetchd(tmp_path, "--poll", f"row{rows['fl0']}")
            assert code == 0, out
            await asyncio.sleep(2)
            assert on_server(dovecot, "fl2") == 1
            assert len(sink.received) == 4
            assert results(postfix_db)[added][0] == (
                f"fetchd: 1 message for fl3 at {dovecot.host} delivered to fl3@local.test"
            )
        finally:
            if daemon.returncode is None:
                daemon.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(daemon.communicate(), 30)
        log = out.decode()
        assert "fl1-Secret-1" not in log and "fl0-Secret-0" not in log
        assert f"fetchmail row {bad}" in log
