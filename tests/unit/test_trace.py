"""The Received line fetchd prepends (fetchmail's layout) and the host name it uses."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

import pytest

from fetchd import __version__
from fetchd.delivery.headers import Trace, tracepolls_note
from fetchd.net.hostname import this_host

WHEN = datetime(2026, 12, 1, 6, 0, 0, tzinfo=UTC)


def test_received_line_names_server_address_protocol_host_and_recipient() -> None:
    trace = Trace(server="pop.example.org", server_ip="192.0.2.7", protocol="IMAP")
    assert trace.received(by="vm", recipient="joe@localhost", multidrop=False, now=WHEN) == (
        b"Received: from pop.example.org [192.0.2.7]\r\n"
        b"\tby vm with IMAP (fetchd-" + __version__.encode() + b")\r\n"
        b"\tfor <joe@localhost> (single-drop); Tue, 01 Dec 2026 06:00:00 +0000\r\n"
    )


def test_several_recipients_give_no_for_clause() -> None:
    """fetchmail names the recipient only when there is one; the date then stands alone."""
    trace = Trace(server="pop.example.org")
    lines = trace.received(by="vm", recipient=None, multidrop=True, now=WHEN).split(b"\r\n")
    assert lines[2] == b"\tTue, 01 Dec 2026 06:00:00 +0000"


def test_tracepolls_words_follow_the_version() -> None:
    trace = Trace(server="pop.example.org", polling=tracepolls_note("label", "joe", "Lists"))
    line = trace.received(by="vm", recipient="joe", multidrop=True, now=WHEN).split(b"\r\n")[1]
    assert line == b"\tby vm with POP3 (fetchd-%s polling label account joe folder Lists)" % (
        __version__.encode()
    )


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        (None, "polling p account u"),
        ("", "polling p account u"),
        ("F", "polling p account u folder F"),
    ],
)
def test_tracepolls_note(folder: str | None, expected: str) -> None:
    assert tracepolls_note("p", "u", folder) == expected


def test_invisible_adds_nothing() -> None:
    assert (
        Trace(server="x", invisible=True).received(by="vm", recipient="j", multidrop=False) == b""
    )


def test_this_host_is_fetchmails_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dotless name is made canonical through the resolver, and kept when it is unknown."""
    this_host.cache_clear()
    monkeypatch.setattr(socket, "gethostname", lambda: "vm")
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda *a, **k: [(socket.AF_INET, 1, 6, "vm.example.net", ("", 0))]
    )
    assert this_host() == "vm.example.net"
    this_host.cache_clear()

    def unknown(*args: object, **kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "unknown")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    assert this_host() == "vm"
    this_host.cache_clear()
    monkeypatch.setattr(socket, "gethostname", lambda: "box.example.org")
    assert this_host() == "box.example.org"
    this_host.cache_clear()


def test_no_name_can_start_a_header_of_its_own() -> None:
    """A folder or label from the rc file may hold CR and LF through its escapes."""
    trace = Trace(server="pop\r\nX-Evil: 1", polling=tracepolls_note("p", "u", "F\r\nBcc: x"))
    text = trace.received(by="vm", recipient="joe\n", multidrop=False, now=WHEN)
    lines = text.split(b"\r\n")
    assert len(lines) == 4 and lines[3] == b""  # three lines, each ended once
    assert b"pop__X-Evil: 1" in lines[0] and b"folder F__Bcc: x)" in lines[1]


async def test_true_name_is_the_resolvers_canonical_name_and_first_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """fetchmail's truename/trueaddr with `dns`; the rc file's name and no address without."""
    import asyncio

    from fetchd.config.model import Server
    from fetchd.errors import DNSError
    from fetchd.pipeline import server_true_name as _true_name

    server = Server(pollname="pop.example.org")

    async def resolve(host: str, port: object, **kwargs: object) -> list[tuple[Any, ...]]:
        assert host == "pop.example.org"
        return [(socket.AF_INET, 1, 6, "mail.example.net", ("192.0.2.7", 0))]

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", resolve)
    assert await _true_name(server) == ("mail.example.net", "192.0.2.7")
    assert await _true_name(Server(pollname="pop.example.org", dns=False)) == (
        "pop.example.org",
        None,
    )

    async def fail(host: str, port: object, **kwargs: object) -> list[tuple[Any, ...]]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(loop, "getaddrinfo", fail)
    with pytest.raises(DNSError, match=r"canonical DNS name of pop.example.org \(pop.example"):
        await _true_name(server)


async def test_true_name_without_addrconfig_when_only_loopback_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AI_ADDRCONFIG finds nothing for "localhost" on a machine with only a loopback address."""
    import asyncio

    from fetchd.config.model import Server
    from fetchd.pipeline import server_true_name as _true_name

    async def resolve(host: str, port: object, **kwargs: Any) -> list[tuple[Any, ...]]:
        if kwargs["flags"] & socket.AI_ADDRCONFIG:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, 1, 6, "localhost", ("127.0.0.1", 0))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolve)
    assert await _true_name(Server(pollname="localhost")) == ("localhost", "127.0.0.1")
