"""No password in clear text unless the rc file says so, loopback included (fetchmail 6.4's rule).

A server on 127.0.0.1 that offers no STLS/STARTTLS (a fault, so the scripted fakes): with any
explicit TLS option in the entry it is refused before anything is sent; with none it gets no
password; only `sslproto ''` lets the password cross in clear. Each case goes from rc-file text
through the parser and the engine's TLS settings to the POP3 or IMAP client.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from fetchd.config.parser import ParseEnvironment, parse
from fetchd.errors import AuthError, TLSError
from fetchd.imap.connect import open_imap
from fetchd.net.tls import TLSSettings
from fetchd.pipeline import tls_settings as _tls
from fetchd.pop3.source import POP3Account, open_pop3
from tests.fakes.imapserver import FakeIMAPServer
from tests.fakes.pop3server import FakePOP3Server

MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"
PIN = ":".join(["AB"] * 32)

# (what the entry says, how the refusal names it)
TLS_OPTIONS = [
    ("sslproto 'TLS1.2+'", "sslproto 'TLS1.2+'"),
    ("sslcertck", "sslcertck"),
    ("sslcertfile {ca}", "sslcertfile"),
    (f'sslfingerprint "{PIN}"', "sslfingerprint"),
]


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


def settings(option: str, protocol: str, port: int, ca_file: str) -> TLSSettings:
    """The TLS settings the engine builds for one entry written with ``option``."""
    text = (
        f"poll 127.0.0.1 proto {protocol} port {port}\n"
        f"  user u password p is u here {option.format(ca=ca_file)}\n"
    )
    env = ParseEnvironment(login="u", home="/nonexistent", rcdir=str(Path(ca_file).parent))
    [server] = parse(text, "rc", env).servers
    return _tls(server.users[0], server)


@pytest.fixture
async def pop3() -> AsyncIterator[FakePOP3Server]:
    async with FakePOP3Server([MESSAGE], user="u", password="p") as server:  # no STLS
        yield server


@pytest.fixture
async def imap() -> AsyncIterator[FakeIMAPServer]:
    server = FakeIMAPServer(user="u", password="p")  # no STARTTLS
    server.add(MESSAGE)
    await server.start()
    yield server
    await server.stop()


async def _open_pop3(server: FakePOP3Server, tls: TLSSettings) -> None:
    source = await open_pop3(POP3Account("127.0.0.1", server.port, "u", "p", "u@t", tls, 5.0))
    await source.abort()


async def _open_imap(server: FakeIMAPServer, tls: TLSSettings) -> None:
    source = await open_imap(
        host="127.0.0.1",
        port=server.port,
        user="u",
        password="p",
        label="u@t",
        tls=tls,
        timeout=5.0,
        auth="any",
        folder="INBOX",
        fetchall=False,
        recorded=None,
    )
    await source.abort()


def _imap_logged_in(server: FakeIMAPServer) -> bool:
    return any(
        b"LOGIN" in line.upper() or b"AUTHENTICATE" in line.upper() for line in server.received
    )


@pytest.mark.parametrize(("option", "named"), TLS_OPTIONS)
async def test_pop3_tls_option_refuses_a_loopback_server_without_stls(
    pop3: FakePOP3Server, ca_file: str, option: str, named: str
) -> None:
    """Any explicit TLS option makes STLS mandatory on 127.0.0.1: refused before USER/PASS."""
    tls = settings(option, "pop3", pop3.port, ca_file)
    expected = f"127.0.0.1 offers no STLS, and the rc file asks for TLS ({named})"
    with pytest.raises(TLSError, match=re.escape(expected)):
        await _open_pop3(pop3, tls)
    assert pop3.commands == ["CAPA"]  # nothing after learning there is no STLS


@pytest.mark.parametrize(("option", "named"), TLS_OPTIONS)
async def test_imap_tls_option_refuses_a_loopback_server_without_starttls(
    imap: FakeIMAPServer, ca_file: str, option: str, named: str
) -> None:
    """Any explicit TLS option makes STARTTLS mandatory on 127.0.0.1: refused before LOGIN."""
    tls = settings(option, "imap", imap.port, ca_file)
    expected = f"127.0.0.1 offers no STARTTLS, and the rc file asks for TLS ({named})"
    with pytest.raises(TLSError, match=re.escape(expected)):
        await _open_imap(imap, tls)
    assert not _imap_logged_in(imap)


async def test_pop3_without_tls_options_sends_no_password_to_loopback(
    pop3: FakePOP3Server, ca_file: str
) -> None:
    """No TLS option and no STLS: no password, even to 127.0.0.1; the error names the line."""
    tls = settings("", "pop3", pop3.port, ca_file)
    with pytest.raises(AuthError, match=re.escape("add `sslproto ''` to the entry of 127.0.0.1")):
        await _open_pop3(pop3, tls)
    assert not any(c.startswith(("USER", "PASS", "APOP", "AUTH")) for c in pop3.commands)


async def test_imap_without_tls_options_sends_no_password_to_loopback(
    imap: FakeIMAPServer, ca_file: str
) -> None:
    """No TLS option and no STARTTLS: the session goes on in clear, but LOGIN is not sent."""
    tls = settings("", "imap", imap.port, ca_file)
    with pytest.raises(AuthError, match=re.escape("add `sslproto ''` to the entry of 127.0.0.1")):
        await _open_imap(imap, tls)
    assert not _imap_logged_in(imap)
    assert imap.received  # it did go on in clear (CAPABILITY), on one connection


async def test_sslproto_empty_allows_clear_text(
    pop3: FakePOP3Server, imap: FakeIMAPServer, ca_file: str
) -> None:
    """`sslproto ''` in the entry is the one way to let the password cross in clear."""
    await _open_pop3(pop3, settings("sslproto ''", "pop3", pop3.port, ca_file))
    assert "PASS" in pop3.commands
    await _open_imap(imap, settings("sslproto ''", "imap", imap.port, ca_file))
    assert _imap_logged_in(imap)
