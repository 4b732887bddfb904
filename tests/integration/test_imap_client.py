"""fetchd.imap client and IMAPSource against the scripted fake server: login, TLS, faults."""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator

import pytest
import trustme

from fetchd.errors import (
    AuthError,
    FetchdTimeoutError,
    ProtocolError,
    ServerError,
    SocketError,
    TLSError,
)
from fetchd.imap.client import IMAPClient, Security
from fetchd.imap.source import IMAPSource
from tests.fakes.imapserver import CAPABILITIES, FakeIMAPServer

BODIES = [b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i) for i in range(1, 6)]


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def server() -> AsyncIterator[FakeIMAPServer]:
    fake = FakeIMAPServer()
    for body in BODIES:
        fake.add(body)
    await fake.start()
    yield fake
    await fake.stop()


async def _connect(
    server: FakeIMAPServer, security: Security = Security.PLAIN, **kwargs: object
) -> IMAPClient:
    kwargs.setdefault("timeout", 5.0)
    kwargs.setdefault("plaintext_password_allowed", security is Security.PLAIN)  # sslproto ''
    return await IMAPClient.connect("127.0.0.1", server.port, security=security, **kwargs)  # type: ignore[arg-type]


async def _source(server: FakeIMAPServer, *, fetchall: bool = False) -> IMAPSource:
    client = await _connect(server)
    await client.login("alice", "secret")
    return await IMAPSource.open(client, "INBOX", label="alice@fake", fetchall=fetchall)


async def _retrieve_all(source: IMAPSource) -> list[tuple[int, bytes]]:
    listing = await source.list_messages()
    return [(info.number, data) async for info, data in source.retrieve(listing)]


def _sent(server: FakeIMAPServer, name: bytes) -> bool:
    return any(name in line.upper() for line in server.received)


# --- session ------------------------------------------------------------------------------------


async def test_list_retrieve_delete_commit(server: FakeIMAPServer) -> None:
    """A whole session lists UIDs and sizes, yields the exact bytes, and expunges only ours."""
    server.messages[4].flags.add("\\Deleted")  # another client's, must survive our commit
    source = await _source(server)
    assert source.uidvalidity == 42
    listing = await source.list_messages()
    assert [(m.number, m.uid, m.size) for m in listing] == [
        (i, str(i), len(BODIES[i - 1])) for i in range(1, 5)
    ]
    fetched = [(info.number, data) async for info, data in source.retrieve(listing)]
    assert fetched == [(i, BODIES[i - 1]) for i in range(1, 5)]
    await source.delete(listing[:2])
    await source.commit()
    assert [m.uid for m in server.messages] == [3, 4, 5]
    assert _sent(server, b"UID EXPUNGE 1:2")
    assert "\\Seen" not in server.messages[0].flags  # BODY.PEEK[] left \Seen alone


async def test_unseen_only_by_default_and_all_with_fetchall(server: FakeIMAPServer) -> None:
    """Seen messages are not listed unless fetchall is set."""
    server.messages[0].flags.add("\\Seen")
    server.messages[2].flags.add("\\Seen")
    source = await _source(server)
    assert [m.number for m in await source.list_messages()] == [2, 4, 5]
    await source.commit()
    source = await _source(server, fetchall=True)
    assert [m.number for m in await source.list_messages()] == [1, 2, 3, 4, 5]
    await source.commit()


async def test_mark_seen_sets_the_flag(server: FakeIMAPServer) -> None:
    """mark_seen flags exactly the given messages \\Seen."""
    source = await _source(server)
    listing = await source.list_messages()
    await source.mark_seen(listing[1:3])
    await source.commit()
    assert [sorted(m.flags) for m in server.messages][:4] == [[], ["\\Seen"], ["\\Seen"], []]


async def test_small_batches_stream_every_message(server: FakeIMAPServer) -> None:
    """Bodies fetched one per batch still arrive whole and in order."""
    source = await _source(server)
    source._batch_messages = 1
    assert [data for _, data in await _retrieve_all(source)] == BODIES
    assert sum(_sent(server, b"UID FETCH %d (UID BODY.PEEK[])" % i) for i in range(1, 6)) == 5
    await source.abort()


async def test_without_uidplus_others_deleted_flags_survive_expunge() -> None:
    """Without UIDPLUS, EXPUNGE removes only ours; another client's \\Deleted is restored."""
    fake = FakeIMAPServer(capabilities=("IMAP4rev1",))
    for body in BODIES:
        fake.add(body)
    await fake.start()
    try:
        source = await _source(fake)
        listing = await source.list_messages()
        await source.delete(listing[:1])
        fake.messages[3].flags.add("\\Deleted")  # another client, during our session
        await source.commit()
        assert [m.uid for m in fake.messages] == [2, 3, 4, 5]
        assert fake.messages[2].flags == {"\\Deleted"}  # restored after our EXPUNGE
        assert _sent(fake, b"UID STORE 4 -FLAGS.SILENT")
    finally:
        await fake.stop()


