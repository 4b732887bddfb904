"""PIPELINING (RFC 2920) and CHUNKING (RFC 3030) on the wire, against the scripted listener
(tests/fakes/smtpserver.py): the envelope goes in one group, each refusal combination has the
outcome the one-command-at-a-time path gives it, and a source that fails mid-body leaves the
MTA with no message (no final dot, no BDAT LAST)."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvloop

from fetchd.delivery.headers import Trace
from fetchd.delivery.result import Outcome
from fetchd.delivery.smtp import SMTPDeliverer, SMTPSettings
from fetchd.delivery.smtpwire import MIN_CHUNK
from fetchd.message import Message, RetrievalFailed, read_message
from tests.fakes.smtpserver import Script, ScriptedSMTP

MESSAGE = b"Return-Path: <alice@example.org>\r\nFrom: alice@example.org\r\nSubject: hi\r\n\r\n"
BODY = b"hello\r\n.leading dot\r\n"

# How the MTA offers the extensions: none (one command at a time, the reference), PIPELINING
# with DATA, PIPELINING with BDAT, BDAT alone (each command waits, but no DATA round trip).
MODES = {
    "plain": ("8BITMIME",),
    "pipelining": ("PIPELINING", "8BITMIME"),
    "bdat": ("PIPELINING", "CHUNKING", "8BITMIME"),
    "chunking": ("CHUNKING", "8BITMIME"),
}


def settings(port: int, **extra: object) -> SMTPSettings:
    values: dict[str, object] = {
        "smtphunt": (f"127.0.0.1/{port}",),
        "recipients": ("joe", "ann"),
        "trace": Trace(server="pop.example.org"),
        "helo_name": "fetchd.test",
        "timeout": 2.0,
        "smtpaddress": "example.net",
    }
    values.update(extra)
    return SMTPSettings(**values)  # type: ignore[arg-type]


async def streamed(body: bytes, *, fail_at: int | None = None, piece: int = 4096) -> Message:
    """A message that streams (its header read ahead, the body in ``piece``-octet parts) and,
    with ``fail_at``, whose source breaks that many octets into the body."""

    async def source() -> AsyncIterator[bytes]:
        yield MESSAGE
        sent = 0
        while sent < len(body):
            part = body[sent : sent + piece]
            if fail_at is not None and sent + len(part) > fail_at:
                if fail_at > sent:
                    yield body[sent:fail_at]
                raise OSError("the server dropped the connection")
            yield part
            sent += len(part)
        if fail_at is not None:
            raise OSError("the server dropped the connection")

    return await read_message(source(), ahead=1)


async def deliver(
    script: Script, message: bytes | Message, count: int = 1, **extra: object
) -> tuple[list[Outcome], ScriptedSMTP]:
    """``count`` deliveries of the message over one deliverer, and the listener's record."""
    async with ScriptedSMTP(script) as server:
        deliverer = SMTPDeliverer(settings(server.port, **extra))
        outcomes = [await deliverer.deliver(message) for _ in range(count)]
        await deliverer.aclose()
    return outcomes, server


def envelope_reads(server: ScriptedSMTP) -> list[int]:
    """For the first transaction: how many replies the listener had sent when MAIL, each RCPT
    and DATA or the first BDAT arrived."""
    verbs = server.verbs()
    start = verbs.index("MAIL")
    end = next(i for i in range(start, len(verbs)) if verbs[i] in ("DATA", "BDAT"))
    return [c.answered for c in server.commands[start : end + 1]]


