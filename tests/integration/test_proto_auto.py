"""`proto auto` (an rc entry with no `proto`, as in the README's guide) end to end against a real
Dovecot, next to what the real fetchmail 6.4 does with the same entry.

Three servers: one whose IMAP answers; one with no IMAP at all (connection refused on 143) and
POP3 on 110; and a port that speaks only POP3. fetchmail runs as FETCHD_TEST_USER (default
``fmtest``), both without TLS on loopback (``sslproto ''``: fetchmail 6.4 does not read the IP
address in trustme's certificate), and with `keep`.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.command import run_fetchd
from tests.support.dovecot import Dovecot
from tests.support.fetchmail import fetchmail_binary, oracle_user
from tests.support.mta import running_mta

pytestmark = [pytest.mark.dovecot, pytest.mark.fetchmail]

MESSAGE = b"Subject: auto\r\nMessage-ID: <auto@example.org>\r\n\r\nbody\r\n"


def _rc(dovecot: Dovecot, port: str, smtp_port: int) -> str:
    return (
        f"poll {dovecot.host} {port} timeout 5\n"
        f'  user {dovecot.user} password "{dovecot.password}" is joe here keep\n'
        f"  sslproto '' smtphost 127.0.0.1/{smtp_port}\n"
    )


async def _fetchmail(rc_text: str) -> tuple[int, str]:
    """The real fetchmail, verbose, on ``rc_text``: its exit status and output."""
    user = oracle_user()
    home = Path(tempfile.mkdtemp(prefix="fetchd-auto-"))
    try:
        home.chmod(0o755)
        rc = home / "fetchmailrc"
        rc.write_text(rc_text)
        rc.chmod(0o600)
        command = [fetchmail_binary(), "-f", str(rc), "--nosyslog", "-N", "-v"]
        command += ["-i", str(home / "fetchids")]
        if os.geteuid() == 0:
            os.chown(home, user.pw_uid, user.pw_gid)
            os.chown(rc, user.pw_uid, user.pw_gid)
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            command = [runuser, "-u", user.pw_name, "--", "env", f"HOME={home}", *command]
        process = await asyncio.create_subprocess_exec(
            *command,
            env={"HOME": str(home), "LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None
        return process.returncode, out.decode("utf-8", "replace")
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def _both(dovecot: Dovecot, port: str, tmp_path: Path) -> dict[str, tuple[int, str, int]]:
    """Each tool on a mailbox holding MESSAGE: exit status, output, messages it delivered."""
    results = {}
    for tool in ("fetchmail", "fetchd"):
        dovecot.reset()
        dovecot.deliver(MESSAGE)
        async with running_mta() as sink:
            rc_text = _rc(dovecot, port, sink.port)
            if tool == "fetchmail":
                code, out = await _fetchmail(rc_text)
            else:
                rc = tmp_path / "fetchmailrc"
                rc.write_text(rc_text)
                rc.chmod(0o600)
                code, out = await run_fetchd(tmp_path, rc, "-v")
            results[tool] = (code, out, len(sink.received))
        if results[tool][2]:
            assert dovecot.messages() == [MESSAGE], "keep: the message stays on the server"
    return results


@pytest.fixture
def no_imap_dovecot() -> Iterator[Dovecot]:
    """POP3 on 110 and 995 of a loopback address of its own, and nothing on 143."""
    if os.geteuid() != 0:
        pytest.skip("the standard POP3 port 110 needs root")
    host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    dovecot = Dovecot(host=host, pop3_only_on_110=True)
    dovecot.start()
    yield dovecot
    dovecot.stop()


async def test_imap_answers(dovecot: Dovecot, tmp_path: Path) -> None:
    """The IMAP port answers: both tools poll it over IMAP and deliver the message."""
    results = await _both(dovecot, f"port {dovecot.imap_port}", tmp_path)
    code, out, delivered = results["fetchmail"]
    assert (code, delivered) == (0, 1), out
    assert "(protocol IMAP)" in out and "IMAP> A0002 SELECT" in out, out
    code, out, delivered = results["fetchd"]
    assert (code, delivered) == (0, 1), out
    assert "POP3" not in out, out
    assert "1 message for alice at 127.0.0.1" in out, out


async def test_imap_refused_and_pop3_answers(no_imap_dovecot: Dovecot, tmp_path: Path) -> None:
    """IMAP's port 143 refuses the connection and POP3 answers on 110. fetchmail 6.4 gives up
    after the refused IMAP connection (exit 2, nothing fetched); fetchd goes on to POP3 and
    delivers: a deliberate difference, so an entry with no `proto` works on a POP3-only host."""
    results = await _both(no_imap_dovecot, "", tmp_path)
    code, out, delivered = results["fetchmail"]
    assert (code, delivered) == (2, 0), out
    assert f"[{no_imap_dovecot.host}/143] failed: Connection refused" in out, out
    assert "POP3>" not in out, out
    code, out, delivered = results["fetchd"]
    assert (code, delivered) == (0, 1), out
    assert "POP3> RETR 1" in out, out


async def test_a_port_that_speaks_only_pop3(dovecot: Dovecot, tmp_path: Path) -> None:
    """`port` names Dovecot's POP3 port: auto speaks IMAP to it and neither tool delivers or
    tries POP3 there. fetchmail sends CAPABILITY after the "+OK" greeting and waits for its
    timeout (exit 2); fetchd refuses the greeting at once (exit 4, a protocol error)."""
    results = await _both(dovecot, f"port {dovecot.pop3_port}", tmp_path)
    code, out, delivered = results["fetchmail"]
    assert (code, delivered) == (2, 0), out
    assert "IMAP< +OK Dovecot" in out and "POP3>" not in out, out
    code, out, delivered = results["fetchd"]
    assert (code, delivered) == (4, 0), out
    assert "not an IMAP greeting" in out and "POP3>" not in out, out
    assert dovecot.messages() == [MESSAGE]