@pytest.mark.parametrize("uidplus", [True, False])
async def test_commit_expunges_recorded_leftovers_but_not_others(uidplus: bool) -> None:
    """A message flagged by an interrupted earlier session and recorded as delivered is expunged;
    one another client flagged is not."""
    fake = FakeIMAPServer(capabilities=CAPABILITIES if uidplus else ("IMAP4rev1",))
    for body in BODIES:
        fake.add(body)
    fake.messages[2].flags.add("\\Deleted")  # ours, from a session that died before EXPUNGE
    fake.messages[4].flags.add("\\Deleted")  # another client's
    await fake.start()
    try:
        client = await _connect(fake)
        await client.login("alice", "secret")
        source = await IMAPSource.open(
            client, "INBOX", label="x", recorded=lambda: {"1", "3", "77"}
        )
        listing = await source.list_messages()
        assert [m.number for m in listing] == [1, 2, 4]
        await source.delete(listing[:1])
        await source.commit()
        assert [m.uid for m in fake.messages] == [2, 4, 5]
        assert fake.messages[2].flags == {"\\Deleted"}
    finally:
        await fake.stop()


# --- login --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "argument"),
    [
        ('pa"ss \\word', b'"pa\\"ss \\\\word"'),
        ("pässwörd", b"{10}\r\np\xc3\xa4ssw\xc3\xb6rd"),
        ("line\r\nbreak", b"{11}\r\nline\r\nbreak"),
    ],
)
async def test_login_quotes_or_sends_literals(password: str, argument: bytes) -> None:
    """Passwords with quotes, 8-bit characters or CRLF reach the server intact: quoted with
    their backslashes and quotes escaped, or as a literal of the exact octet count."""
    fake = FakeIMAPServer(password=password)
    await fake.start()
    try:
        client = await _connect(fake)
        await client.login("alice", password)
        await client.logout()
    finally:
        await fake.stop()
    assert re.search(rb"(?m)^\w+ LOGIN alice " + re.escape(argument) + rb"\r\n", fake.wire)
    assert fake.wire.count(b" LOGIN ") == 1


async def test_wrong_password_is_auth_error(server: FakeIMAPServer) -> None:
    """A NO to LOGIN raises AuthError."""
    client = await _connect(server)
    with pytest.raises(AuthError, match=r"AUTHENTICATIONFAILED|invalid"):
        await client.login("alice", "wrong")
    client.close()


async def test_logindisabled_is_honoured() -> None:
    """LOGINDISABLED makes LOGIN fail before anything is sent."""
    fake = FakeIMAPServer(capabilities=(*CAPABILITIES, "LOGINDISABLED"))
    await fake.start()
    try:
        client = await _connect(fake)
        with pytest.raises(AuthError, match="LOGINDISABLED"):
            await client.login("alice", "secret")
        assert not _sent(fake, b"LOGIN")
        client.close()
    finally:
        await fake.stop()


async def test_no_password_in_clear_even_to_loopback(server: FakeIMAPServer) -> None:
    """Over an unencrypted connection, LOGIN is refused unsent, to 127.0.0.1 too."""
    client = await _connect(server, plaintext_password_allowed=False)
    with pytest.raises(AuthError, match=r"add `sslproto ''` to the entry of 127\.0\.0\.1"):
        await client.login("alice", "secret")
    assert not _sent(server, b"LOGIN")
    client.close()
    client = await _connect(server, plaintext_password_allowed=True)
    client.host = "mail.example.org"
    await client.login("alice", "secret")  # TLS explicitly off: allowed, to any host
    await client.logout()


class _Plain:
    name = "PLAIN"

    def initial_response(self) -> bytes | None:
        return b"\0alice\0secret"

    def respond(self, challenge: bytes) -> bytes:
        raise AssertionError("PLAIN has no second step")


@pytest.mark.parametrize("sasl_ir", [False, True])
async def test_authenticate_plain(sasl_ir: bool) -> None:
    """AUTHENTICATE PLAIN works with the initial response inline (SASL-IR) or after '+'."""
    fake = FakeIMAPServer(capabilities=(*CAPABILITIES, *(["SASL-IR"] if sasl_ir else [])))
    await fake.start()
    try:
        client = await _connect(fake)
        await client.authenticate(_Plain())
        assert _sent(fake, b"AUTHENTICATE PLAIN AGFS") == sasl_ir
        await client.logout()
    finally:
        await fake.stop()


