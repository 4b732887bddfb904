"""The poll engine keeps the delivery invariant: deliver, record durably, delete, then commit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

import pytest

from fetchd.errors import DeliveryError, SocketError
from fetchd.poll import PollSettings, poll_account
from fetchd.selection import SelectionPolicy
from fetchd.source import MessageInfo
from tests.support.messages import whole


class Journal(list[tuple[str, object]]):
    """One ordered log of every side effect, shared by the fakes."""

    def kinds(self, uid: str) -> list[str]:
        return [kind for kind, what in self if what == uid]


class FakeSource:
    """An in-memory mailbox; deletions take effect only on commit, as in POP3."""

    label = "joe@pop.example.org"

    def __init__(self, journal: Journal, mailbox: dict[str, bytes], fail_at: int | None = None):
        self.journal, self.mailbox, self.fail_at = journal, mailbox, fail_at
        self.marked: list[str] = []

    async def list_messages(self) -> Sequence[MessageInfo]:
        return [
            MessageInfo(n, uid, len(body))
            for n, (uid, body) in enumerate(self.mailbox.items(), start=1)
        ]

    async def retrieve(
        self, messages: Sequence[MessageInfo]
    ) -> AsyncIterator[tuple[MessageInfo, bytes]]:
        for info in messages:
            if info.number == self.fail_at:
                raise SocketError(f"connection lost during RETR {info.number}")
            self.journal.append(("retrieve", info.uid))
            yield info, self.mailbox[info.uid]

    async def delete(self, messages: Sequence[MessageInfo]) -> None:
        for info in messages:
            self.journal.append(("delete", info.uid))
            self.marked.append(info.uid)

    async def commit(self) -> None:
        self.journal.append(("commit", None))
        for uid in self.marked:
            del self.mailbox[uid]
        self.marked = []

    async def abort(self) -> None:
        self.journal.append(("abort", None))
        self.marked = []


@dataclass(frozen=True)
class Result:
    delivered: bool
    may_delete: bool
    reason: str = ""


class FakeDeliverer:
    def __init__(
        self, journal: Journal, refuse: Collection[bytes] = (), crash_on: bytes | None = None
    ):
        self.journal, self.refuse, self.crash_on = journal, refuse, crash_on

    async def deliver(
        self, message: bytes, *, ready: Callable[[], Awaitable[None]] | None = None
    ) -> Result:
        message = await whole(message)
        if message == self.crash_on:
            raise DeliveryError("MTA connection lost")
        if message in self.refuse:
            return Result(False, False, "450 try later")
        if ready is not None:
            await ready()  # as a real deliverer does before its commit point (the final dot)
        self.journal.append(("deliver", message.decode().split()[0]))
        return Result(True, True)


class FakeState:
    def __init__(self, journal: Journal, recorded: Iterable[str] = ()):
        self.journal, self.recorded = journal, set(recorded)

    def delivered(self) -> Collection[str]:
        return set(self.recorded)

    def record_delivered(self, uids: Iterable[str]) -> None:
        for uid in uids:
            self.journal.append(("record", uid))
            self.recorded.add(uid)

    def forget_absent(self, present_uids: Iterable[str]) -> None:
        self.recorded &= set(present_uids)


def mailbox(n: int) -> dict[str, bytes]:
    return {f"u{i}": f"u{i} body\r\n".encode() for i in range(1, n + 1)}


async def run(source, deliverer, state, **policy):
    async def open_source():
        return source

    expunge = policy.pop("expunge", 0)
    return await poll_account(
        open_source, deliverer, state, PollSettings(SelectionPolicy(**policy), expunge=expunge)
    )


async def test_each_message_is_recorded_before_its_delete():
    """Every delete follows that message's delivery and durable record; commit comes last."""
    journal = Journal()
    source = FakeSource(journal, mailbox(5))
    result = await run(source, FakeDeliverer(journal), FakeState(journal))
    assert result.delivered == result.deleted == 5
    for i in range(1, 6):
        assert journal.kinds(f"u{i}") == ["retrieve", "deliver", "record", "delete"]
    assert journal[-1] == ("commit", None)
    assert source.mailbox == {}


