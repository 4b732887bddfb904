"""Pipelined and BDAT transactions against real MTAs: aiosmtpd in this process (it offers
neither PIPELINING nor CHUNKING; it takes pipelined commands when its EHLO hook offers the
first) and a real Postfix smtpd (it offers both), with refusals and a source that fails
mid-body."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from fetchd.delivery.headers import Trace
from fetchd.delivery.smtp import SMTPDeliverer, SMTPSettings
from fetchd.message import Message, RetrievalFailed, read_message
from tests.support.mta import Sink, running_mta
from tests.support.postfix import DOMAIN, Postfix

HEAD = b"From: alice@example.org\r\nSubject: pipelined\r\nMessage-ID: <p@example.org>\r\n\r\n"
BODY = b"hello\r\n.leading dot\r\n"


def settings(port: int, **extra: object) -> SMTPSettings:
    values: dict[str, object] = {
        "smtphunt": (f"127.0.0.1/{port}",),
        "recipients": ("joe",),
        "trace": Trace(server="pop.example.org"),
        "helo_name": "fetchd.test",
        "timeout": 10.0,
        "smtpaddress": DOMAIN,
    }
    values.update(extra)
    return SMTPSettings(**values)  # type: ignore[arg-type]


async def streamed(body: bytes, fail_at: int | None = None) -> Message:
    """A message read ahead by its header only; the body arrives in 64 KiB parts, and with
    ``fail_at`` the source breaks after that many octets of it."""

    async def source() -> AsyncIterator[bytes]:
        yield HEAD
        end = len(body) if fail_at is None else fail_at
        for start in range(0, end, 64 << 10):
            yield body[start : min(start + (64 << 10), end)]
        if fail_at is not None:
            raise OSError("the server dropped the connection")

    return await read_message(source(), ahead=1)


async def extensions(port: int) -> set[str]:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await smtp.connect()
    await smtp.ehlo()
    offered = set(smtp.esmtp_extensions)
    await smtp.quit()
    return offered


@dataclass
class Handler(Sink):
    """The tests' aiosmtpd sink, offering PIPELINING and refusing the users in ``refuse``."""

    pipelining: bool = True
    refuse: set[str] = field(default_factory=set)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.split("@")[0] in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
async def aiosmtpd() -> AsyncIterator[tuple[Handler, int]]:
    handler = Handler()
    async with running_mta(handler):
        yield handler, handler.port


async def test_aiosmtpd_offers_neither_extension(aiosmtpd: tuple[Handler, int]) -> None:
    """aiosmtpd 1.4's EHLO lists no PIPELINING and no CHUNKING (it has no BDAT): fetchd then
    sends one command at a time, as before."""
    handler, port = aiosmtpd
    handler.pipelining = False
    offered = await extensions(port)
    assert "pipelining" not in offered and "chunking" not in offered and "8bitmime" in offered


async def test_aiosmtpd_pipelined_with_refusals(aiosmtpd: tuple[Handler, int]) -> None:
    """With PIPELINING offered: delivered, one refused RCPT of two (the other has it; the
    message is kept, as one at a time), every RCPT refused, then delivered again on the same
    connection, which stayed in step."""
    handler, port = aiosmtpd
    assert "pipelining" in await extensions(port)
    deliverer = SMTPDeliverer(settings(port, recipients=("joe", "ann"), smtpaddress="x.test"))
    outcomes = [await deliverer.deliver(HEAD + BODY)]
    handler.refuse = {"ann"}
    outcomes.append(await deliverer.deliver(HEAD + BODY))
    handler.refuse = {"ann", "joe"}
    outcomes.append(await deliverer.deliver(HEAD + BODY))
    handler.refuse = set()
    outcomes.append(await deliverer.deliver(await streamed(BODY * 40_000)))
    await deliverer.aclose()
    assert [(o.delivered, o.code) for o in outcomes] == [
        (True, 250),
        (False, 550),
        (False, 550),
        (True, 250),
    ]
    assert "at RCPT TO" in outcomes[1].reason and "at RCPT TO" in outcomes[2].reason
    assert [rcpts for _, rcpts in handler.envelopes] == [
        ["joe@x.test", "ann@x.test"],
        ["joe@x.test"],
        ["joe@x.test", "ann@x.test"],
    ]
    assert handler.received[-1].endswith(HEAD + BODY * 40_000)


def smtpd_log(postfix: Postfix, since: int) -> str:
    return (postfix.root / "maillog").read_text(errors="replace")[since:]


async def test_postfix_smtpd_pipelining_and_bdat(postfix: Postfix) -> None:
    """Postfix's smtpd offers PIPELINING and CHUNKING: a small message goes as one BDAT LAST,
    a 1.2 MB streamed one as many BDAT chunks; a refused recipient and an all-refused envelope
    give the one-at-a-time outcomes; a source that breaks mid-body leaves Postfix nothing; every
    delivered message arrives once, intact."""
    offered = await extensions(postfix.port)
    assert {"pipelining", "chunking"} <= offered
    since = len(smtpd_log(postfix, 0))
    body = b"".join(b"line %06d of a large streamed message\r\n" % i for i in range(30_000))
    deliverer = SMTPDeliverer(settings(postfix.port))
    small = await deliverer.deliver(HEAD + BODY)
    large = await deliverer.deliver(await streamed(body))
    one_unknown = await deliverer.deliver(HEAD + BODY, recipients=("ann", "nobody"))
    all_unknown = await deliverer.deliver(HEAD + BODY, recipients=("nobody", "noone"))
    with pytest.raises(RetrievalFailed):
        await deliverer.deliver(await streamed(body, fail_at=300_000))
    after = await deliverer.deliver(HEAD + b"after the failure\r\n")
    await deliverer.aclose()
    assert small.delivered and large.delivered and after.delivered
    assert (one_unknown.delivered, one_unknown.code) == (False, 550)
    assert "at RCPT TO" in one_unknown.reason and "User unknown" in one_unknown.reason
    assert (all_unknown.delivered, all_unknown.code) == (False, 550)
    joe = await asyncio.to_thread(postfix.wait_for, "joe", 3)
    ann = await asyncio.to_thread(postfix.wait_for, "ann", 1)
    await asyncio.sleep(0.5)  # anything else Postfix would deliver has arrived by now
    joe = postfix.delivered("joe")
    log = smtpd_log(postfix, since)
    assert len(joe) == 3 and len(ann) == 1, log
    assert sorted(len(m) > 1_000_000 for m in joe) == [False, False, True]
    assert any(m.endswith((HEAD + body).replace(b"\r\n", b"\n")) for m in joe)
    assert any(m.endswith(b"\nafter the failure\n") for m in joe)
    assert "lost connection after BDAT" in log
    counts = [line for line in log.splitlines() if "disconnect from" in line and "bdat=" in line]
    assert counts, log
    bdat = sum(
        int(w.split("=")[1].split("/")[0])
        for c in counts
        for w in c.split()
        if w.startswith("bdat=")
    )
    assert bdat >= 1 + 1_200_000 // (256 << 10), counts
