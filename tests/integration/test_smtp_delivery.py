"""SMTP delivery against a real SMTP server (aiosmtpd, in this process, on loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from aiosmtplib.protocol import SMTPProtocol

from fetchd.delivery.headers import Trace
from fetchd.delivery.smtp import SMTPDeliverer, SMTPSettings
from fetchd.errors import DeliveryError


@dataclass
class Handler:
    received: list[tuple[str, list[str], bytes, list[str]]] = field(default_factory=list)
    greetings: int = 0
    mail_reply: str | None = None
    rcpt_reply: str | None = None
    data_reply: str | None = None
    data_stall: float = 0.0

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        self.greetings += 1
        session.host_name = hostname
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_stall:
            await asyncio.sleep(self.data_stall)
        if self.data_reply:
            return self.data_reply
        content = envelope.original_content or b""
        self.received.append(
            (
                envelope.mail_from or "",
                list(envelope.rcpt_tos),
                content,
                list(envelope.mail_options),
            )
        )
        return "250 queued"


@pytest.fixture
async def mta() -> AsyncIterator[tuple[Handler, int]]:
    handler = Handler()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, decode_data=False, enable_SMTPUTF8=True, hostname="mta.test"),
        "127.0.0.1",
        0,
    )
    port = server.sockets[0].getsockname()[1]
    yield handler, port
    server.close()
    await server.wait_closed()


def settings(port: int, **extra: object) -> SMTPSettings:
    values: dict[str, object] = {
        "smtphunt": (f"127.0.0.1/{port}",),
        "recipients": ("joe",),
        "trace": Trace(server="pop.example.org", invisible=bool(extra.pop("invisible", False))),
        "helo_name": "fetchd.test",
        "timeout": 5.0,
    }
    values.update(extra)
    return SMTPSettings(**values)  # type: ignore[arg-type]


MESSAGE = (
    b"Return-Path: <alice@example.org>\r\nFrom: alice@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
)


async def test_delivered_with_received_header_and_envelope(mta: tuple[Handler, int]) -> None:
    handler, port = mta
    deliverer = SMTPDeliverer(settings(port))
    outcome = await deliverer.deliver(MESSAGE)
    await deliverer.aclose()
    assert outcome.delivered and outcome.may_delete and outcome.code == 250
    [(sender, rcpts, content, _)] = handler.received
    assert sender == "alice@example.org"
    assert rcpts == ["joe@127.0.0.1"]
    assert content.startswith(
        b"Received: from pop.example.org\r\n\tby fetchd.test with POP3 (fetchd-"
    )
    assert b"\tfor <joe@127.0.0.1> (single-drop); " in content
    assert content.endswith(MESSAGE.split(b"\r\n", 1)[1])  # Return-Path is now the envelope
    assert b"Return-Path" not in content


async def test_one_connection_for_many_messages(mta: tuple[Handler, int]) -> None:
    handler, port = mta
    deliverer = SMTPDeliverer(settings(port, invisible=True))
    for i in range(10):
        assert (await deliverer.deliver(b"Subject: %d\r\n\r\nx\r\n" % i)).delivered
    await deliverer.aclose()
    assert handler.greetings == 1
    assert [content for _, _, content, _ in handler.received] == [
        b"Subject: %d\r\n\r\nx\r\n" % i for i in range(10)
    ]


async def test_bare_line_endings_and_smuggling_attempts(mta: tuple[Handler, int]) -> None:
    handler, port = mta
    hostile = (
        b"From: x@example.org\nSubject: s\r\n\r\nline\rnext\n.\nMAIL FROM:<evil@x>\n"
        b"\r\n.\rRCPT TO:<victim@x>\r\n.\r\nDATA\r\n"
    )
    deliverer = SMTPDeliverer(settings(port, invisible=True))
    assert (await deliverer.deliver(hostile)).delivered
    await deliverer.aclose()
    assert len(handler.received) == 1  # one message: nothing the body says became a command
    content = handler.received[0][2]
    assert b"\r" not in content.replace(b"\r\n", b"")
    assert b"\n" not in content.replace(b"\r\n", b"")
    assert content == (
        b"From: x@example.org\r\nSubject: s\r\n\r\nline\r\nnext\r\n.\r\n"
        b"MAIL FROM:<evil@x>\r\n\r\n.\r\nRCPT TO:<victim@x>\r\n.\r\nDATA\r\n"
    )


async def test_8bit_body_is_announced(
    mta: tuple[Handler, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, port = mta
    sent: list[tuple[bytes, ...]] = []
    original = SMTPProtocol.execute_command

    async def execute(self: SMTPProtocol, *args: bytes, timeout: float | None = None) -> object:
        if args[0] == b"MAIL":
            sent.append(args[2:])  # aiosmtpd consumes BODY= itself; look on our side
        return await original(self, *args, timeout=timeout)

    monkeypatch.setattr(SMTPProtocol, "execute_command", execute)
    deliverer = SMTPDeliverer(settings(port, invisible=True))
    body = "Subject: é\r\n\r\ncafé\r\n".encode()
    assert (await deliverer.deliver(body)).delivered
    assert (await deliverer.deliver(b"Subject: ascii\r\n\r\nx\r\n")).delivered
    await deliverer.aclose()
    assert sent == [(b"BODY=8BITMIME",), ()]
    assert handler.received[0][2] == body
    # pass8bits: announced for every message, as fetchmail does.
    deliverer = SMTPDeliverer(settings(port, invisible=True, pass8bits=True))
    assert (await deliverer.deliver(b"Subject: ascii\r\n\r\nx\r\n")).delivered
    await deliverer.aclose()
    assert sent[-1] == (b"BODY=8BITMIME",)


async def test_a_recipient_that_could_inject_is_refused(mta: tuple[Handler, int]) -> None:
    _, port = mta
    deliverer = SMTPDeliverer(settings(port, recipients=("joe>\r\nRCPT TO:<evil",)))
    with pytest.raises(DeliveryError, match="not a usable address"):
        await deliverer.deliver(MESSAGE)
    await deliverer.aclose()


@pytest.mark.parametrize("stage", ["mail_reply", "rcpt_reply", "data_reply"])
async def test_temporary_refusal_keeps_the_message(mta: tuple[Handler, int], stage: str) -> None:
    handler, port = mta
    setattr(handler, stage, "451 try again later")
    deliverer = SMTPDeliverer(settings(port))
    outcome = await deliverer.deliver(MESSAGE)
    assert not outcome.delivered and not outcome.may_delete and outcome.code == 451
    # The connection is still usable for the next message.
    setattr(handler, stage, None)
    assert (await deliverer.deliver(MESSAGE)).delivered
    await deliverer.aclose()


@pytest.mark.parametrize("stage", ["rcpt_reply", "data_reply"])
async def test_permanent_refusal_keeps_under_softbounce(
    mta: tuple[Handler, int], stage: str
) -> None:
    handler, port = mta
    setattr(handler, stage, "550 no such user")
    deliverer = SMTPDeliverer(settings(port))
    outcome = await deliverer.deliver(MESSAGE)
    await deliverer.aclose()
    assert not outcome.delivered and not outcome.may_delete
    assert "softbounce" in outcome.reason


async def test_no_softbounce_still_never_deletes_silently(mta: tuple[Handler, int]) -> None:
    """The MTA refuses the bounce too: the message stays on the server."""
    handler, port = mta
    handler.data_reply = "554 rejected"
    deliverer = SMTPDeliverer(settings(port, softbounce=False, postmaster="pm"))
    outcome = await deliverer.deliver(MESSAGE)
    await deliverer.aclose()
    assert not outcome.may_delete and "the bounce failed" in outcome.reason


async def test_antispam_code_at_mail_from_discards(mta: tuple[Handler, int]) -> None:
    handler, port = mta
    handler.mail_reply = "571 spam refused"
    deliverer = SMTPDeliverer(settings(port, antispam=(571,), softbounce=False))
    outcome = await deliverer.deliver(MESSAGE)
    await deliverer.aclose()
    assert not outcome.delivered and outcome.may_delete and outcome.code == 571


async def test_no_answer_to_the_final_dot_keeps_the_message(mta: tuple[Handler, int]) -> None:
    handler, port = mta
    handler.data_stall = 2.0
    deliverer = SMTPDeliverer(settings(port, timeout=0.5))
    outcome = await deliverer.deliver(MESSAGE)
    assert not outcome.delivered and not outcome.may_delete
    assert "no answer" in outcome.reason
    handler.data_stall = 0.0
    assert (await deliverer.deliver(MESSAGE)).delivered  # a new connection is made
    await deliverer.aclose()


async def test_smtphunt_tries_hosts_in_order(mta: tuple[Handler, int]) -> None:
    _handler, port = mta
    deliverer = SMTPDeliverer(settings(port, smtphunt=("127.0.0.1/1", f"127.0.0.1/{port}")))
    assert (await deliverer.deliver(MESSAGE)).delivered
    await deliverer.aclose()


async def test_no_reachable_mta_is_a_delivery_error() -> None:
    deliverer = SMTPDeliverer(settings(1, smtphunt=("127.0.0.1/1",)))
    with pytest.raises(DeliveryError, match="cannot reach any SMTP listener"):
        await deliverer.deliver(MESSAGE)


async def test_batchlimit_opens_a_new_connection_every_n_messages(mta: tuple[Handler, int]) -> None:
    handler, port = mta
    deliverer = SMTPDeliverer(settings(port, invisible=True, batchlimit=3))
    for i in range(7):
        assert (await deliverer.deliver(b"Subject: %d\r\n\r\nx\r\n" % i)).delivered
    await deliverer.aclose()
    assert handler.greetings == 3  # 3 + 3 + 1
    assert len(handler.received) == 7


async def test_a_large_message_goes_in_slices_intact(mta: tuple[Handler, int]) -> None:
    """3 MiB, dot-leading lines placed across the slice boundaries, then one small message on
    the same connection: both arrive exactly as sent."""
    from fetchd.delivery.smtpwire import WRITE_SLICE

    handler, port = mta
    line = b"x" * 998 + b"\r\n"
    body = bytearray(b"Subject: big\r\n\r\n")
    while len(body) < 3 * WRITE_SLICE * 4:
        body += line if len(body) % WRITE_SLICE > 2000 else b".dot\r\n"
    deliverer = SMTPDeliverer(settings(port, invisible=True))
    assert (await deliverer.deliver(bytes(body))).delivered
    assert (await deliverer.deliver(MESSAGE)).delivered
    await deliverer.aclose()
    assert [content for _, _, content, _ in handler.received] == [
        bytes(body),
        MESSAGE.split(b"\r\n", 1)[1],  # without Return-Path: it is the envelope sender
    ]
    assert handler.greetings == 1


async def test_a_cancelled_delivery_never_reuses_its_connection(mta: tuple[Handler, int]) -> None:
    """Cancelled mid-DATA (a daemon stopping): nothing is delivered, and the next message
    goes over a new connection, not after half a message."""
    handler, port = mta
    deliverer = SMTPDeliverer(settings(port, invisible=True))

    async def never_ready() -> None:
        await asyncio.sleep(3600)

    delivery = asyncio.create_task(deliverer.deliver(MESSAGE, ready=never_ready))
    await asyncio.sleep(0.2)
    delivery.cancel()
    with pytest.raises(asyncio.CancelledError):
        await delivery
    assert (await deliverer.deliver(b"Subject: next\r\n\r\nx\r\n")).delivered
    await deliverer.aclose()
    assert [content for _, _, content, _ in handler.received] == [b"Subject: next\r\n\r\nx\r\n"]
    assert handler.greetings == 2
