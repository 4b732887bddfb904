"""What the ``fetchd`` command says, in the words a user reads: a refused connection reads the
same for POP3 and IMAP, and ``-v`` shows SMTP replies as the MTA sent them."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from fetchd.demo.pop3server import DemoPOP3Server
from tests.support.command import run_fetchd

SECRET = "s3cr3t-Pa55"


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else takes it), not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _rc(home: Path, text: str) -> Path:
    rc = home / ".fetchmailrc"
    rc.write_text(text)
    rc.chmod(0o600)
    return rc


@pytest.mark.parametrize("proto", ["pop3", "imap"])
async def test_a_refused_connection_reads_the_same_for_pop3_and_imap(
    tmp_path: Path, closed_port: int, proto: str
) -> None:
    """`HOST:PORT: cannot connect: Connection refused`, without asyncio's own wording."""
    rc = _rc(
        tmp_path,
        f"poll 127.0.0.1 proto {proto} port {closed_port}\n"
        f'  user demo password "{SECRET}" is joe here sslproto ""\n',
    )
    code, out = await run_fetchd(tmp_path, rc)
    assert code == 2, out  # fetchmail's PS_SOCKET
    assert f"127.0.0.1:{closed_port}: cannot connect: Connection refused" in out, out
    assert "Connect call failed" not in out and "Errno" not in out, out
    assert SECRET not in out


class _Sink:
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 2.0.0 queued as 'A1'"


@pytest.fixture
async def mta() -> AsyncIterator[int]:
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(_Sink(), decode_data=False, hostname="mta.test"), "127.0.0.1", 0
    )
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_verbose_shows_smtp_replies_as_sent(tmp_path: Path, mta: int) -> None:
    """`SMTP< 250 2.0.0 queued as 'A1'`: the reply's own text, not a Python string literal."""
    pop = DemoPOP3Server("demo", SECRET, [b"Subject: one\r\n\r\nbody\r\n"])
    await pop.start()
    try:
        rc = _rc(
            tmp_path,
            f"poll 127.0.0.1 proto pop3 port {pop.port}\n"
            f'  user demo password "{SECRET}" is joe here smtphost 127.0.0.1/{mta}'
            ' sslproto ""\n',
        )
        code, out = await run_fetchd(tmp_path, rc, "-v")
    finally:
        await pop.stop()
    assert code == 0, out
    replies = [line for line in out.splitlines() if "SMTP< " in line]
    assert any(line.endswith("SMTP< 250 OK") for line in replies), replies  # MAIL FROM
    assert any(line.endswith("SMTP< 250 2.0.0 queued as 'A1'") for line in replies), replies
    assert not any("250 'OK'" in line or '"' in line for line in replies), replies
