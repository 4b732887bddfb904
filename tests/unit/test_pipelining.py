"""fetchd.delivery.pipelining.Exchange: the verdict on a pipelined transaction's replies, for
every combination of replies to MAIL, the RCPTs, DATA or the BDAT chunks and the end of data,
against the rules of the one-command-at-a-time path (fetchd.delivery.smtp)."""

from __future__ import annotations

import itertools
from typing import NamedTuple

import pytest

from fetchd.delivery.pipelining import (
    Exchange,
    Kind,
    Refused,
    bdat,
    command,
    envelope,
    envelope_kinds,
)
from fetchd.errors import DeliveryError


class R(NamedTuple):
    code: int
    message: str = "text"


def one_at_a_time(
    mail: int, rcpts: tuple[int, ...], data: int, ends: tuple[int, ...], lmtp: bool
) -> tuple[str, int] | None:
    """What smtp.py's sequential path decides, written out from its code: the stage and code
    of the deciding refusal, or None when delivered."""
    if mail != 250:
        return ("MAIL FROM", mail)
    refusal = None
    for code in rcpts:
        if code not in (250, 251):
            refusal = code
    accepted = sum(code in (250, 251) for code in rcpts)
    if not accepted:
        assert refusal is not None
        return ("RCPT TO", refusal)
    if data not in (354, 250):  # 250: the BDAT chunks' acceptance, for the BDAT form
        return ("DATA" if data != 552 else "BDAT", data)
    replies = [("END", code) for code in ends[: accepted if lmtp else 1] if code != 250]
    if refusal is not None:
        replies.append(("RCPT TO", refusal))
    temporary = [r for r in replies if 400 <= r[1] < 500]
    chosen = temporary[0] if temporary else replies[0] if replies else None
    return chosen


def pipelined(
    mail: int,
    rcpts: tuple[int, ...],
    data: int,
    ends: tuple[int, ...],
    lmtp: bool,
    chunking: bool,
) -> tuple[str, int] | None:
    """The same replies through an Exchange, as a pipelining client gets them: the whole
    group answered (a refused MAIL makes the MTA answer the rest 503), then the end of data
    unless the group decided."""
    exchange = Exchange(len(rcpts), lmtp=lmtp, chunking=chunking)
    middle: Kind = "BDAT" if chunking else "DATA"
    for kind in [*envelope_kinds(len(rcpts)), middle]:
        exchange.sent(kind)
    mail_ok = mail == 250
    exchange.received(R(mail))
    for code in rcpts:
        exchange.received(R(code if mail_ok else 503))
    any_rcpt = mail_ok and any(code in (250, 251) for code in rcpts)
    exchange.received(R(data if any_rcpt else 554))
    if exchange.decided is None:
        exchange.sent("END")
        accepted = sum(code in (250, 251) for code in rcpts)
        assert exchange.awaiting == (accepted if lmtp else 1)
        for code in ends[: exchange.awaiting]:
            exchange.received(R(code))
    assert exchange.awaiting == 0
    verdict = exchange.result()
    if verdict is None:
        return None
    stage = {"end of DATA": "END", "BDAT LAST": "END"}.get(verdict.stage, verdict.stage)
    return (stage, verdict.code)


RCPT_CODES = (250, 251, 450, 550)
END_CODES = (250, 452, 554)


def combinations(chunking: bool) -> list[tuple[int, tuple[int, ...], int, tuple[int, ...]]]:
    middles = (250, 552) if chunking else (354, 451, 554)
    out = []
    for count in (1, 2, 3):
        for rcpts in itertools.product(RCPT_CODES, repeat=count):
            for ends in itertools.product(END_CODES, repeat=count):
                for mail in (250, 451, 550):
                    for middle in middles:
                        out.append((mail, rcpts, middle, ends))
    return out


@pytest.mark.parametrize("lmtp", [False, True])
@pytest.mark.parametrize("chunking", [False, True])
def test_every_reply_combination_as_one_at_a_time(chunking: bool, lmtp: bool) -> None:
    """Every combination of 1-3 recipients' replies, MAIL's, DATA's or a BDAT chunk's and the
    end's (one, or LMTP's one per accepted recipient) decides as the sequential path does."""
    cases = combinations(chunking)
    differ = [
        case
        for case in cases
        if pipelined(*case, lmtp=lmtp, chunking=chunking) != one_at_a_time(*case, lmtp=lmtp)
    ]
    assert len(cases) > 4000 and differ == []


def fed(replies: list[tuple[Kind, int]], recipients: int = 2, lmtp: bool = False) -> Exchange:
    exchange = Exchange(recipients, lmtp=lmtp)
    for kind, _ in replies:
        if kind != "END" or not exchange.ended:
            exchange.sent(kind)
    for _, code in replies:
        exchange.received(R(code, f"says {code}"))
    return exchange