async def test_mechanism_not_offered_never_falls_back() -> None:
    """Asking for a mechanism the server lacks fails; nothing else is tried."""
    fake = FakeIMAPServer(capabilities=("IMAP4rev1",))
    await fake.start()
    try:
        client = await _connect(fake)
        with pytest.raises(AuthError, match="does not offer AUTHENTICATE PLAIN"):
            await client.authenticate(_Plain())
        assert not _sent(fake, b"LOGIN") and not _sent(fake, b"AUTHENTICATE")
        client.close()
    finally:
        await fake.stop()


# --- TLS ----------------------------------------------------------------------------------------


async def test_starttls_upgrades_and_asks_capability_again(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """STARTTLS encrypts the session and the capabilities are asked again afterwards."""
    fake = FakeIMAPServer(starttls_context=server_context)
    fake.add(BODIES[0])
    await fake.start()
    try:
        client = await _connect(fake, Security.STARTTLS, ssl_context=client_context)
        assert client.encrypted and "STARTTLS" not in client.capabilities
        assert [line.split(b" ", 1)[1] for line in fake.received] == [
            b"CAPABILITY",
            b"STARTTLS",
            b"CAPABILITY",
        ]
        await client.login("alice", "secret")
        source = await IMAPSource.open(client, "INBOX", label="x")
        assert [data for _, data in await _retrieve_all(source)] == [BODIES[0]]
        await source.commit()
    finally:
        await fake.stop()


async def test_bytes_injected_after_starttls_ok_are_refused(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """Plaintext sent with STARTTLS's OK, before the handshake, aborts the connection."""
    fake = FakeIMAPServer(
        starttls_context=server_context, after_starttls_ok=b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n"
    )
    await fake.start()
    try:
        with pytest.raises(TLSError, match="after STARTTLS"):
            await _connect(fake, Security.STARTTLS, ssl_context=client_context)
    finally:
        await fake.stop()


async def test_preauth_greeting_aborts_when_tls_is_required(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """A PREAUTH greeting when STARTTLS is required aborts (CVE-2021-39272)."""
    fake = FakeIMAPServer(starttls_context=server_context, greeting=b"* PREAUTH welcome back")
    await fake.start()
    try:
        with pytest.raises(TLSError, match="PREAUTH"):
            await _connect(fake, Security.STARTTLS, ssl_context=client_context)
        assert fake.received == []
    finally:
        await fake.stop()


async def test_starttls_not_offered_fails(client_context: ssl.SSLContext) -> None:
    """Without STARTTLS in the capabilities, a required STARTTLS fails; nothing in clear."""
    fake = FakeIMAPServer()
    await fake.start()
    try:
        with pytest.raises(TLSError, match="does not offer STARTTLS"):
            await _connect(fake, Security.STARTTLS, ssl_context=client_context)
    finally:
        await fake.stop()


async def test_implicit_tls_and_untrusted_certificate(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """Implicit TLS works with a trusted certificate and fails with TLSError otherwise."""
    fake = FakeIMAPServer(implicit_tls_context=server_context)
    await fake.start()
    try:
        client = await _connect(fake, Security.TLS, ssl_context=client_context)
        assert client.encrypted
        await client.login("alice", "secret")
        await client.logout()
        with pytest.raises(TLSError):
            await _connect(fake, Security.TLS, ssl_context=ssl.create_default_context())
    finally:
        await fake.stop()


# --- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "error", "match"),
    [
        (b"* 1 FETCH (UID 1 BODY[] {9999999999}\r\n", ProtocolError, "9999999999"),
        (b"* 1 FETCH (UID 1 BODY[] {3}\r\nabcdef)\r\n{tag} OK\r\n", ProtocolError, "longer"),
        (b"* 1 FETCH (UID 1 BODY[] {50}\r\nshort", SocketError, "inside a literal"),
        (b"* 1 FETCH (UID 1 BODY[] {2}\r\nab)\r\nZZZ9 OK done\r\n", ProtocolError, "unknown tag"),
        (b"* BYE going down\r\n", ServerError, "going down"),
        (
            b"* 1 FETCH (UID 1 BODY[] {2}\r\nab)\r\n* OK [UIDVALIDITY 7] new\r\n{tag} OK\r\n",
            ProtocolError,
            "UIDVALIDITY",
        ),
    ],
    ids=["huge-literal", "literal-overrun", "eof-in-literal", "unknown-tag", "bye", "uidvalidity"],
)
async def test_faults_during_retrieval_lose_nothing(
    server: FakeIMAPServer, reply: bytes, error: type[Exception], match: str
) -> None:
    """Each broken reply raises its typed error, nothing is yielded whole that was not."""
    source = await _source(server)
    listing = await source.list_messages()
    server.replace["UID FETCH"] = reply
    server.hang_up.add("UID FETCH")
    got: list[bytes] = []
    with pytest.raises(error, match=match):
        async for _, data in source.retrieve(listing):
            got.append(data)
    assert got in ([], [b"ab"][: len(got)])
    assert b"ab" not in got or "UIDVALIDITY" in match or "tag" in match
    await source.abort()
    assert len(server.messages) == 5


async def test_unsolicited_responses_mid_reply_are_harmless(server: FakeIMAPServer) -> None:
    """EXISTS, EXPUNGE and flag FETCHes inside a UID FETCH reply do not disturb retrieval."""
    source = await _source(server)
    listing = await source.list_messages()
    server.interleave["UID FETCH"] = b"* 9 EXISTS\r\n* 3 FETCH (FLAGS (\\Seen))\r\n* 5 EXPUNGE\r\n"
    assert [(info.number, data) async for info, data in source.retrieve(listing)] == [
        (i, BODIES[i - 1]) for i in range(1, 6)
    ]
    await source.commit()


async def test_message_expunged_by_another_client_is_skipped(server: FakeIMAPServer) -> None:
    """A listed message gone before its fetch is skipped, the rest are delivered."""
    source = await _source(server)
    listing = await source.list_messages()
    del server.messages[1]
    numbers = [info.number async for info, _ in source.retrieve(listing)]
    assert numbers == [1, 3, 4, 5]
    await source.abort()


async def test_stall_times_out(server: FakeIMAPServer) -> None:
    """A server that goes silent mid-command raises FetchdTimeoutError after the timeout."""
    client = await _connect(server, timeout=0.2)
    await client.login("alice", "secret")
    server.replace["SELECT"] = b"* 5 EXISTS"
    server.stall.add("SELECT")
    with pytest.raises(FetchdTimeoutError):
        await client.select("INBOX")
    with pytest.raises(FetchdTimeoutError):
        await client.noop()  # never reused after the error


async def test_bye_greeting_is_server_error() -> None:
    """A BYE greeting is reported as a server error, not a protocol failure."""
    fake = FakeIMAPServer(greeting=b"* BYE too many connections")
    await fake.start()
    try:
        with pytest.raises(ServerError, match="too many connections"):
            await _connect(fake)
    finally:
        await fake.stop()


async def test_bad_reply_is_protocol_error(server: FakeIMAPServer) -> None:
    """A tagged BAD becomes ProtocolError."""
    client = await _connect(server)
    server.replace["NOOP"] = b"{tag} BAD what?"
    with pytest.raises(ProtocolError, match="BAD what"):
        await client.noop()
    client.close()


async def test_abandoned_fetch_breaks_the_connection(server: FakeIMAPServer) -> None:
    """Stopping a retrieval half-way makes the client refuse further commands."""
    source = await _source(server)
    listing = await source.list_messages()
    stream = source.retrieve(listing)
    async for _ in stream:
        break
    await stream.aclose()
    with pytest.raises(ProtocolError, match="abandoned"):
        await source.client.noop()


async def test_many_responses_do_not_recurse() -> None:
    """A 5,000-message listing (aioimaplib's recursion limit is ~1,000 lines) is read whole."""
    fake = FakeIMAPServer()
    for index in range(5000):
        fake.add(b"x" * (index % 7 + 1), flags={"\\Seen"})
    await fake.start()
    try:
        source = await _source(fake, fetchall=True)
        listing = await source.list_messages()
        assert len(listing) == 5000 and listing[-1].size == 4999 % 7 + 1
        await source.commit()
    finally:
        await fake.stop()


# --- IDLE ---------------------------------------------------------------------------------------


async def _idling(server: FakeIMAPServer, timeout: float = 5.0) -> IMAPClient:
    server.capabilities = (*CAPABILITIES, "IDLE")
    client = await _connect(server, timeout=timeout)
    await client.login("alice", "secret")
    await client.select("INBOX")
    return client


async def test_idle_ends_at_once_when_the_server_reports_mail(server: FakeIMAPServer) -> None:
    server.idle_push = b"* 6 EXISTS"
    client = await _idling(server)
    assert await client.idle(30) is True
    assert server.received[-1].endswith(b"IDLE")  # then DONE, answered OK
    await client.noop()  # the session is still usable


async def test_idle_renewal_ends_quietly(server: FakeIMAPServer) -> None:
    client = await _idling(server)
    assert await client.idle(0.1) is False
    await client.noop()


async def test_a_silently_dead_idle_connection_is_detected(server: FakeIMAPServer) -> None:
    """No FIN, no RST, no reply to DONE: the renewal's DONE times out; the caller re-opens."""
    server.idle_dead = True
    client = await _idling(server, timeout=0.3)
    with pytest.raises(FetchdTimeoutError):
        await client.idle(0.1)


async def test_imap_connections_have_tcp_keepalive(server: FakeIMAPServer) -> None:
    import socket

    from fetchd.net import keepalive

    client = await _connect(server)
    sock = client._protocol.transport.get_extra_info("socket")  # type: ignore[union-attr]
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == keepalive.KEEPIDLE
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == keepalive.KEEPCNT
    client.close()
