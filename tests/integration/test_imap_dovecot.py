"""IMAP against a real Dovecot: UIDVALIDITY changes and another client changing the mailbox in
the middle of our poll."""

from __future__ import annotations

import asyncio
import imaplib
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from fetchd.imap.connect import open_imap
from fetchd.net.tls import TLSSettings
from fetchd.poll import PollSettings, poll_account
from fetchd.selection import SelectionPolicy
from fetchd.source import MailSource
from fetchd.state import AccountState, UIDStore
from tests.support.command import run_fetchd
from tests.support.dovecot import Dovecot
from tests.support.messages import whole

pytestmark = pytest.mark.dovecot


def message(i: int) -> bytes:
    return f"From: s{i}@example.org\r\nSubject: m{i}\r\n\r\nbody {i}\r\n".encode()


@pytest.fixture
def state(tmp_path: Path) -> Iterator[AccountState]:
    with UIDStore.open(tmp_path / "uids.sqlite3") as store:
        yield store.account("dovecot", "alice", "INBOX")


def opener(dovecot: Dovecot, state: AccountState) -> Callable[[], Awaitable[MailSource]]:
    async def open_source() -> MailSource:
        source = await open_imap(
            host=dovecot.host,
            port=dovecot.imap_port,
            user=dovecot.user,
            password=dovecot.password,
            label="alice@dovecot",
            tls=TLSSettings(sslcertfile=dovecot.ca_file),
            timeout=10.0,
            auth="any",
            folder="INBOX",
            fetchall=False,
            recorded=state.delivered,
        )
        await asyncio.to_thread(state.set_uidvalidity, source.uidvalidity)
        return source

    return open_source


class Sink:
    def __init__(self, during: Callable[[int], None] | None = None) -> None:
        self.messages: list[bytes] = []
        self.during = during

    async def deliver(
        self, data: bytes, *, ready: Callable[[], Awaitable[None]] | None = None
    ) -> object:
        data = await whole(data)
        if self.during is not None:
            await asyncio.to_thread(self.during, len(self.messages))
        if ready is not None:
            await ready()
        self.messages.append(data)

        class Delivered:
            delivered = True
            may_delete = True
            reason = "delivered"

        return Delivered()


def other_client(dovecot: Dovecot) -> imaplib.IMAP4:
    client = imaplib.IMAP4(dovecot.host, dovecot.imap_port)
    client.login(dovecot.user, dovecot.password)
    client.select("INBOX")
    return client


async def test_a_new_uidvalidity_with_reused_uids_is_delivered(
    dovecot: Dovecot, state: AccountState
) -> None:
    for i in range(3):
        dovecot.deliver(message(i))
    keep = PollSettings(selection=SelectionPolicy(keep=True))
    sink = Sink()
    assert (await poll_account(opener(dovecot, state), sink, state, keep)).delivered == 3
    first_validity = state.uidvalidity
    time.sleep(1.1)  # Dovecot derives a new UIDVALIDITY from the clock, in whole seconds
    dovecot.reset()  # the folder is recreated: a new UIDVALIDITY, and UIDs 1..3 again
    for i in range(3, 6):
        dovecot.deliver(message(i))
    result = await poll_account(opener(dovecot, state), sink, state, keep)
    assert result.delivered == 3
    assert state.uidvalidity != first_validity
    assert sink.messages == [message(i) for i in range(6)]


async def test_another_client_changing_the_mailbox_mid_poll(
    dovecot: Dovecot, state: AccountState
) -> None:
    """While we deliver, another client flags \\Deleted a message we leave on the server (it
    is over our size limit) and marks another one read. Our commit expunges exactly what we
    delivered: the other client's \\Deleted message is its business, not ours."""
    for i in range(5):
        dovecot.deliver(message(i))
    big = b"Subject: big\r\n\r\n" + (b"y" * 76 + b"\r\n") * 80
    dovecot.deliver(big)  # UID 6

    def meddle(delivered_so_far: int) -> None:
        if delivered_so_far != 1:
            return
        client = other_client(dovecot)
        client.uid("STORE", "6", "+FLAGS.SILENT", "(\\Deleted)")
        client.uid("STORE", "4", "+FLAGS.SILENT", "(\\Seen)")
        client.logout()

    sink = Sink(during=meddle)
    settings = PollSettings(selection=SelectionPolicy(limit=4000))
    result = await poll_account(opener(dovecot, state), sink, state, settings)
    assert sink.messages == [message(i) for i in range(5)]  # listed before the meddling
    assert result.deleted == 5
    assert dovecot.messages() == [big]  # flagged by the other client, not expunged by us


@pytest.mark.parametrize("auth", ["password", "cram-md5"])
async def test_verbose_shows_the_imap_dialogue_with_the_password_masked(
    tmp_path: Path, dovecot: Dovecot, auth: str
) -> None:
    """fetchd -v shows each IMAP command and tagged reply, as fetchmail does, with LOGIN's
    arguments and each SASL answer as ``*``: the password appears nowhere."""
    rc = tmp_path / ".fetchmailrc"
    rc.write_text(
        f"poll {dovecot.host} proto imap port {dovecot.imap_port} auth {auth}\n"
        f'  user {dovecot.user} password "{dovecot.password}" sslcertfile {dovecot.ca_file}'
        ' keep mda "/bin/cat >/dev/null"\n'
    )
    rc.chmod(0o600)
    dovecot.deliver(message(1))
    code, out = await run_fetchd(tmp_path, rc, "-v")
    assert code == 0, out
    login = r"LOGIN \*" if auth == "password" else r"AUTHENTICATE CRAM-MD5\nIMAP> \*"
    assert re.search(rf"^IMAP> [A-Z]+\d+ {login}$", out, re.MULTILINE), out
    assert re.search(r"^IMAP< [A-Z]+\d+ OK ", out, re.MULTILINE), out
    assert re.search(r"^IMAP> [A-Z]+\d+ UID FETCH ", out, re.MULTILINE), out
    assert dovecot.password not in out