@pytest.mark.parametrize("mode", ["pipelining", "bdat"])
async def test_envelope_goes_in_one_group(mode: str) -> None:
    """MAIL, both RCPTs and DATA (or the first BDAT) reach the MTA before it answered any."""
    [outcome], server = await deliver(Script(extensions=MODES[mode]), MESSAGE + BODY)
    assert outcome.delivered and outcome.may_delete
    reads = envelope_reads(server)
    assert len(reads) == 4 and len(set(reads)) == 1, reads
    [kept] = server.messages
    assert kept.rcpts == ["joe@example.net", "ann@example.net"]
    assert kept.content.startswith(b"Received: from pop.example.org\r\n")
    assert kept.content.endswith(b"Subject: hi\r\n\r\n" + BODY)
    if mode == "bdat":
        assert [c.line for c in server.commands if c.line.startswith("BDAT")] == [
            f"BDAT {len(kept.content)} LAST"
        ]


async def test_without_pipelining_each_command_waits() -> None:
    """The reference path sends MAIL, each RCPT and DATA each after the reply before it."""
    _, server = await deliver(Script(extensions=MODES["plain"]), MESSAGE + BODY)
    reads = envelope_reads(server)
    assert reads == sorted(set(reads)) and len(reads) == 4, reads


async def test_small_messages_cost_one_round_trip_each() -> None:
    """With BDAT, each message's MAIL arrives only after the previous message's last reply,
    and every other command of it with that MAIL: one wait per message."""
    _, server = await deliver(Script(extensions=MODES["bdat"]), MESSAGE + BODY, count=3)
    transactions = [c for c in server.commands if c.line.split()[0] in ("MAIL", "RCPT", "BDAT")]
    groups = sorted({c.answered for c in transactions})
    assert len(groups) == 3 and len(transactions) == 3 * 4


@pytest.mark.parametrize("mode", ["bdat", "chunking"])
async def test_streamed_body_as_bdat_chunks(mode: str) -> None:
    """A streamed body goes as several BDAT chunks, the last with LAST, byte for byte; with
    PIPELINING no chunk waits for its reply (the listener holds them until LAST)."""
    body = b"".join(b"line %06d of a large message\r\n" % i for i in range(20_000))
    script = Script(extensions=MODES[mode], hold_bdat=mode == "bdat")
    [outcome], server = await deliver(script, await streamed(body, piece=50_000))
    assert outcome.delivered
    [kept] = server.messages
    assert kept.content.endswith(b"Subject: hi\r\n\r\n" + body)
    chunks = [c.line for c in server.commands if c.line.startswith("BDAT")]
    assert len(chunks) >= 5 and chunks[-1].endswith(" LAST")
    assert not any(c.endswith("LAST") for c in chunks[:-1])
    assert sum(int(c.split()[1]) for c in chunks) == len(kept.content)


# (name, script, how the outcome reads): every refusal at every stage. Each case is also run
# without the extensions, and both paths must agree.
REFUSALS: dict[str, tuple[Script, bool, bool, int | None, str]] = {
    "mail 451": (Script(mail="451 4.3.0 try later"), False, False, 451, "at MAIL FROM"),
    "mail 550": (Script(mail="550 5.7.1 no"), False, False, 550, "at MAIL FROM"),
    "one rcpt 550": (Script(rcpt={"ann": "550 5.1.1 no ann"}), False, False, 550, "at RCPT TO"),
    "one rcpt 450": (Script(rcpt={"joe": "450 4.2.0 busy"}), False, False, 450, "at RCPT TO"),
    "all rcpts refused": (
        Script(rcpt={"joe": "450 4.2.0 busy", "ann": "550 5.1.1 no ann"}),
        False,
        False,
        550,
        "at RCPT TO",
    ),
    "data 451": (Script(data="451 4.3.0 not now"), False, False, 451, "at DATA"),
    "data 554": (Script(data="554 5.6.0 no data"), False, False, 554, "at DATA"),
    "end 452": (Script(end="452 4.3.1 full"), False, False, 452, "at end of DATA"),
    "end 554": (Script(end="554 5.7.1 spam"), False, False, 554, "at end of DATA"),
    "end 452 after rcpt 550": (
        Script(rcpt={"ann": "550 5.1.1 no ann"}, end="452 4.3.1 full"),
        False,
        False,
        452,
        "at end of DATA",
    ),
}


