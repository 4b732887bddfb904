"""IMAPSource driven by the real poll engine and UID store, against the scripted fake server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from fetchd.errors import SocketError
from fetchd.imap.client import IMAPClient, Security
from fetchd.imap.source import IMAPSource
from fetchd.poll import PollSettings, poll_account
from fetchd.selection import SelectionPolicy
from fetchd.state import AccountState, UIDStore
from tests.fakes.imapserver import FakeIMAPServer
from tests.support.messages import whole

BODIES = [b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i) for i in range(1, 4)]


@dataclass(frozen=True)
class Delivered:
    delivered: bool = True
    may_delete: bool = True
    reason: str = ""


class Sink:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def deliver(
        self, message: bytes, *, ready: Callable[[], Awaitable[None]] | None = None
    ) -> Delivered:
        message = await whole(message)
        if ready is not None:
            await ready()
        self.messages.append(message)
        return Delivered()


@pytest.fixture
async def server() -> AsyncIterator[FakeIMAPServer]:
    fake = FakeIMAPServer()
    for body in BODIES:
        fake.add(body)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def state(tmp_path: Path) -> AccountState:
    return UIDStore.open(tmp_path / "uids.sqlite3").account("127.0.0.1", "alice", "INBOX")


def _opener(
    server: FakeIMAPServer, state: AccountState, *, fetchall: bool = False
) -> Callable[[], Awaitable[IMAPSource]]:
    async def open_source() -> IMAPSource:
        client = await IMAPClient.connect(
            "127.0.0.1",
            server.port,
            security=Security.PLAIN,
            timeout=5,
            plaintext_password_allowed=True,  # sslproto ''
        )
        await client.login("alice", "secret")
        source = await IMAPSource.open(
            client, "INBOX", label="alice@127.0.0.1", fetchall=fetchall, recorded=state.delivered
        )
        # Before the engine compares UIDs: after a change the store shows only new records.
        state.set_uidvalidity(source.uidvalidity)
        return source

    return open_source


async def test_poll_delivers_records_and_expunges(
    server: FakeIMAPServer, state: AccountState
) -> None:
    """One poll delivers every unseen message, records it, and expunges it from the server."""
    sink = Sink()
    result = await poll_account(_opener(server, state), sink, state, PollSettings())
    assert sink.messages == BODIES
    assert result.delivered == 3 and result.deleted == 3
    assert server.messages == []
    assert state.uidvalidity == 42


async def test_limit_holds_for_the_octets_read_when_rfc822_size_understates(
    server: FakeIMAPServer, state: AccountState
) -> None:
    """`limit` applies to the literal actually read: a message whose RFC822.SIZE under-states
    it is neither delivered nor flagged \\Deleted, and is warned about as oversized."""
    big = server.add(b"Subject: big\r\n\r\n" + b"x" * 60 + b"\r\n")
    server.size_lies = -20
    limit = len(big.body) - 20  # what RFC822.SIZE says of it: within the limit
    sink = Sink()
    settings = PollSettings(selection=SelectionPolicy(limit=limit))
    with structlog.testing.capture_logs() as logs:
        result = await poll_account(_opener(server, state), sink, state, settings)
    assert sink.messages == BODIES
    assert [m.body for m in server.messages] == [big.body]
    assert "\\Deleted" not in big.flags and "\\Seen" not in big.flags
    assert result.oversized == 1 and result.delivered == 3
    assert len(state.delivered()) == 3  # the three small ones, not the big one
    [warning] = [e for e in logs if e["event"] == "message.oversized"]
    assert f"({len(big.body)} octets read, {limit} listed)" in warning["text"]


async def test_keep_mode_leaves_messages_and_does_not_redeliver(
    server: FakeIMAPServer, state: AccountState
) -> None:
    """With keep, messages stay; a second poll (even with fetchall off) delivers nothing again."""
    sink = Sink()
    settings = PollSettings(selection=SelectionPolicy(keep=True))
    await poll_account(_opener(server, state), sink, state, settings)
    await poll_account(_opener(server, state), sink, state, settings)
    assert sink.messages == BODIES
    assert len(server.messages) == 3


async def test_connection_lost_mid_retrieval_deletes_nothing_undelivered(
    server: FakeIMAPServer, state: AccountState
) -> None:
    """A connection lost during retrieval aborts the session: nothing is deleted or lost."""
    server.replace["UID FETCH"] = b"* 1 FETCH (UID 1 BODY[] {500}\r\ncut short"
    server.hang_up.add("UID FETCH")
    sink = Sink()
    with pytest.raises(SocketError):
        await poll_account(_opener(server, state), sink, state, PollSettings())
    assert sink.messages == []
    assert state.delivered() == set()
    assert [m.uid for m in server.messages] == [1, 2, 3]
    assert all("\\Deleted" not in m.flags for m in server.messages)


async def test_uidvalidity_change_redelivers_rather_than_skips(
    server: FakeIMAPServer, state: AccountState
) -> None:
    """After UIDVALIDITY changes, unseen messages are delivered again, never silently skipped."""
    sink = Sink()
    settings = PollSettings(selection=SelectionPolicy(keep=True))
    await poll_account(_opener(server, state), sink, state, settings)
    assert all("\\Seen" in m.flags for m in server.messages)  # keep marks them read
    server.uidvalidity = 43  # the folder was recreated: same UIDs, flags lost
    for m in server.messages:
        m.flags.discard("\\Seen")
    await poll_account(_opener(server, state), sink, state, settings)
    assert sink.messages == BODIES + BODIES
    assert state.uidvalidity == 43
