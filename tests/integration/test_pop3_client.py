"""POP3 client and source against a scripted server: the normal path and every fault."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import structlog
import trustme

from fetchd.errors import (
    AuthError,
    ConfigError,
    FetchdTimeoutError,
    ProtocolError,
    ServerBusyError,
    ServerError,
    SocketError,
    TLSError,
)
from fetchd.net.tls import TLSSettings
from fetchd.poll import PollSettings, poll_account
from fetchd.pop3.source import POP3Account, open_pop3
from fetchd.selection import SelectionPolicy
from fetchd.state import UIDStore
from tests.fakes.pop3server import FakePOP3Server, Faults
from tests.support.messages import whole

MESSAGES = [f"Subject: {i}\r\n\r\nbody {i}\r\n.dotted line\r\n".encode() for i in range(1, 6)]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


CLEAR = TLSSettings(sslproto="")  # the fake speaks no TLS unless told to


def account(port: int, **tls: object) -> POP3Account:
    """The fake's account; in clear (`sslproto ''`) unless a TLS option is given."""
    tls = tls or {"sslproto": ""}
    return POP3Account(
        "127.0.0.1",
        port,
        "u",
        "p",
        "u@fake",
        TLSSettings(**tls),  # type: ignore[arg-type]
        timeout=2.0,
    )