def same_outcome(outcome: Outcome, mode: str) -> tuple[bool, bool, int | None, str]:
    reason = outcome.reason
    if mode in ("bdat", "chunking"):
        reason = reason.replace("at BDAT LAST", "at end of DATA")
    return outcome.delivered, outcome.may_delete, outcome.code, reason


@pytest.mark.parametrize(
    ("mode", "case"),
    [
        (mode, case)
        for mode in ("pipelining", "bdat", "chunking")
        for case in sorted(REFUSALS)
        if mode == "pipelining" or not case.startswith("data")  # BDAT has no DATA
    ],
)
async def test_refusals_as_one_command_at_a_time(mode: str, case: str) -> None:
    """Each refusal gives the outcome the one-at-a-time path gives, the connection stays in
    step (a second message on it is judged the same) and no refused message is kept."""
    script, delivered, may_delete, code, where = REFUSALS[case]
    reference, plain = await deliver(
        Script(**{**script.__dict__, "extensions": MODES["plain"]}), MESSAGE + BODY, count=2
    )
    outcomes, server = await deliver(
        Script(**{**script.__dict__, "extensions": MODES[mode]}), MESSAGE + BODY, count=2
    )
    first = outcomes[0]
    assert (first.delivered, first.may_delete, first.code) == (delivered, may_delete, code)
    assert where in same_outcome(first, mode)[3], first.reason
    assert [same_outcome(o, mode) for o in outcomes] == [
        same_outcome(o, "plain") for o in reference
    ]
    assert [(m.rcpts, m.content) for m in server.messages] == [
        (m.rcpts, m.content) for m in plain.messages
    ]
    assert server.sessions == 1, "the connection stayed in step and was reused"


@pytest.mark.parametrize("mode", ["bdat", "chunking"])
async def test_refused_bdat_chunk_stops_the_message(mode: str) -> None:
    """A refused BDAT chunk decides at stage BDAT, the listener keeps nothing and the
    connection carries on with the next message; without PIPELINING no further chunk is sent
    (with it, chunks already on their way are discarded by the MTA, RFC 3030 4.2)."""
    body = b"x" * 70 + b"\r\n"
    script = Script(extensions=MODES[mode], bdat={0: "552 5.3.4 too big"})
    async with ScriptedSMTP(script) as server:
        deliverer = SMTPDeliverer(settings(server.port))
        first = await deliverer.deliver(await streamed(body * 5000, piece=70_000))
        chunks = [c.line for c in server.commands if c.line.startswith("BDAT")]
        script.bdat = {}
        second = await deliverer.deliver(MESSAGE + BODY)
        await deliverer.aclose()
    assert (first.delivered, first.may_delete, first.code) == (False, False, 552)
    assert "SMTP 552 at BDAT:" in first.reason
    if mode == "chunking":  # each chunk waits for its reply: the refused one is the last
        assert len(chunks) == 1, chunks
    assert second.delivered and len(server.messages) == 1 and server.sessions == 1


@pytest.mark.parametrize("mode", ["pipelining", "bdat"])
async def test_spam_and_bounce_rules_apply(mode: str) -> None:
    """antispam discards; with no softbounce a refused message is bounced over the same
    connection (with the null sender) and only then may leave the server."""
    spam = Script(extensions=MODES[mode], end="554 5.7.1 spam")
    [outcome], _ = await deliver(spam, MESSAGE + BODY, antispam=(554,), softbounce=False)
    assert (outcome.delivered, outcome.may_delete) == (False, True), outcome.reason
    refused = Script(extensions=MODES[mode], rcpt={"joe": "550 5.1.1 no", "ann": "550 5.1.1 no"})
    [outcome], server = await deliver(refused, MESSAGE + BODY, softbounce=False)
    assert (outcome.delivered, outcome.may_delete, outcome.code) == (False, True, 550), outcome
    [bounce] = server.messages
    assert bounce.sender == "" and bounce.rcpts == ["alice@example.org"]
    assert b"550 5.1.1 no" in bounce.content


