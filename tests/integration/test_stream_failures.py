"""A streamed message whose retrieval breaks off mid-body, for every deliverer and both protocols.

The fakes (tests/fakes/) hang up, or go silent until the client's timeout fires, at a chosen
octet of the message body: 0, 1, or past the first 256 KiB (the deliverer then already has the
header and a first chunk, and is in the middle of its delivery). The deliverers are real: SMTP
to aiosmtpd and to the private Postfix (its smtpd must log the aborted DATA), LMTP to aiosmtpd,
procmail into a Maildir, our Maildir writer, a BSMTP file. After the broken
poll the MTA or the file holds no message, whole or partial, the server still has it, and the
UID store has no record of it; the next poll delivers it exactly once and deletes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from fetchd.delivery.bsmtp import BSMTPDeliverer, BSMTPSettings
from fetchd.delivery.maildir import MaildirDeliverer, MaildirSettings
from fetchd.delivery.mda import MDADeliverer, MDASettings
from fetchd.delivery.result import Outcome
from fetchd.delivery.smtp import SMTPDeliverer, SMTPSettings
from fetchd.errors import FetchdError
from fetchd.imap.client import IMAPClient, Security
from fetchd.imap.source import PARTIAL_OCTETS, IMAPSource
from fetchd.message import READ_AHEAD, Message
from fetchd.net.tls import TLSSettings
from fetchd.poll import PollSettings, poll_account
from fetchd.pop3.source import POP3Account, open_pop3
from fetchd.source import MailSource
from fetchd.state import AccountState, UIDStore
from tests.fakes.imapserver import FakeIMAPServer
from tests.fakes.pop3server import FakePOP3Server, Faults
from tests.support.mta import Sink
from tests.support.postfix import DOMAIN, Postfix
from tests.support.tools import require_tool

HEAD = (
    b"From: sender@example.org\r\nTo: joe@example.org\r\nSubject: a large one\r\n"
    b"Message-ID: <large@example.org>\r\n\r\n"
)
# About 600 kB of numbered lines: past READ_AHEAD and past two IMAP parts.
MESSAGE = HEAD + b"".join(b"%08d " % i + b"y" * 68 + b"\r\n" for i in range(8000))
PAST_FIRST_CHUNK = 300_000
STALL_TIMEOUT = 1.0  # the server's silence lasts until this timeout fires
TIMEOUT = 30.0

assert max(READ_AHEAD, PARTIAL_OCTETS) < PAST_FIRST_CHUNK and len(MESSAGE) > PAST_FIRST_CHUNK * 2


@dataclass
class Target:
    """A deliverer factory and what its destination holds, as CRLF messages."""

    make: Callable[[], object]
    held: Callable[[], list[bytes]]
    added: int = 400  # octets the destination may add to the message (trace fields)
    # Until the destination has seen the aborted delivery (Postfix logs it), if it can tell.
    aborted: Callable[[], Awaitable[None]] | None = None
    delivered: Callable[[], Awaitable[None]] | None = None  # until a delivery arrived


class Counted:
    """A deliverer that notes each message handed to it, then lets the real one work."""

    def __init__(self, deliverer: object, calls: list[int]) -> None:
        self._deliverer = deliverer
        self._calls = calls

    async def deliver(
        self, message: Message, *, ready: Callable[[], Awaitable[None]] | None = None
    ) -> Outcome:
        self._calls.append(0 if message.complete else 1)
        result: Outcome = await self._deliverer.deliver(message, ready=ready)  # type: ignore[attr-defined]
        return result

    async def aclose(self) -> None:
        closing = getattr(self._deliverer, "aclose", None)
        if closing is not None:
            await closing()


def _maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def _maildir_messages(path: Path) -> list[bytes]:
    """Every file in new/, cur/ and tmp/: a half-written one counts too."""
    files = [f for sub in ("new", "cur", "tmp") for f in sorted((path / sub).iterdir())]
    return [f.read_bytes().replace(b"\n", b"\r\n") for f in files]


def _bsmtp_messages(path: Path) -> list[bytes]:
    """The DATA of each transaction in the file, dots unstuffed; a cut one as it is."""
    if not path.exists():
        return []
    found = []
    for transaction in path.read_bytes().split(b"MAIL FROM:")[1:]:
        data = transaction.partition(b"DATA\r\n")[2].removesuffix(b".\r\n")
        found.append(data.replace(b"\r\n..", b"\r\n."))
    return found


@asynccontextmanager
async def _listener(kind: type[SMTP], sink: Sink) -> AsyncIterator[Sink]:
    server = await asyncio.get_running_loop().create_server(
        lambda: kind(sink, decode_data=False, hostname="mta.test"), "127.0.0.1", 0
    )
    sink.port = server.sockets[0].getsockname()[1]
    try:
        yield sink
    finally:
        server.close()
        await server.wait_closed()


def _postfix_target(postfix: Postfix) -> Target:
    settings = SMTPSettings(
        smtphunt=(f"{postfix.host}/{postfix.port}",),
        recipients=("joe",),
        smtpaddress=DOMAIN,
        timeout=TIMEOUT,
    )
    start = len(postfix.log_text())

    async def aborted() -> None:
        """smtpd says the client left in DATA: it discards what it got."""
        for _ in range(100):
            if "lost connection after DATA" in postfix.log_text()[start:]:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"Postfix saw no aborted DATA: {postfix.log()}")

    async def delivered() -> None:
        await asyncio.to_thread(postfix.wait_for, "joe", 1)

    return Target(
        lambda: SMTPDeliverer(settings),
        lambda: [m.replace(b"\n", b"\r\n") for m in postfix.delivered("joe")],
        added=1000,  # Return-Path, Delivered-To and Postfix's own Received too
        aborted=aborted,
        delivered=delivered,
    )


@asynccontextmanager
async def target(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Target]:
    if kind == "postfix":
        yield _postfix_target(request.getfixturevalue("postfix"))
    elif kind in ("smtp", "lmtp"):
        async with _listener(SMTP if kind == "smtp" else LMTP, Sink()) as sink:
            settings = SMTPSettings(
                smtphunt=(f"127.0.0.1/{sink.port}",),
                recipients=("joe",),
                smtpaddress="example.org",
                lmtp=kind == "lmtp",
                timeout=TIMEOUT,
            )
            yield Target(lambda: SMTPDeliverer(settings), lambda: list(sink.received))
    elif kind == "mda":
        require_tool("procmail", "procmail")
        maildir = _maildir(tmp_path / "procmail")
        rc = tmp_path / "procmailrc"
        rc.write_text(f"MAILDIR={maildir}/\nDEFAULT={maildir}/\n:0\n{maildir}/\n")
        settings_mda = MDASettings(f"procmail -m {rc}", ("joe",), timeout=TIMEOUT)
        yield Target(lambda: MDADeliverer(settings_mda), lambda: _maildir_messages(maildir))
    elif kind == "maildir":
        maildir = _maildir(tmp_path / "Maildir")
        settings_md = MaildirSettings(str(maildir), "joe")
        yield Target(lambda: MaildirDeliverer(settings_md), lambda: _maildir_messages(maildir))
    else:
        path = tmp_path / "batch.bsmtp"
        settings_b = BSMTPSettings(str(path), ("joe",), smtpaddress="example.org")
        yield Target(lambda: BSMTPDeliverer(settings_b), lambda: _bsmtp_messages(path))


class Server:
    """One of the fakes with MESSAGE in it, and the way to break its next retrieval."""

    def __init__(self, protocol: str, store: UIDStore) -> None:
        self.protocol = protocol
        user = "u" if protocol == "pop3" else "alice"
        self.state: AccountState = store.account("127.0.0.1", user)
        self.pop3 = FakePOP3Server([MESSAGE])
        self.imap = FakeIMAPServer()
        self.imap.add(MESSAGE)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Server]:
        if self.protocol == "pop3":
            async with self.pop3:
                yield self
        else:
            await self.imap.start()
            try:
                yield self
            finally:
                await self.imap.stop()

    def break_at(self, octet: int | None, stall: bool) -> None:
        """Cut (or stall) the next retrievals ``octet`` octets into the body; None: heal."""
        if self.protocol == "pop3":
            self.pop3.faults = Faults(
                cut_retr=None if octet is None else 1,
                cut_at=None if octet is None else len(b"+OK\r\n") + len(HEAD) + octet,
                cut_stalls=stall,
            )
        else:
            self.imap.cut_uid = None if octet is None else 1
            self.imap.cut_at = len(HEAD) + (octet or 0)
            self.imap.cut_stalls = stall

    def on_server(self) -> list[bytes]:
        """What the server would still serve: not deleted (POP3) or not flagged \\Deleted."""
        if self.protocol == "pop3":
            return list(self.pop3.messages)
        return [m.body for m in self.imap.messages if "\\Deleted" not in m.flags]

    def opener(self, timeout: float) -> Callable[[], Awaitable[MailSource]]:
        async def open_source() -> MailSource:
            if self.protocol == "pop3":
                account = POP3Account(
                    "127.0.0.1",
                    self.pop3.port,
                    "u",
                    "p",
                    label="u@127.0.0.1",
                    tls=TLSSettings(sslproto=""),
                    timeout=timeout,
                )
                return await open_pop3(account)
            client = await IMAPClient.connect(
                "127.0.0.1",
                self.imap.port,
                security=Security.PLAIN,
                timeout=timeout,
                plaintext_password_allowed=True,
            )
            await client.login("alice", "secret")
            source = await IMAPSource.open(
                client, "INBOX", label="alice@127.0.0.1", recorded=self.state.delivered
            )
            self.state.set_uidvalidity(source.uidvalidity)
            return source

        return open_source


async def poll(server: Server, deliverer: Counted, timeout: float = TIMEOUT) -> int:
    try:
        result = await poll_account(server.opener(timeout), deliverer, server.state, PollSettings())
    finally:
        await deliverer.aclose()
    return result.delivered


@pytest.fixture
def store(tmp_path: Path) -> Iterator[UIDStore]:
    with UIDStore.open(tmp_path / "uids.sqlite3") as opened:
        yield opened


FAULTS = [
    pytest.param(0, False, id="drop-at-0"),
    pytest.param(1, False, id="drop-at-1"),
    pytest.param(PAST_FIRST_CHUNK, False, id="drop-past-first-chunk"),
    pytest.param(PAST_FIRST_CHUNK, True, id="stall-past-first-chunk"),
]


@pytest.mark.parametrize("octet,stall", FAULTS)
@pytest.mark.parametrize("protocol", ["pop3", "imap"])
@pytest.mark.parametrize("kind", ["smtp", "postfix", "lmtp", "mda", "maildir", "bsmtp"])
async def test_a_retrieval_broken_mid_body_delivers_nothing_and_the_next_poll_once(
    store: UIDStore,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    kind: str,
    protocol: str,
    octet: int,
    stall: bool,
) -> None:
    """Dropped or stalled at 0, 1 or 300,000 octets into the body: no whole or partial message
    at the destination, the message still on the server and unrecorded; the next poll
    delivers it once."""
    server = Server(protocol, store)
    async with target(kind, tmp_path, request) as destination, server.running():
        server.break_at(octet, stall)
        calls: list[int] = []
        with pytest.raises(FetchdError):
            await poll(
                server,
                Counted(destination.make(), calls),
                timeout=STALL_TIMEOUT if stall else TIMEOUT,
            )
        # Past the read-ahead the deliverer had the message, streaming; before it, nothing.
        assert calls == ([1] if octet > READ_AHEAD else [])
        if calls and destination.aborted is not None:
            await destination.aborted()
        assert destination.held() == []
        assert server.on_server() == [MESSAGE]
        assert not server.state.delivered()

        server.break_at(None, False)
        assert await poll(server, Counted(destination.make(), calls)) == 1
        if destination.delivered is not None:
            await destination.delivered()
        held = destination.held()
        assert len(held) == 1
        assert held[0].endswith(MESSAGE) and len(held[0]) - len(MESSAGE) < destination.added
        assert server.on_server() == []
        if protocol == "imap":
            assert server.imap.messages == []  # expunged, not only flagged