class Recorder:
    """A deliverer that accepts everything and remembers it."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def deliver(
        self, message: bytes, *, ready: Callable[[], Awaitable[None]] | None = None
    ) -> object:
        message = await whole(message)
        if ready is not None:
            await ready()
        self.messages.append(message)

        class Ok:
            delivered = True
            may_delete = True
            reason = "delivered"

        return Ok()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[UIDStore]:
    with UIDStore.open(tmp_path / "uids.sqlite3") as opened:
        yield opened


async def test_list_retrieve_delete_commit() -> None:
    async with FakePOP3Server(MESSAGES) as server:
        source = await open_pop3(account(server.port))
        listing = await source.list_messages()
        assert [m.number for m in listing] == [1, 2, 3, 4, 5]
        assert listing[0].uid == server.uid(MESSAGES[0])
        bodies = [await whole(body) async for _, body in source.retrieve(listing)]
        assert bodies == MESSAGES
        await source.delete(listing[:2])
        await source.commit()
        assert server.messages == MESSAGES[2:]


async def test_abort_leaves_every_message() -> None:
    async with FakePOP3Server(MESSAGES) as server:
        source = await open_pop3(account(server.port))
        listing = await source.list_messages()
        await source.delete(listing)
        await source.abort()
        assert server.messages == MESSAGES
        assert "QUIT" not in server.commands


async def test_pipelining_keeps_order_without_it_too() -> None:
    async with FakePOP3Server(MESSAGES, faults=Faults(pipelining=False)) as server:
        source = await open_pop3(account(server.port))
        listing = await source.list_messages()
        assert [await whole(body) async for _, body in source.retrieve(listing)] == MESSAGES
        await source.commit()


async def test_stls_upgrades_and_asks_capabilities_again(
    server_tls: ssl.SSLContext, ca_file: str
) -> None:
    async with FakePOP3Server(MESSAGES, faults=Faults(stls=server_tls)) as server:
        source = await open_pop3(account(server.port, sslcertfile=ca_file))
        assert source.client.encrypted
        assert server.commands[:3] == ["CAPA", "STLS", "CAPA"]
        assert [
            await whole(body) async for _, body in source.retrieve(await source.list_messages())
        ] == MESSAGES
        await source.commit()


async def test_stls_injected_bytes_are_refused(server_tls: ssl.SSLContext, ca_file: str) -> None:
    faults = Faults(stls=server_tls, inject_after_stls=b"+OK injected")
    async with FakePOP3Server(MESSAGES, faults=faults) as server:
        with pytest.raises(TLSError, match="before the TLS handshake"):
            await open_pop3(account(server.port, sslcertfile=ca_file))
        assert "PASS" not in server.commands


async def test_refused_stls_never_falls_back(server_tls: ssl.SSLContext, ca_file: str) -> None:
    faults = Faults(stls=server_tls, refuse_stls=True)
    async with FakePOP3Server(MESSAGES, faults=faults) as server:
        with pytest.raises(TLSError, match="STLS refused"):
            await open_pop3(account(server.port, sslcertfile=ca_file))
        assert "USER u" not in server.commands and "PASS" not in server.commands


async def test_untrusted_certificate_is_refused(server_tls: ssl.SSLContext) -> None:
    async with FakePOP3Server(MESSAGES, faults=Faults(stls=server_tls)) as server:
        with pytest.raises(TLSError, match="handshake failed"):
            await open_pop3(account(server.port, sslproto=None))  # system CAs: no test CA
        assert "PASS" not in server.commands


async def test_fingerprint_pin(server_tls: ssl.SSLContext, ca_file: str) -> None:
    async with FakePOP3Server(MESSAGES, faults=Faults(stls=server_tls)) as server:
        wrong = ":".join(["AB"] * 32)
        with pytest.raises(TLSError, match="does not match"):
            await open_pop3(account(server.port, sslcertfile=ca_file, sslfingerprint=wrong))
        with pytest.raises(ConfigError, match="MD5"):
            await open_pop3(
                account(server.port, sslcertfile=ca_file, sslfingerprint=":".join(["AB"] * 16))
            )
        assert "PASS" not in server.commands


async def test_no_password_in_clear_even_to_loopback() -> None:
    """Without `sslproto ''`, a server without STLS gets no password, on 127.0.0.1 too."""
    async with FakePOP3Server(MESSAGES) as server:  # offers no STLS
        with pytest.raises(AuthError, match=r"add `sslproto ''` to the entry of 127\.0\.0\.1"):
            await open_pop3(account(server.port, sslproto=None))
        assert "PASS" not in server.commands and "USER u" not in server.commands
        # ... unless the rc file turned TLS off explicitly.
        source = await open_pop3(account(server.port, sslproto=""))
        await source.abort()
        assert "PASS" in server.commands


async def test_asked_mechanism_not_offered_is_not_replaced() -> None:
    async with FakePOP3Server(MESSAGES, faults=Faults(sasl=("PLAIN",))) as server:
        acct = POP3Account(
            "127.0.0.1", server.port, "u", "p", "u@fake", CLEAR, timeout=2.0, auth="cram-md5"
        )
        with pytest.raises(AuthError, match="CRAM-MD5"):
            await open_pop3(acct)
        assert "PASS" not in server.commands and "AUTH" not in server.commands


@pytest.mark.parametrize(
    ("faults", "error"),
    [
        (Faults(errors={"PASS": "-ERR [IN-USE] mailbox locked"}), ServerBusyError),
        (Faults(errors={"PASS": "-ERR [AUTH] invalid"}), AuthError),
        (Faults(no_uidl=True), ProtocolError),
        (Faults(bad_list_line=b"x y"), ProtocolError),
        (Faults(greeting=b"* OK IMAP4rev1"), ProtocolError),
    ],
)
async def test_server_faults_become_typed_errors(faults: Faults, error: type[Exception]) -> None:
    async with FakePOP3Server(MESSAGES, faults=faults) as server:
        source = None
        with pytest.raises(error):
            source = await open_pop3(account(server.port))
            await source.list_messages()
        if source is not None:
            await source.abort()
        assert server.messages == MESSAGES


async def test_a_stall_times_out() -> None:
    async with FakePOP3Server(MESSAGES, faults=Faults(stall_on="LIST")) as server:
        source = await open_pop3(account(server.port))
        source.client.timeout = 0.3
        with pytest.raises(FetchdTimeoutError):
            await source.list_messages()
        await source.abort()


async def test_a_message_cut_by_eof_is_never_delivered_nor_deleted(store: UIDStore) -> None:
    deliverer = Recorder()
    state = store.account("fake", "u")
    async with FakePOP3Server(MESSAGES, faults=Faults(cut_retr=3)) as server:
        with pytest.raises(SocketError):
            await poll_account(
                lambda: open_pop3(account(server.port)), deliverer, state, PollSettings()
            )
        assert deliverer.messages == MESSAGES[:2]  # 1 and 2 whole; 3 cut: not delivered
        assert server.messages == MESSAGES  # nothing deleted: the session was never committed
        assert len(state.delivered()) == 2
        # The next poll deletes 1 and 2 unread and delivers the rest: each message once.
        server.faults.cut_retr = None
        result = await poll_account(
            lambda: open_pop3(account(server.port)), deliverer, state, PollSettings()
        )
        assert deliverer.messages == MESSAGES
        assert result.delivered == 3 and result.deleted == 5
        assert server.messages == []


@pytest.mark.parametrize("cut_at", [0, 1, 5, 30])
async def test_a_drop_at_any_byte_of_a_retr_loses_nothing(store: UIDStore, cut_at: int) -> None:
    deliverer = Recorder()
    state = store.account("fake", "u")
    async with FakePOP3Server(MESSAGES, faults=Faults(cut_retr=2, cut_at=cut_at)) as server:
        with pytest.raises(SocketError):
            await poll_account(
                lambda: open_pop3(account(server.port)), deliverer, state, PollSettings()
            )
        assert deliverer.messages == MESSAGES[:1]
        assert server.messages == MESSAGES


async def test_listings_that_disagree_are_refused() -> None:
    async with FakePOP3Server(MESSAGES, faults=Faults(uidl_skips=3)) as server:
        source = await open_pop3(account(server.port))
        with pytest.raises(ProtocolError, match="LIST and UIDL"):
            await source.list_messages()
        await source.abort()


async def test_a_size_that_lies_does_not_change_what_is_delivered() -> None:
    async with FakePOP3Server(MESSAGES, faults=Faults(size_lies=-10)) as server:
        source = await open_pop3(account(server.port))
        listing = await source.list_messages()
        assert listing[0].size == len(MESSAGES[0]) - 10
        assert [await whole(body) async for _, body in source.retrieve(listing)] == MESSAGES
        await source.abort()


async def test_limit_holds_for_the_octets_read_when_list_understates(store: UIDStore) -> None:
    """`limit` applies to what is read: a message LIST under-states is neither delivered nor
    deleted, is warned about as oversized, and the next poll does not read it again."""
    small = [b"Subject: s%d\r\n\r\nsmall\r\n" % i for i in (1, 2)]
    big = b"Subject: big\r\n\r\n" + b"x" * 60 + b"\r\n"
    limit = len(big) - 20  # LIST says len(big) - 20: within the limit
    deliverer = Recorder()
    state = store.account("fake", "u")
    settings = PollSettings(selection=SelectionPolicy(limit=limit))
    async with FakePOP3Server([small[0], big, small[1]], faults=Faults(size_lies=-20)) as server:
        with structlog.testing.capture_logs() as logs:
            result = await poll_account(
                lambda: open_pop3(account(server.port)), deliverer, state, settings
            )
        assert deliverer.messages == small
        assert server.messages == [big]  # the small ones were deleted, the big one stays
        assert result.oversized == 1 and result.delivered == 2 and result.deleted == 2
        assert server.uid(big) not in state.delivered()
        [warning] = [e for e in logs if e["event"] == "message.oversized"]
        assert f"({len(big)} octets read, {len(big) - 20} listed)" in warning["text"]
        retrs = sum(c.startswith("RETR") for c in server.commands)
        again = await poll_account(
            lambda: open_pop3(account(server.port)), deliverer, state, settings
        )
        assert sum(c.startswith("RETR") for c in server.commands) == retrs  # not read again
        assert again.oversized == 1 and deliverer.messages == small
        assert server.messages == [big]


async def test_an_endless_line_is_a_protocol_error() -> None:
    async with FakePOP3Server(MESSAGES, faults=Faults(long_line=True)) as server:
        source = await open_pop3(account(server.port))
        with pytest.raises(ProtocolError, match="reply line"):
            await source.client.stat()
        await source.abort()


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("-ERR [SYS/TEMP] disk trouble", ServerError),
        ("-ERR [SYS/PERM] mailbox gone", ServerError),
        ("-ERR [IN-USE] locked", ServerBusyError),
        ("-ERR [LOGIN-DELAY] wait 600", ServerBusyError),
        ("-ERR [AUTH] bad credentials", AuthError),
        ("-ERR something else", ProtocolError),
    ],
)
async def test_each_err_code_during_retr(reply: str, error: type[Exception]) -> None:
    async with FakePOP3Server(MESSAGES, faults=Faults(errors={"RETR": reply})) as server:
        source = await open_pop3(account(server.port))
        with pytest.raises(error):
            async for _ in source.retrieve(await source.list_messages()):
                pass
        await source.abort()
        assert server.messages == MESSAGES


async def test_apop_sends_the_digest_not_the_password() -> None:
    async with FakePOP3Server(MESSAGES) as server:
        acct = POP3Account(
            "127.0.0.1", server.port, "u", "p", "u@fake", CLEAR, timeout=2.0, apop=True
        )
        source = await open_pop3(acct)
        await source.commit()
        assert "APOP" in server.commands and "PASS" not in server.commands
    async with FakePOP3Server(MESSAGES, faults=Faults(greeting=b"+OK no stamp")) as server:
        with pytest.raises(AuthError, match="APOP"):
            await open_pop3(
                POP3Account("127.0.0.1", server.port, "u", "p", "u", CLEAR, timeout=2.0, apop=True)
            )