@pytest.mark.parametrize("mode", ["pipelining", "bdat"])
async def test_lmtp_one_reply_per_accepted_recipient(mode: str) -> None:
    """LMTP: after the end of data one reply per accepted recipient, read in full (the next
    message is judged on its own replies); a 4xx of one of them keeps the message."""
    script = Script(
        extensions=MODES[mode],
        lmtp=True,
        rcpt={"bob": "550 5.1.1 no bob"},
        after_end={"ann": "452 4.2.2 over quota"},
    )
    recipients = ("joe", "bob", "ann", "eve")
    async with ScriptedSMTP(script) as server:
        deliverer = SMTPDeliverer(settings(server.port, lmtp=True, recipients=recipients))
        first = await deliverer.deliver(MESSAGE + BODY)
        script.after_end, script.rcpt = {}, {}
        second = await deliverer.deliver(MESSAGE + BODY)
        await deliverer.aclose()
    assert (first.delivered, first.code) == (False, 452) and "over quota" in first.reason
    assert second.delivered and server.sessions == 1
    assert [m.rcpts for m in server.messages] == [
        ["joe@example.net", "eve@example.net"],
        [f"{r}@example.net" for r in recipients],
    ]


@pytest.mark.parametrize("fail_at", [0, 1, 150_000])
@pytest.mark.parametrize("mode", ["pipelining", "bdat", "chunking"])
async def test_source_failure_mid_body_leaves_no_message(mode: str, fail_at: int) -> None:
    """A source that breaks 0, 1 or N octets into the body: the error goes through, no final
    dot and no BDAT LAST were sent, the connection is dropped and the MTA kept nothing."""
    body = b"y" * 78 + b"\r\n"
    async with ScriptedSMTP(Script(extensions=MODES[mode])) as server:
        deliverer = SMTPDeliverer(settings(server.port))
        message = await streamed(body * 4000, fail_at=fail_at, piece=60_000)
        with pytest.raises(RetrievalFailed):
            await deliverer.deliver(message)
        await asyncio.sleep(0.05)  # the listener sees the connection close
        before = [c.line for c in server.commands]
        after = await deliverer.deliver(MESSAGE + BODY)
        await deliverer.aclose()
    assert after.delivered
    assert not any(line.endswith("LAST") for line in before), before
    [kept] = server.messages  # only the message after the failure
    assert kept.content.endswith(BODY)
    assert server.sessions == 2, "the connection in the middle of a message was dropped"
    if mode == "pipelining" or fail_at > MIN_CHUNK:  # BDAT holds a short start back
        assert server.partial and all(b"hi\r\n\r\n" in p for p in server.partial)


async def test_354_after_every_rcpt_refused_drops_the_connection() -> None:
    """A listener that answers DATA with 354 when no RCPT was accepted gets no dot (the empty
    message would be committed for nobody): the connection is dropped, the refusal stands."""
    script = Script(
        extensions=MODES["pipelining"],
        rcpt={"joe": "550 5.1.1 no", "ann": "550 5.1.1 no"},
        data_anyway=True,
    )
    outcomes, server = await deliver(script, MESSAGE + BODY, count=2)
    assert [(o.delivered, o.code) for o in outcomes] == [(False, 550), (False, 550)]
    assert "at RCPT TO" in outcomes[0].reason
    assert server.messages == [] and server.sessions == 2
    assert not any(c.line == "." for c in server.commands)


@pytest.mark.parametrize("mode", ["pipelining", "bdat"])
async def test_no_answer_to_the_end_keeps_the_message(mode: str) -> None:
    """No reply to the final dot or BDAT LAST: unknown, so kept, and the link is not reused."""
    script = Script(extensions=MODES[mode], silent_end=True)
    [outcome], _ = await deliver(script, MESSAGE + BODY, timeout=0.3)
    assert (outcome.delivered, outcome.may_delete) == (False, False)
    assert outcome.reason.startswith("SMTP no answer at ") and outcome.reason.endswith("; kept")


