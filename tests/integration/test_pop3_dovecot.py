"""POP3 end to end against a real Dovecot, delivering into a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetchd.delivery.headers import Trace
from fetchd.delivery.smtp import SMTPDeliverer, SMTPSettings
from fetchd.errors import AuthError, TLSError
from fetchd.net.tls import TLSSettings
from fetchd.poll import PollResult, PollSettings, poll_account
from fetchd.pop3.source import POP3Account, open_pop3
from fetchd.selection import SelectionPolicy
from fetchd.state import UIDStore
from tests.support.dovecot import Dovecot
from tests.support.mta import Sink, running_mta

pytestmark = pytest.mark.dovecot


def make_messages(count: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    messages = []
    for i in range(count):
        body = b"".join(
            rng.choice(
                [
                    b"plain text line\r\n",
                    b".leading dot\r\n",
                    b"..two dots\r\n",
                    b"\r\n",
                    b"x" * rng.randint(1, 200) + b"\r\n",
                ]
            )
            for _ in range(rng.randint(1, 50))
        )
        messages.append(b"From: s%d@example.org\r\nSubject: m%d\r\n\r\n" % (i, i) + body)
    return messages


@pytest.fixture
def private_dovecot() -> Iterator[Dovecot]:
    """A Dovecot whose log holds only this test's connections."""
    dovecot = Dovecot()
    dovecot.start()
    # start() knocked on the ports (some more than once); let those connections be logged first.
    deadline = time.monotonic() + 10
    while dovecot.log_since(0).count("-login: Info: Disconnected") < dovecot.probes:
        assert time.monotonic() < deadline, dovecot.log()
        time.sleep(0.02)
    yield dovecot
    dovecot.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[UIDStore]:
    with UIDStore.open(tmp_path / "uids.sqlite3") as opened:
        yield opened


async def poll(
    dovecot: Dovecot,
    sink: Sink,
    store: UIDStore,
    *,
    port: int | None = None,
    tls: TLSSettings | None = None,
    **selection: object,
) -> PollResult:
    account = POP3Account(
        dovecot.host,
        port or dovecot.pop3_port,
        dovecot.user,
        dovecot.password,
        f"{dovecot.user}@dovecot",
        tls or TLSSettings(sslcertfile=dovecot.ca_file),
        timeout=10.0,
    )
    deliverer = SMTPDeliverer(
        SMTPSettings(
            smtphunt=(f"127.0.0.1/{sink.port}",),
            recipients=("joe",),
            trace=Trace(server="dovecot"),
            timeout=10.0,
        )
    )
    try:
        return await poll_account(
            lambda: open_pop3(account),
            deliverer,
            store.account("dovecot", dovecot.user),
            PollSettings(selection=SelectionPolicy(**selection)),  # type: ignore[arg-type]
        )
    finally:
        await deliverer.aclose()


async def test_delete_mode_delivers_exact_bytes_and_empties_the_mailbox(
    dovecot: Dovecot, store: UIDStore
) -> None:
    messages = make_messages(30)
    for message in messages:
        dovecot.deliver(message)
    async with running_mta() as sink:
        result = await poll(dovecot, sink, store)
        assert (result.delivered, result.deleted) == (30, 30)
        assert sorted(sink.bodies()) == sorted(messages)
        assert dovecot.messages() == []
        again = await poll(dovecot, sink, store)
        assert (again.on_server, again.delivered) == (0, 0)


async def test_keep_mode_fetches_only_new_mail(dovecot: Dovecot, store: UIDStore) -> None:
    messages = make_messages(5)
    for message in messages:
        dovecot.deliver(message)
    async with running_mta() as sink:
        assert (await poll(dovecot, sink, store, keep=True)).delivered == 5
        assert len(dovecot.messages()) == 5
        second = await poll(dovecot, sink, store, keep=True)
        assert (second.on_server, second.seen, second.delivered) == (5, 5, 0)
        dovecot.deliver(b"Subject: new\r\n\r\nnew one\r\n")
        third = await poll(dovecot, sink, store, keep=True)
        assert third.delivered == 1
        assert sink.bodies()[-1] == b"Subject: new\r\n\r\nnew one\r\n"
        assert len(sink.received) == 6


async def test_limit_and_fetchlimit(dovecot: Dovecot, store: UIDStore) -> None:
    dovecot.deliver(b"Subject: big\r\n\r\n" + b"y" * 5000 + b"\r\n")
    for message in make_messages(4):
        dovecot.deliver(message)
    async with running_mta() as sink:
        first = await poll(dovecot, sink, store, limit=4000, fetchlimit=2)
        assert (first.delivered, first.oversized) == (2, 1)
        second = await poll(dovecot, sink, store, limit=4000)
        assert second.delivered == 2
        assert all(b"y" * 5000 not in body for body in sink.bodies())
        assert len(dovecot.messages()) == 1  # the oversized one stays