@pytest.mark.parametrize(
    ("replies", "decided", "result"),
    [
        # (kind, code) in order; decided: the refusal known before the end; result: the verdict
        ([("MAIL", 250), ("RCPT", 250), ("RCPT", 250), ("DATA", 354), ("END", 250)], None, None),
        (
            [("MAIL", 550), ("RCPT", 503), ("RCPT", 503), ("DATA", 503)],
            Refused(550, "says 550", "MAIL FROM"),
            Refused(550, "says 550", "MAIL FROM"),
        ),
        (
            [("MAIL", 250), ("RCPT", 450), ("RCPT", 550), ("DATA", 554)],
            Refused(550, "says 550", "RCPT TO"),  # the last refusal, as smtp.py keeps it
            Refused(550, "says 550", "RCPT TO"),
        ),
        (
            [("MAIL", 250), ("RCPT", 550), ("RCPT", 251), ("DATA", 354), ("END", 250)],
            None,
            Refused(550, "says 550", "RCPT TO"),  # every recipient must have it
        ),
        (
            [("MAIL", 250), ("RCPT", 550), ("RCPT", 250), ("DATA", 354), ("END", 451)],
            None,
            Refused(451, "says 451", "end of DATA"),  # temporary first: retried
        ),
        (
            [("MAIL", 250), ("RCPT", 250), ("RCPT", 250), ("DATA", 451)],
            Refused(451, "says 451", "DATA"),
            Refused(451, "says 451", "DATA"),
        ),
        (
            [("MAIL", 250), ("RCPT", 250), ("RCPT", 250), ("BDAT", 250), ("BDAT", 552)],
            Refused(552, "says 552", "BDAT"),
            Refused(552, "says 552", "BDAT"),
        ),
    ],
)
def test_named_rules(
    replies: list[tuple[Kind, int]], decided: Refused | None, result: Refused | None
) -> None:
    """The rules one by one, with the stage and text that end up in the log and the DSN."""
    exchange = fed(replies)
    assert exchange.awaiting == 0
    assert exchange.decided == decided
    assert exchange.result() == result


def test_lmtp_end_counts_accepted_recipients() -> None:
    """LMTP's end of data owes one reply per accepted recipient, known once every RCPT was
    answered; a 4xx from one decides over a 5xx from another."""
    exchange = Exchange(3, lmtp=True, chunking=True)
    for kind in ["MAIL", "RCPT", "RCPT", "RCPT", "END"]:
        exchange.sent(kind)  # type: ignore[arg-type]
    assert exchange.awaiting == 5
    for code in (250, 250, 550, 250):
        exchange.received(R(code))
    assert exchange.awaiting == 2
    exchange.received(R(554, "no"))
    assert exchange.awaiting == 1
    with pytest.raises(ValueError, match="still owed"):
        exchange.result()
    exchange.received(R(452, "quota"))
    assert exchange.result() == Refused(452, "quota", "BDAT LAST")


def test_354_after_a_decided_refusal_is_flagged() -> None:
    """A 354 although every RCPT was refused: ``end_data`` tells the caller the connection is
    mid-DATA."""
    exchange = fed([("MAIL", 250), ("RCPT", 550), ("RCPT", 550), ("DATA", 354)])
    assert exchange.end_data and exchange.decided == Refused(550, "says 550", "RCPT TO")
    assert not fed([("MAIL", 250), ("RCPT", 250), ("RCPT", 250), ("DATA", 354)]).end_data


def test_misuse_is_refused() -> None:
    """A reply nobody asked for, a command after the end, a verdict before the end."""
    exchange = Exchange(1, lmtp=False)
    with pytest.raises(ValueError, match="nobody asked"):
        exchange.received(R(250))
    exchange.sent("MAIL")
    exchange.sent("RCPT")
    exchange.received(R(250))
    exchange.received(R(250))
    with pytest.raises(ValueError, match="never answered"):
        exchange.result()
    exchange.sent("END")
    with pytest.raises(ValueError, match="after the end"):
        exchange.sent("BDAT")
    with pytest.raises(ValueError, match="needs a recipient"):
        Exchange(0, lmtp=False)


def test_command_lines() -> None:
    """The envelope's lines, BDAT's, and no control character smuggled into a command."""
    assert envelope("a@b.c", ["BODY=8BITMIME"], ["x@y.z", "w@y.z"]) == [
        b"MAIL FROM:<a@b.c> BODY=8BITMIME\r\n",
        b"RCPT TO:<x@y.z>\r\n",
        b"RCPT TO:<w@y.z>\r\n",
    ]
    assert bdat(0, last=True) == b"BDAT 0 LAST\r\n" and bdat(12, last=False) == b"BDAT 12\r\n"
    with pytest.raises(DeliveryError):
        command(b"RCPT", b"TO:<a@b.c>\r\nDATA")