async def test_scripted_listener_contract_with_smtplib() -> None:
    """The fake itself, against the standard library's client: EHLO lists the scripted
    extensions, DATA is unstuffed, a refused RCPT is reported as smtplib reports it."""
    script = Script(extensions=("PIPELINING", "CHUNKING"), rcpt={"bad": "550 5.1.1 no"})
    async with ScriptedSMTP(script) as server:

        def client() -> tuple[set[str], dict[str, tuple[int, bytes]]]:
            with smtplib.SMTP("127.0.0.1", server.port, timeout=5) as smtp:
                smtp.ehlo("client.test")
                features = set(smtp.esmtp_features)
                refused = smtp.sendmail(
                    "a@b.test", ["ok@c.test", "bad@c.test"], b"Subject: x\r\n\r\n.dot\r\n"
                )
            return features, refused

        features, refused = await asyncio.to_thread(client)
    assert {"pipelining", "chunking"} <= features
    assert refused == {"bad@c.test": (550, b"5.1.1 no")}
    [kept] = server.messages
    assert kept.rcpts == ["ok@c.test"] and kept.content == b"Subject: x\r\n\r\n.dot\r\n"


@pytest.mark.parametrize("whole", [True, False])
@pytest.mark.parametrize("mode", ["pipelining", "bdat", "chunking"])
async def test_commit_waits_for_the_previous_record(mode: str, whole: bool) -> None:
    """``ready`` (the previous message's record) is awaited before the step that commits this
    message: the MTA has nothing while it runs, even after a pause; if it fails, the error goes
    through and the MTA never gets the message."""
    async with ScriptedSMTP(Script(extensions=MODES[mode])) as server:
        deliverer = SMTPDeliverer(settings(server.port))
        seen: list[int] = []

        async def ready() -> None:
            await asyncio.sleep(0.05)  # the MTA has had time to act on what it got
            seen.append(len(server.messages))

        body = BODY * 20_000
        message = MESSAGE + body if whole else await streamed(body, piece=60_000)
        assert (await deliverer.deliver(message, ready=ready)).delivered
        assert seen == [0] and len(server.messages) == 1

        async def failing() -> None:
            raise RuntimeError("the UID store is gone")

        message = MESSAGE + body if whole else await streamed(body, piece=60_000)
        with pytest.raises(RuntimeError, match="UID store"):
            await deliverer.deliver(message, ready=failing)
        await asyncio.sleep(0.05)
        kept = len(server.messages)
        assert (await deliverer.deliver(MESSAGE + BODY)).delivered  # on a new connection
        await deliverer.aclose()
    assert kept == 1 and len(server.messages) == 2 and server.sessions == 2


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_lmtp_on_a_unix_socket_under_both_loops(tmp_path: Path, loop: str) -> None:
    """LMTP with PIPELINING and CHUNKING on a Unix socket, under asyncio's loop and uvloop (the
    command's): the transport's switch to the reply tap works on both."""
    path = str(tmp_path / "lmtp.sock")

    async def main() -> tuple[list[Outcome], int]:
        script = Script(lmtp=True, after_end={"ann": "452 4.2.2 over quota"})
        async with ScriptedSMTP(script, path=path) as server:
            deliverer = SMTPDeliverer(settings(0, smtphunt=(path,), lmtp=True))
            outcomes = [await deliverer.deliver(MESSAGE + BODY)]
            script.after_end = {}
            outcomes.append(await deliverer.deliver(await streamed(BODY * 30_000)))
            await deliverer.aclose()
        return outcomes, len(server.messages)

    run = uvloop.run if loop == "uvloop" else asyncio.run
    outcomes, kept = run(main())
    assert [(o.delivered, o.code) for o in outcomes] == [(False, 452), (True, 250)] and kept == 2