async def test_keep_records_without_deleting_and_second_poll_fetches_nothing():
    """With keep, messages stay and are recorded; the next poll delivers none of them again."""
    journal = Journal()
    source, state = FakeSource(journal, mailbox(3)), FakeState(journal)
    first = await run(source, FakeDeliverer(journal), state, keep=True)
    second = await run(source, FakeDeliverer(journal), state, keep=True)
    assert (first.delivered, first.deleted) == (3, 0)
    assert (second.fetched, second.seen) == (0, 3)
    assert len(source.mailbox) == 3


async def test_refused_message_stays_on_server():
    """A 4xx (or soft-bounced 5xx) leaves the message on the server and unrecorded."""
    journal = Journal()
    source, state = FakeSource(journal, mailbox(3)), FakeState(journal)
    result = await run(source, FakeDeliverer(journal, refuse=[b"u2 body\r\n"]), state)
    assert (result.delivered, result.kept) == (2, 1)
    assert list(source.mailbox) == ["u2"]
    assert "u2" not in state.recorded


async def test_retrieval_failure_delivers_what_arrived_and_deletes_nothing():
    """A drop mid-retrieval aborts the session: nothing deleted, delivered ones are recorded."""
    journal = Journal()
    source, state = FakeSource(journal, mailbox(4), fail_at=3), FakeState(journal)
    with pytest.raises(SocketError):
        await run(source, FakeDeliverer(journal), state)
    assert len(source.mailbox) == 4
    assert state.recorded == {"u1", "u2"}
    assert ("abort", None) in journal and ("commit", None) not in journal


async def test_recorded_messages_are_deleted_not_redelivered_after_a_crash():
    """Messages recorded in an aborted poll are deleted unread by the next one."""
    journal = Journal()
    source, state = FakeSource(journal, mailbox(4), fail_at=3), FakeState(journal)
    with pytest.raises(SocketError):
        await run(source, FakeDeliverer(journal), state)
    source.fail_at = None
    result = await run(source, FakeDeliverer(journal), state)
    assert [k for k, _ in journal].count("deliver") == 4
    assert result.delivered == 2 and result.deleted == 4
    assert source.mailbox == {}


async def test_delivery_error_aborts_without_deleting():
    """An MTA failure mid-poll aborts: no message is deleted in that session."""
    journal = Journal()
    source, state = FakeSource(journal, mailbox(3)), FakeState(journal)
    with pytest.raises(DeliveryError):
        await run(source, FakeDeliverer(journal, crash_on=b"u2 body\r\n"), state)
    assert len(source.mailbox) == 3
    assert not any(kind == "delete" for kind, _ in journal)


async def test_expunge_commits_every_n_deletions():
    """expunge N commits after N deletions, so a dropped link loses little progress."""
    journal = Journal()
    source = FakeSource(journal, mailbox(5))
    result = await run(source, FakeDeliverer(journal), FakeState(journal), expunge=2)
    assert [k for k, _ in journal].count("commit") == 3
    assert result.delivered == result.deleted == 5
    assert source.mailbox == {}


async def test_an_oversized_message_is_warned_about_once_per_interval(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import structlog

    from fetchd import logconfig

    logconfig.configure(fmt="console")
    try:
        journal: Journal = []
        source = FakeSource(journal, {"big": b"x" * 100})
        settings = PollSettings(selection=SelectionPolicy(limit=10, keep=True), warnings=3600)

        async def open_source() -> FakeSource:
            return source

        for _ in range(2):
            await poll_account(open_source, FakeDeliverer(journal), FakeState(journal), settings)
        warned = capsys.readouterr().err.count("skipping message")
        assert warned == 1
    finally:
        structlog.reset_defaults()


async def test_a_permanent_refusal_is_warned_about_once(capsys: pytest.CaptureFixture[str]) -> None:
    import structlog

    from fetchd import logconfig

    class Refuser:
        async def deliver(self, message: bytes, *, ready: object = None) -> object:
            class Refused:
                delivered = False
                may_delete = False
                reason = "SMTP 550 at RCPT TO: no such user (softbounce; kept)"
                code = 550

            return Refused()

    logconfig.configure(fmt="console")
    try:
        journal: Journal = []
        source = FakeSource(journal, {"u1": b"u1 body\r\n"})

        async def open_source() -> FakeSource:
            return source

        for _ in range(3):
            result = await poll_account(open_source, Refuser(), FakeState(journal), PollSettings())
            assert result.kept == 1 and "u1" in source.mailbox
        assert capsys.readouterr().err.count("was refused") == 1
    finally:
        structlog.reset_defaults()
