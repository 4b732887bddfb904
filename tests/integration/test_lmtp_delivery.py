"""LMTP delivery (RFC 2033) to aiosmtpd's LMTP server, on a Unix socket and on TCP: LHLO, one
reply per accepted recipient after the dot, and the message kept unless every one accepted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from fetchd.delivery.headers import Trace
from fetchd.delivery.smtp import SMTPDeliverer, SMTPSettings
from fetchd.errors import DeliveryError

MESSAGE = b"Return-Path: <alice@example.org>\r\nSubject: hi\r\n\r\nhello\r\n"


@dataclass
class LMTPHandler:
    """Per-recipient verdicts: at RCPT (``at_rcpt``) or after the final dot (``after_dot``)."""

    at_rcpt: dict[str, str] = field(default_factory=dict)
    after_dot: dict[str, str] = field(default_factory=dict)
    received: list[tuple[list[str], bytes]] = field(default_factory=list)
    greetings: list[str] = field(default_factory=list)

    async def handle_EHLO(  # aiosmtpd's LMTP answers LHLO through its EHLO hook
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        self.greetings.append(hostname)
        session.host_name = hostname  # a handler's EHLO hook must say the greeting happened
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        verdict = self.at_rcpt.get(address.split("@")[0], "250 OK")
        if verdict.startswith("250"):
            envelope.rcpt_tos.append(address)
        return verdict

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append((list(envelope.rcpt_tos), envelope.original_content or b""))
        # LMTP: one reply line per accepted recipient, in RCPT order.
        return "\r\n".join(
            self.after_dot.get(rcpt.split("@")[0], "250 2.0.0 delivered")
            for rcpt in envelope.rcpt_tos
        )


@pytest.fixture
async def lmtp_socket(tmp_path: Path) -> AsyncIterator[tuple[LMTPHandler, str]]:
    handler = LMTPHandler()
    path = str(tmp_path / "lmtp.sock")
    server = await asyncio.get_running_loop().create_unix_server(
        lambda: LMTP(handler, hostname="lmtp.test"), path
    )
    yield handler, path
    server.close()
    await server.wait_closed()


def deliverer(smtphost: str, *recipients: str) -> SMTPDeliverer:
    return SMTPDeliverer(
        SMTPSettings(
            smtphunt=(smtphost,),
            recipients=recipients or ("joe",),
            lmtp=True,
            helo_name="fetchd.test",
            trace=Trace(invisible=True),
            timeout=5.0,
        )
    )


async def test_lhlo_and_delivery_over_a_unix_socket(lmtp_socket: tuple[LMTPHandler, str]) -> None:
    handler, path = lmtp_socket
    target = deliverer(path)
    outcome = await target.deliver(MESSAGE)
    await target.aclose()
    assert outcome.delivered and outcome.may_delete
    assert handler.greetings == ["fetchd.test"]
    # The Return-Path became MAIL FROM and is not passed on, as fetchmail does.
    assert handler.received == [(["joe@localhost"], MESSAGE.split(b"\r\n", 1)[1])]


async def test_every_recipient_answers_and_all_must_accept(
    lmtp_socket: tuple[LMTPHandler, str],
) -> None:
    handler, path = lmtp_socket
    target = deliverer(path, "joe", "ann", "bob")
    assert (await target.deliver(MESSAGE)).delivered  # three 250s read, none left over
    handler.after_dot["ann"] = "452 4.2.2 mailbox full"
    temporary = await target.deliver(MESSAGE)
    assert not temporary.delivered and not temporary.may_delete
    assert "452" in temporary.reason and "temporary; kept" in temporary.reason
    handler.after_dot = {"bob": "550 5.1.1 gone"}
    permanent = await target.deliver(MESSAGE)
    assert not permanent.delivered and not permanent.may_delete and permanent.code == 550
    # Mixed: the temporary refusal decides (the message is retried, not bounced).
    handler.after_dot = {"bob": "550 5.1.1 gone", "ann": "451 4.3.0 try later"}
    assert (await target.deliver(MESSAGE)).code == 451
    handler.after_dot = {}
    assert (await target.deliver(MESSAGE)).delivered  # the connection never got out of step
    await target.aclose()
    assert len(handler.greetings) == 1
    assert [rcpts for rcpts, _ in handler.received] == [
        ["joe@localhost", "ann@localhost", "bob@localhost"]
    ] * 5


async def test_a_recipient_refused_at_rcpt_keeps_the_message(
    lmtp_socket: tuple[LMTPHandler, str],
) -> None:
    handler, path = lmtp_socket
    handler.at_rcpt["ann"] = "550 5.1.1 no such user"
    target = deliverer(path, "joe", "ann")
    outcome = await target.deliver(MESSAGE)
    assert not outcome.delivered and not outcome.may_delete
    assert "550 at RCPT TO" in outcome.reason
    handler.at_rcpt.clear()
    assert (await target.deliver(MESSAGE)).delivered
    await target.aclose()
    # joe got the first copy (one reply read for one accepted recipient), then both the second.
    assert [rcpts for rcpts, _ in handler.received] == [
        ["joe@localhost"],
        ["joe@localhost", "ann@localhost"],
    ]


async def test_lmtp_over_tcp_needs_a_port_other_than_25() -> None:
    handler = LMTPHandler()
    server = await asyncio.get_running_loop().create_server(
        lambda: LMTP(handler, hostname="lmtp.test"), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    try:
        target = deliverer(f"127.0.0.1/{port}")
        assert (await target.deliver(MESSAGE)).delivered
        await target.aclose()
        for smtphost in ("127.0.0.1", "127.0.0.1/25"):
            with pytest.raises(DeliveryError, match="LMTP needs an explicit port other than 25"):
                await deliverer(smtphost).deliver(MESSAGE)
    finally:
        server.close()
        await server.wait_closed()
    assert len(handler.received) == 1


async def test_fetchd_delivers_over_lmtp_end_to_end(
    lmtp_socket: tuple[LMTPHandler, str], tmp_path: Path
) -> None:
    """`lmtp smtphost /path/to/socket` in an rc file: every message is delivered over LMTP
    (with fetchd's Received header) and leaves the server."""
    from fetchd.demo.pop3server import DemoPOP3Server
    from tests.support.command import run_fetchd

    handler, path = lmtp_socket
    messages = [b"Subject: m%d\r\n\r\nbody %d\r\n" % (i, i) for i in range(3)]
    pop = DemoPOP3Server("demo", "pw-lmtp", list(messages))
    await pop.start()
    try:
        rc = tmp_path / "fetchmailrc"
        rc.write_text(
            f"poll 127.0.0.1 proto pop3 port {pop.port} user demo password pw-lmtp is joe here"
            f' lmtp smtphost "{path}" sslproto ""\n'
        )
        rc.chmod(0o600)
        code, out = await run_fetchd(tmp_path, rc, timeout=60)
        assert code == 0, out
    finally:
        await pop.stop()
    assert [rcpts for rcpts, _ in handler.received] == [["joe@localhost"]] * 3
    for (_, content), message in zip(handler.received, messages, strict=True):
        assert content.startswith(b"Received: from 127.0.0.1") and content.endswith(message)
    assert pop.messages == []