@pytest.mark.parametrize("implicit", [False, True], ids=["stls", "pop3s"])
async def test_tls_with_the_test_ca(dovecot: Dovecot, store: UIDStore, implicit: bool) -> None:
    dovecot.deliver(b"Subject: tls\r\n\r\nsecret body\r\n")
    tls = TLSSettings(ssl=implicit, sslcertfile=dovecot.ca_file)
    port = dovecot.pop3s_port if implicit else dovecot.pop3_port
    source = await open_pop3(
        POP3Account(dovecot.host, port, dovecot.user, dovecot.password, "t", tls, timeout=10.0)
    )
    assert source.client.encrypted
    await source.abort()
    async with running_mta() as sink:
        assert (await poll(dovecot, sink, store, port=port, tls=tls)).delivered == 1


class Relay:
    """A TCP relay on 127.0.0.1 in front of a real server port, keeping every octet the client
    sent on each connection: what reached the server, whatever the server logs."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.sent: list[bytearray] = []
        self.ended: list[asyncio.Event] = []
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sent, ended = bytearray(), asyncio.Event()
        self.sent.append(sent)
        self.ended.append(ended)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def pump(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, record: bytearray | None
        ) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    if record is not None:
                        record += data
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pump(reader, up_writer, sent), pump(up_reader, writer, None))
        ended.set()

    async def stop(self) -> None:
        self._server.close()


@pytest.mark.parametrize("implicit", [True, False], ids=["pop3s", "stls"])
async def test_unknown_ca_is_refused_before_any_password(
    private_dovecot: Dovecot, implicit: bool
) -> None:
    """A certificate from a CA we do not trust ends the session before USER, PASS or AUTH: one
    connection, on which the client sent nothing but CAPA and STLS in clear (or nothing in
    clear at all, on the POP3S port) and then its side of the failed handshake; Dovecot logs no
    authentication attempt."""
    dovecot = private_dovecot
    offset = dovecot.log_offset()
    relay = Relay(dovecot.pop3s_port if implicit else dovecot.pop3_port)
    await relay.start()
    try:
        with pytest.raises(TLSError, match="CERTIFICATE_VERIFY_FAILED"):
            await open_pop3(
                POP3Account(
                    dovecot.host,
                    relay.port,
                    dovecot.user,
                    dovecot.password,
                    "t",
                    TLSSettings(ssl=implicit),
                    timeout=10.0,
                )
            )
        await asyncio.wait_for(relay.ended[0].wait(), 10)
        await asyncio.sleep(0.5)  # a second connection, if the client made one, shows here
    finally:
        await relay.stop()
    [sent] = relay.sent
    clear = b"" if implicit else b"CAPA\r\nSTLS\r\n"
    assert sent.startswith(clear + b"\x16\x03"), bytes(sent[:40])  # then a TLS ClientHello
    for word in (b"USER", b"PASS", b"AUTH", b"APOP", dovecot.password.encode()):
        assert word not in sent
    log = dovecot.wait_for_log(offset, "pop3-login: Info: Disconnected")
    lines = [line for line in log.splitlines() if "pop3-login" in line]
    assert len(lines) == 1 and "(no auth attempts" in lines[0], log
    assert "Login:" not in log, log


async def test_wrong_password() -> None:
    # A Dovecot of its own: a failed login makes Dovecot slow down later logins from the same
    # address for a while, which would only slow the other tests down.
    dovecot = Dovecot()
    dovecot.start()
    try:
        with pytest.raises(AuthError):
            await open_pop3(
                POP3Account(
                    dovecot.host,
                    dovecot.pop3_port,
                    dovecot.user,
                    "wrong",
                    "t",
                    TLSSettings(sslcertfile=dovecot.ca_file),
                    timeout=10.0,
                )
            )
    finally:
        dovecot.stop()


async def test_sasl_mechanisms(private_dovecot: Dovecot) -> None:
    """Each mechanism asked for is the one Dovecot saw the login with."""
    dovecot = private_dovecot
    for auth in ("plain", "login", "cram-md5"):
        offset = dovecot.log_offset()
        source = await open_pop3(
            POP3Account(
                dovecot.host,
                dovecot.pop3_port,
                dovecot.user,
                dovecot.password,
                "t",
                TLSSettings(sslcertfile=dovecot.ca_file),
                timeout=10.0,
                auth=auth,
            )
        )
        await source.commit()
        log = dovecot.wait_for_log(offset, "pop3-login: Info: Login:")
        [login] = [line for line in log.splitlines() if "Login:" in line]
        assert f"user=<{dovecot.user}>, method={auth.upper()}," in login, log
