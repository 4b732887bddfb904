"""Bounce rules against aiosmtpd: refusals at MAIL, RCPT, DATA and after the final dot, with
softbounce, bouncemail, spambounce, antispam and postmaster; the notification's content."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from fetchd.delivery.headers import Trace
from fetchd.delivery.smtp import SMTPDeliverer, SMTPSettings

MESSAGE = (
    b"Return-Path: <alice@example.org>\r\nFrom: alice@example.org\r\nSubject: the original\r\n"
    b"Message-ID: <orig@example.org>\r\n\r\nthe private body\r\n"
)


@dataclass
class RefusingMTA:
    """Refuses ordinary mail at one stage; accepts notifications (null sender) unless told."""

    refuse: dict[str, str] = field(default_factory=dict)  # "MAIL" | "RCPT" | "DATA" -> reply
    refuse_bounces: bool = False
    accepted: list[tuple[str, list[str], bytes]] = field(default_factory=list)

    def _verdict(self, stage: str, sender: str) -> str | None:
        if sender in ("", "<>") and not self.refuse_bounces:
            return None
        return self.refuse.get(stage)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if (verdict := self._verdict("MAIL", address)) is not None:
            return verdict
        envelope.mail_from = address  # "<>" for the null sender (aiosmtpd needs it non-empty)
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if (verdict := self._verdict("RCPT", envelope.mail_from or "")) is not None:
            return verdict
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        # At DATA a notification is known by its content (an original may have a null sender).
        notification = b"report-type=delivery-status" in content
        if self.refuse.get("DATA") and (self.refuse_bounces or not notification):
            return self.refuse["DATA"]
        sender = "" if envelope.mail_from == "<>" else envelope.mail_from or ""
        self.accepted.append((sender, list(envelope.rcpt_tos), content))
        return "250 queued"


@pytest.fixture
async def mta() -> AsyncIterator[tuple[RefusingMTA, int]]:
    handler = RefusingMTA()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(handler, decode_data=False, hostname="mta.test"), "127.0.0.1", 0
    )
    yield handler, server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def deliver(port: int, message: bytes = MESSAGE, **extra: object) -> object:
    values: dict[str, object] = {
        "smtphunt": (f"127.0.0.1/{port}",),
        "recipients": ("joe",),
        "trace": Trace(server="pop.example.org"),
        "helo_name": "fetchd.test",
        "timeout": 5.0,
        "postmaster": "pm",
        "softbounce": False,
    }
    values.update(extra)
    deliverer = SMTPDeliverer(SMTPSettings(**values))  # type: ignore[arg-type]
    try:
        return await deliverer.deliver(message)
    finally:
        await deliverer.aclose()


STAGES = ["MAIL", "RCPT", "DATA"]


@pytest.mark.parametrize("stage", STAGES)
async def test_softbounce_keeps_and_tells_nobody(mta: tuple[RefusingMTA, int], stage: str) -> None:
    handler, port = mta
    handler.refuse[stage] = "550 5.7.1 no"
    outcome = await deliver(port, softbounce=True)
    assert not outcome.delivered and not outcome.may_delete  # type: ignore[attr-defined]
    assert "softbounce; kept" in outcome.reason  # type: ignore[attr-defined]
    assert handler.accepted == []


@pytest.mark.parametrize("stage", STAGES)
async def test_no_softbounce_bounces_to_the_sender_then_deletes(
    mta: tuple[RefusingMTA, int], stage: str
) -> None:
    handler, port = mta
    handler.refuse[stage] = "550 5.1.1 <joe@localhost>: no such user"
    outcome = await deliver(port)
    assert outcome.may_delete and not outcome.delivered  # type: ignore[attr-defined]
    assert "bounced to alice@example.org" in outcome.reason  # type: ignore[attr-defined]
    [(sender, rcpts, content)] = handler.accepted
    assert sender == "" and rcpts == ["alice@example.org"]  # null sender: never bounced back
    report = email.message_from_bytes(content, policy=email.policy.compat32)
    assert report.get_content_type() == "multipart/report"
    assert report["To"] == "alice@example.org"
    text, status, headers = report.get_payload()
    assert "joe@127.0.0.1: 550 5.1.1" in text.get_payload()
    block = status.get_payload()[1]
    assert block["Final-Recipient"] == "rfc822; joe@127.0.0.1"
    assert block["Status"] == "5.1.1" and block["Action"] == "failed"
    assert "550 5.1.1 <joe@localhost>: no such user" in block["Diagnostic-Code"]
    assert "Subject: the original" in headers.get_payload()
    assert b"the private body" not in content  # the header only, never the body


async def test_no_bouncemail_tells_the_postmaster(mta: tuple[RefusingMTA, int]) -> None:
    handler, port = mta
    handler.refuse["DATA"] = "554 rejected"
    outcome = await deliver(port, bouncemail=False, smtpaddress="example.net")
    assert outcome.may_delete  # type: ignore[attr-defined]
    assert [rcpts for _, rcpts, _ in handler.accepted] == [["pm@example.net"]]


@pytest.mark.parametrize(
    ("reply", "notified", "explained"),
    [
        ("552 5.3.4 message too big", "alice@example.org", "too large (SMTP error 552)"),
        ("553 5.1.8 bad sender domain", "pm@127.0.0.1", "invalid sender address"),
    ],
)
async def test_552_bounces_to_the_sender_and_553_to_the_postmaster(
    mta: tuple[RefusingMTA, int], reply: str, notified: str, explained: str
) -> None:
    handler, port = mta
    handler.refuse["MAIL"] = reply
    outcome = await deliver(port)
    assert outcome.may_delete  # type: ignore[attr-defined]
    [(_, rcpts, content)] = handler.accepted
    assert rcpts == [notified] and explained.encode() in content


@pytest.mark.parametrize("reply", ["530 5.7.0 must issue STARTTLS first", "451 4.3.0 later"])
async def test_530_and_4xx_keep_without_a_bounce(mta: tuple[RefusingMTA, int], reply: str) -> None:
    handler, port = mta
    handler.refuse["MAIL"] = reply
    outcome = await deliver(port)
    assert not outcome.may_delete and handler.accepted == []  # type: ignore[attr-defined]


async def test_antispam_discards_silently_and_spambounce_tells(
    mta: tuple[RefusingMTA, int],
) -> None:
    handler, port = mta
    handler.refuse["MAIL"] = "571 5.7.1 unsolicited mail refused"
    discarded = await deliver(port, antispam=(571,))
    assert discarded.may_delete and "spam; discarded" in discarded.reason  # type: ignore[attr-defined]
    assert handler.accepted == []
    told = await deliver(port, antispam=(571,), spambounce=True)
    assert told.may_delete  # type: ignore[attr-defined]
    assert [rcpts for _, rcpts, _ in handler.accepted] == [["alice@example.org"]]
    # fetchmail 6.4 lists no antispam code by default: 571 is then an ordinary 5xx.
    kept = await deliver(port, softbounce=True)
    assert not kept.may_delete  # type: ignore[attr-defined]


async def test_a_sender_that_cannot_get_bounces_is_replaced_by_the_postmaster(
    mta: tuple[RefusingMTA, int],
) -> None:
    handler, port = mta
    handler.refuse["DATA"] = "550 no"
    for sender in (b"<>", b"<MAILER-DAEMON@example.org>"):
        message = MESSAGE.replace(b"<alice@example.org>", sender)
        outcome = await deliver(port, message)
        assert outcome.may_delete  # type: ignore[attr-defined]
    assert [rcpts for _, rcpts, _ in handler.accepted] == [["pm@127.0.0.1"]] * 2
    # With nobody to tell, a permanent refusal never deletes: the message stays.
    nobody = await deliver(port, MESSAGE.replace(b"<alice@example.org>", b"<>"), postmaster="")
    assert not nobody.may_delete and "nobody to notify" in nobody.reason  # type: ignore[attr-defined]


async def test_a_bounce_the_mta_refuses_keeps_the_message(mta: tuple[RefusingMTA, int]) -> None:
    handler, port = mta
    handler.refuse["DATA"] = "554 rejected"
    handler.refuse_bounces = True
    outcome = await deliver(port)
    assert not outcome.may_delete and "the bounce failed" in outcome.reason  # type: ignore[attr-defined]


async def test_lmtp_bounces_go_to_the_smtp_listener(mta: tuple[RefusingMTA, int], tmp_path) -> None:  # type: ignore[no-untyped-def]
    handler, port = mta

    class Refuser:
        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            return "550 5.2.2 mailbox full"

    path = str(tmp_path / "lmtp.sock")
    lmtp = await asyncio.get_running_loop().create_unix_server(
        lambda: LMTP(Refuser(), hostname="lmtp.test"), path
    )
    try:
        outcome = await deliver(0, smtphunt=(path,), lmtp=True, bounce_host=f"127.0.0.1/{port}")
    finally:
        lmtp.close()
        await lmtp.wait_closed()
    assert outcome.may_delete  # type: ignore[attr-defined]
    [(sender, rcpts, content)] = handler.accepted
    assert sender == "" and rcpts == ["alice@example.org"] and b"5.2.2" in content


class DataCommandRefuser:
    """A scripted SMTP listener that refuses the DATA command itself (before 354), which
    aiosmtpd cannot do, and accepts a notification (null sender) afterwards."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.notifications: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted ESMTP\r\n")
        sender = None
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-scripted\r\n250 8BITMIME\r\n")
                elif verb == b"MAIL":
                    sender = line[10:].strip()
                    writer.write(b"250 ok\r\n")
                elif verb == b"DATA" and sender != b"<>":
                    writer.write(self.reply + b"\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    body = b""
                    while (chunk := await reader.readline()) != b".\r\n":
                        body += chunk
                    self.notifications.append(body)
                    writer.write(b"250 queued\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:  # RCPT, RSET, NOOP
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        finally:
            writer.close()


@pytest.mark.parametrize(
    ("reply", "deleted"), [(b"554 5.3.0 no DATA for you", True), (b"451 4.3.0 later", False)]
)
async def test_a_refusal_of_the_data_command_itself(reply: bytes, deleted: bool) -> None:
    listener = DataCommandRefuser(reply)
    server = await asyncio.start_server(listener.serve, "127.0.0.1", 0)
    try:
        outcome = await deliver(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()
    assert outcome.may_delete is deleted  # type: ignore[attr-defined]
    assert "at DATA" in outcome.reason  # type: ignore[attr-defined]
    assert len(listener.notifications) == (1 if deleted else 0)
    if deleted:
        assert b"Diagnostic-Code: smtp; 554 5.3.0 no DATA for you" in listener.notifications[0]
