#!/usr/bin/env python3
"""A fuzzing campaign over every pure function of fetchd that reads bytes or text from outside.

Each target takes one input (bytes) and calls a parser the way fetchd's I/O code calls it. The
property for each: a valid result, or one of the exception types its caller handles (a typed
``FetchdError`` everywhere but the control socket, whose contract is ``ValueError``), never
another exception, and within a bounded time per input (``--slow``; a hung input is cut off by
SIGALRM). Run as a script, the process also gets an address-space limit (``--memory``), so an
input that makes a parser allocate without bound shows up as a MemoryError finding.

The inputs are mutations (bit flips, interesting numbers and tokens, repeats, splices,
truncations) of seeds: literals harvested from the unit-test tables with ``ast``, plus a few
captures of real server dialogue per target. No coverage feedback (atheris was not used), but
mutants that raised an allowed error are not kept, while the seeds stay the base of every
mutation, so inputs stay close to valid dialogue.

    nice -n 19 python contrib/fuzz/campaign.py --cases 1000000 --seed 1
    python contrib/fuzz/campaign.py --seconds 60 --target imap.response

Findings (one per target, exception type and raising line) are printed with a reproducer and,
with ``--out DIR``, written there. The exit status is 1 when anything was found.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import itertools
import json
import random
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fetchd.config.lexer import tokenize  # noqa: E402
from fetchd.config.parser import ParseEnvironment, parse  # noqa: E402
from fetchd.daemon.control import parse_request  # noqa: E402
from fetchd.delivery.dsn import Refusal, build_dsn  # noqa: E402
from fetchd.delivery.headers import (  # noqa: E402
    bad_header_line,
    dot_stuff,
    envelope_sender,
    headers,
    needs_8bit,
    normalize_line_endings,
)
from fetchd.delivery.multidrop import MultidropRules, received_for, route  # noqa: E402
from fetchd.delivery.rewrite import drop_return_path, edit_headers, reply_hack  # noqa: E402
from fetchd.delivery.smtp import _host_port, _worst, qualified_sender  # noqa: E402
from fetchd.errors import FetchdError  # noqa: E402
from fetchd.imap.parse import (  # noqa: E402
    RawResponse,
    ResponseReader,
    parse_response,
    parse_sequence_set,
)
from fetchd.pop3.protocol import (  # noqa: E402
    MultilineDecoder,
    apop_timestamp,
    encode_command,
    error_for,
    parse_capabilities,
    parse_listing,
    parse_reply,
)
from fetchd.state.fetchids import parse_fetchids  # noqa: E402


class PropertyViolation(Exception):
    """A target's own check failed (e.g. the result depends on how the input was split)."""


@dataclass
class Target:
    name: str
    run: Callable[[bytes], object]
    allowed: tuple[type[BaseException], ...]
    seed_files: tuple[str, ...]
    seeds: tuple[bytes, ...] = ()
    tokens: tuple[bytes, ...] = ()
    max_size: int = 8192
    corpus: list[bytes] = field(default_factory=list)


def _split(data: bytes) -> Iterator[bytes]:
    """The same bytes in chunks whose sizes depend only on the data (so a finding replays)."""
    rng = random.Random(data)
    position = 0
    while position < len(data):
        size = rng.choice((1, 1, 2, 3, 7, 64, 1000))
        yield data[position : position + size]
        position += size


# --- Targets: each calls the parser as fetchd's I/O layer does ---------------------------------


def pop3_reply(data: bytes) -> object:
    line = data.split(b"\r\n", 1)[0][:8192]
    reply = parse_reply(line)
    if not reply.ok:
        for during in ("RETR 1", "PASS", "STAT"):
            if not isinstance(error_for(reply, during, "pop.example.org"), FetchdError):
                raise PropertyViolation("error_for returned no FetchdError")
    return apop_timestamp(reply)


def pop3_listing(data: bytes) -> object:
    lines = data.split(b"\r\n")
    parse_capabilities(lines)
    results = []
    for what in ("LIST", "UIDL"):
        with contextlib.suppress(FetchdError):
            listing = parse_listing(lines, what)
            if what == "LIST":
                # The client turns the sizes into numbers (pop3/client.py).
                results.append({n: int(v) for n, v in listing.items()})
    return results


def pop3_multiline(data: bytes) -> object:
    whole = MultilineDecoder(limit=1 << 16)
    consumed = whole.feed(data)
    pieces = MultilineDecoder(limit=1 << 16)
    taken = 0
    for chunk in _split(data):
        if pieces.done:
            break
        used = pieces.feed(chunk)
        taken += used
        if used < len(chunk):
            break
    if whole.done != pieces.done or (whole.done and whole.body() != pieces.body()):
        raise PropertyViolation("the body depends on how the stream was split")
    if whole.done and (consumed != taken or data[:consumed].count(b"\n") != len(whole.lines()) + 1):
        raise PropertyViolation("the decoder consumed the wrong number of octets")
    if whole.done:  # stuffing the body again and decoding it gives it back
        again = MultilineDecoder(limit=1 << 17)
        again.feed(dot_stuff(whole.body()) + b".\r\n")
        if not again.done or again.body() != whole.body():
            raise PropertyViolation("dot-unstuffing does not undo dot-stuffing")
    return whole.body() if whole.done else None


def _imap_frames(chunks: Iterator[bytes]) -> tuple[list[RawResponse], str]:
    reader = ResponseReader(max_literal=1 << 16, max_line=1 << 16)
    out: list[RawResponse] = []
    error = ""
    try:
        for chunk in chunks:
            out.extend(reader.feed(chunk))
        reader.feed(b"")
    except FetchdError as exc:
        error = type(exc).__name__
    return out, error


def imap_response(data: bytes) -> object:
    whole = _imap_frames(iter([data]))
    split = _imap_frames(_split(data))
    # The same responses and the same error, however the stream was split; except that the
    # responses a feed() completed before it raised are not returned (the connection is closed
    # then anyway), so with an error the whole stream may give fewer.
    same = whole == split or (whole[1] == split[1] != "" and split[0][: len(whole[0])] == whole[0])
    if not same:
        raise PropertyViolation("the framing depends on how the stream was split")
    parsed = []
    for raw in whole[0]:
        with contextlib.suppress(FetchdError):
            parsed.append(parse_response(raw))
    return parsed


def imap_sequence_set(data: bytes) -> object:
    text = data.decode("ascii", "replace")
    # A generator: its caller (ESEARCH) bounds how many numbers it takes.
    return sum(1 for _ in itertools.islice(parse_sequence_set(text), 1 << 16))


_NO_LOOP = asyncio.new_event_loop()  # SMTPProtocol only stores it; without one it makes one
_NO_LOOP.close()


def smtp_reply(data: bytes) -> object:
    import aiosmtplib
    from aiosmtplib.protocol import SMTPProtocol

    protocol = SMTPProtocol(loop=_NO_LOOP)
    protocol._buffer = bytearray(data)  # what the transport received
    replies = []
    while True:
        try:
            reply = protocol._read_response_from_buffer()
        except aiosmtplib.SMTPException as exc:
            # smtp.py catches aiosmtplib.SMTPException and turns it into a DeliveryError.
            raise FetchdError(str(exc)) from exc
        if reply is None:
            break
        replies.append(reply)
    _worst(replies)
    return replies


def smtp_host(data: bytes) -> object:
    text = data.decode("utf-8", "replace")
    qualified_sender(text, "pop.example.org")
    qualified_sender("joe", text)
    return [_host_port(text), _host_port(text, lmtp=True)]


ENV = ParseEnvironment(login="me", home="/home/me", rcdir="/home/me", hostname="box")


def rc_file(data: bytes) -> object:
    text = data.decode("utf-8", "replace")
    tokenize(text, "fuzz.rc")
    return parse(text, "fuzz.rc", ENV)


RULES = (
    MultidropRules(
        ("pop.example.org",),
        localnames=("alice", ("bob", "robert"), "carol@example.net"),
        aka=("example.org",),
    ),
    MultidropRules(
        ("pop.example.org",),
        wildcard=True,
        envelope="X-Original-To",
        envskip=1,
        qvirtual="mail-",
        localdomains=("example.net",),
    ),
    MultidropRules(("pop.example.org",), localnames=("alice",), envelope=None, postmaster=""),
)


def multidrop(data: bytes) -> object:
    message = normalize_line_endings(data)
    out: list[object] = [bad_header_line(message), envelope_sender(message), needs_8bit(message)]
    out.append(dot_stuff(message))
    for rules in RULES:
        out.append(route(message, rules))
    for name, value in headers(message):
        if name == "received":
            out.append(received_for(value, RULES[0]))
    return out


def rewrite(data: bytes) -> object:
    message = normalize_line_endings(data)
    edited = edit_headers(
        message, rewrite_host="pop.example.org", dropstatus=True, dropdelivered=True, warning="w"
    )
    drop_return_path(edited)
    field_text = data.decode("latin-1").split("\r\n", 1)[0] + "\r\n"
    return reply_hack(field_text, "pop.example.org")


def dsn(data: bytes) -> object:
    text = data.decode("utf-8", "replace")
    message = normalize_line_endings(data)
    report = build_dsn(
        original=message,
        to=text[:100],
        refusals=[Refusal(text[:200], 550, text), Refusal("a@b", 451, text[::-1])],
        reporting_host=text[:50],
        remote_mta=text[-50:],
        explanation=text,
        now=datetime(2026, 12, 1, 12, 0, tzinfo=UTC),
    )
    head, _, _ = report.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if b"\r" in line or b"\n" in line or b"\0" in line:
            raise PropertyViolation("a hostile header broke out of the DSN's header line")
    if report.count(b"\r\n") != report.count(b"\n") or report.count(b"\r\n") != report.count(b"\r"):
        raise PropertyViolation("a bare CR or LF in the DSN")
    return report


def control(data: bytes) -> object:
    return parse_request(data.split(b"\n", 1)[0] + b"\n")


def fetchids(data: bytes) -> object:
    entries = parse_fetchids(data, ".fetchids")
    for entry in entries:
        entry.belongs_to("pop.example.org", "joe")
    return entries


def pop3_command(data: bytes) -> object:
    # What the client sends is built from user and server text (a UIDL, a login name).
    words = data.decode("utf-8", "replace").split(" ")
    line = encode_command("USER", *words)  # the verb is always one of ours
    if line.count(b"\r") != 1 or line.count(b"\n") != 1 or b"\0" in line:
        raise PropertyViolation("a command line carries a second command")
    return line


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target(
            "pop3.reply",
            pop3_reply,
            (FetchdError,),
            ("test_pop3_protocol.py",),
            (
                b"+OK Dovecot ready. <1896.697170952@dbc.mtview.ca.us>",
                b"-ERR [IN-USE] mailbox locked",
                b"-ERR [SYS/TEMP] try later",
                b"-ERR [AUTH] bad password",
                b"+OK 2 320",
            ),
            (b"+OK", b"-ERR", b"[", b"]", b"<", b">", b"@", b"[SYS/PERM]", b"\xff"),
        ),
        Target(
            "pop3.listing",
            pop3_listing,
            (FetchdError,),
            ("test_pop3_protocol.py",),
            (
                b"1 120\r\n2 200\r\n3 4000",
                b"1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7",
                b"TOP\r\nUSER\r\nSASL PLAIN LOGIN\r\nRESP-CODES\r\nPIPELINING\r\nUIDL",
            ),
            (b" ", b"\r\n", b"0", b"-1", b"99999999999999999999", b"\t", b"\x7f"),
        ),
        Target(
            "pop3.multiline",
            pop3_multiline,
            (FetchdError,),
            ("test_pop3_protocol.py",),
            (
                b"From: a@b\r\nSubject: x\r\n\r\n..leading dot\r\nbody\r\n.\r\n+OK next",
                b"line\n.\n",
                b"..\r\n...\r\n.\r\n",
            ),
            (b".", b"\r\n", b"\n", b"\r", b"..", b".\r\n", b"\r\n.\r\n"),
            max_size=1 << 17,
        ),
        Target(
            "imap.response",
            imap_response,
            (FetchdError,),
            ("test_imap_parse.py", "test_imap_command.py"),
            (
                b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+"
                b" STARTTLS AUTH=PLAIN] Dovecot ready.\r\n",
                b"* 3 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 1733220000] UIDs valid\r\n"
                b"* OK [UIDNEXT 4] Predicted next UID\r\n"
                b"A0003 OK [READ-WRITE] Select completed\r\n",
                b"* 1 FETCH (UID 7 RFC822.SIZE 12 FLAGS (\\Seen) BODY[] {12}\r\n"
                b"Subject: x\r\n)\r\nA4 OK Fetch completed.\r\n",
                b'* ESEARCH (TAG "A5") UID ALL 1:3,7\r\nA5 OK\r\n',
                b"* SEARCH 1 2 3\r\n+ idling\r\n* 4 EXISTS\r\nA6 OK Idle completed\r\n",
                b"* 2 EXPUNGE\r\n* BYE shutting down\r\nA7 NO [UNAVAILABLE] x\r\n",
            ),
            (
                b"{",
                b"}",
                b"{0}\r\n",
                b"{5}\r\n",
                b"(",
                b")",
                b'"',
                b"\\",
                b"[",
                b"]",
                b"* ",
                b"A1 ",
                b"NIL",
                b"BODY[]",
                b"UID",
                b"ALL",
                b"4294967296",
                b"1:*",
            ),
            max_size=1 << 16,
        ),
        Target(
            "imap.sequence_set",
            imap_sequence_set,
            (FetchdError,),
            ("test_imap_parse.py",),
            (b"1:3,7", b"5", b"10:1,4"),
            (b",", b":", b"*", b"0", b"4294967295"),
            max_size=512,
        ),
        Target(
            "smtp.reply",
            smtp_reply,
            (FetchdError,),
            (),
            (
                b"220 localhost ESMTP Postfix\r\n",
                b"250-localhost\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n",
                b"250 2.1.5 Ok\r\n550 5.1.1 <x@y>: Recipient address rejected\r\n",
                b"452 4.3.1 Insufficient system storage\r\n",
            ),
            (b"250", b"-", b" ", b"\r\n", b"\n", b"999", b"0"),
        ),
        Target(
            "smtp.host",
            smtp_host,
            (FetchdError,),
            (),
            (b"localhost/2525", b"/var/run/lmtp", b"127.0.0.1", b"::1/24", b"host/25"),
            (b"/", b"25", b"@", b"[", b"99999999999999999999"),
            max_size=512,
        ),
        Target(
            "rc.parse",
            rc_file,
            (FetchdError,),
            ("test_rc_parser.py", "test_options.py", "test_control_and_runtime.py"),
            (
                b'set daemon 300\nset logfile "/tmp/x"\npoll pop.example.org proto pop3'
                b' user "joe" there with password "s\\x41cret" is jdoe here options keep\n',
                b"defaults proto imap timeout 20\npoll mail.example.org via 127.0.0.1 port 143"
                b" envelope 2 Delivered-To aka example.org localdomains example.net\n"
                b"  user alice is alice bob = robert here fetchall ssl sslcertck\n",
            ),
            (
                b'"',
                b"'",
                b"\\",
                b"\\x",
                b"\\0",
                b"#",
                b"\n",
                b" ",
                b",",
                b";",
                b":",
                b"=",
                b"poll ",
                b"user ",
                b"here",
                b"99999999999999999999",
                b"-1",
            ),
        ),
        Target(
            "multidrop",
            multidrop,
            (FetchdError,),
            ("test_multidrop.py", "test_routing.py"),
            (
                b"Received: from a by pop.example.org (Postfix) with ESMTP id 1\r\n"
                b"\tfor <alice@pop.example.org>; Thu, 3 Dec 2026 12:00:00 +0000\r\n"
                b"X-Original-To: x\r\nX-Original-To: mail-bob@example.net\r\n"
                b"To: Alice <alice@pop.example.org>, bob@pop.example.org\r\n"
                b'Cc: "Q, R" <carol@example.net>\r\nReturn-Path: <s@x>\r\n\r\nbody\r\n',
            ),
            (
                b"Received: ",
                b" by ",
                b" for ",
                b"<",
                b">",
                b"@",
                b":",
                b";",
                b",",
                b'"',
                b"(",
                b")",
                b"\r\n",
                b"\r\n\t",
                b"Resent-To: ",
                b"=?utf-8?q?x?=",
            ),
            max_size=1 << 14,
        ),
        Target(
            "rewrite",
            rewrite,
            (FetchdError,),
            ("test_rewrite.py",),
            (
                b'From: joe\r\nTo: a, b (c) <d>, "e f" <g@h>\r\nStatus: RO\r\n'
                b"Delivered-To: x\r\nReturn-Path: <joe>\r\n\r\nbody\r\n",
            ),
            (b"(", b")", b"<", b">", b"\\", b'"', b",", b"@", b"!", b":", b";", b"\r\n "),
            max_size=1 << 14,
        ),
        Target(
            "dsn",
            dsn,
            (FetchdError,),
            ("test_dsn.py",),
            (b"Subject: x\r\nFrom: a@b\r\n\r\nbody", b"5.1.1 <x@y>: no such user"),
            (b"\r", b"\n", b"\0", b"\x7f", b"\xe2\x80\xa8", b"\x85", b"--", b"5.1.1 "),
            max_size=1 << 14,
        ),
        Target(
            "control",
            control,
            (ValueError,),  # ControlServer._serve answers a ValueError with "bad request"
            ("test_control_and_runtime.py",),
            (
                b'{"v": 1, "cmd": "poll", "account": "pop.example.org"}',
                b'{"v": 1, "cmd": "status"}',
                b'{"v": 1, "cmd": "quit"}',
            ),
            (b"{", b"}", b"[", b"]", b'"', b"\\u0000", b"1e999", b"NaN", b"null", b"\xff"),
            max_size=4096,
        ),
        Target(
            "fetchids",
            fetchids,
            (FetchdError,),
            ("test_state_fetchids.py", "test_state_store.py"),
            (b"joe@pop.example.org whqtswO00WBw418f9t5JxYwZ\njoe@x@y 12 extra\n",),
            (b"@", b" ", b"\t", b"\r", b"\n", b"\xff"),
        ),
        Target(
            "pop3.command",
            pop3_command,
            (FetchdError,),
            (),
            (b"USER joe", b"UIDL 1", b"APOP joe c4c9334bac560ecc979e58001b3e22fb"),
            (b"\r", b"\n", b"\0", b" ", b"\xe2\x80\xa8"),
            max_size=512,
        ),
    ]
}


# --- Seeds from the unit-test tables --------------------------------------------------------


def harvested(files: tuple[str, ...]) -> list[bytes]:
    """Every bytes or str literal of two or more characters in these test files."""
    found: list[bytes] = []
    for name in files:
        path = ROOT / "tests" / "unit" / name
        if not path.exists():
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, (bytes, str)):
                value = node.value
                data = value if isinstance(value, bytes) else value.encode("utf-8")
                if len(data) >= 2:
                    found.append(data)
    return found


# --- Mutation -------------------------------------------------------------------------------

NUMBERS = (b"0", b"-1", b"4294967295", b"4294967296", b"18446744073709551616", b"9" * 5000)
BYTES = (b"\0", b"\r", b"\n", b"\t", b" ", b"\x7f", b"\x80", b"\xff", b"\xc3")


def mutate(rng: random.Random, target: Target, data: bytes) -> bytes:
    for _ in range(rng.choice((1, 1, 2, 3, 5))):
        data = _mutate_once(rng, target, data)
    return data[: target.max_size]


def _mutate_once(rng: random.Random, target: Target, data: bytes) -> bytes:
    where = rng.randint(0, len(data))
    choice = rng.randrange(11)
    if choice == 0 and data:  # flip a bit
        i = rng.randrange(len(data))
        return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :]
    if choice == 1:  # an interesting byte
        return data[:where] + rng.choice(BYTES) + data[where + rng.randint(0, 1) :]
    if choice in (2, 3) and target.tokens:  # a token of this grammar
        return data[:where] + rng.choice(target.tokens) + data[where:]
    if choice == 4:  # a number where one was, or anywhere
        digits = _digit_run(data, where)
        start, end = digits if digits else (where, where)
        return data[:start] + rng.choice(NUMBERS) + data[end:]
    if choice == 5 and data:  # delete a range
        end = min(len(data), where + rng.choice((1, 2, 8, 64, 1024)))
        return data[:where] + data[end:]
    if choice == 6 and data:  # repeat a slice many times
        end = min(len(data), where + rng.choice((1, 2, 4, 16)))
        times = rng.choice((2, 10, 100, 1000, 5000))
        return data[:where] + data[where:end] * times + data[end:]
    if choice == 7 and target.tokens:  # a token repeated: deep nesting, long runs
        return (
            data[:where] + rng.choice(target.tokens) * rng.choice((100, 1000, 5000)) + data[where:]
        )
    if choice == 8:  # splice with another seed
        other = rng.choice(target.corpus)
        return data[:where] + other[rng.randint(0, len(other)) :]
    if choice == 9:  # truncate
        return data[:where]
    if choice == 10 and data:  # swap two slices' order
        cut = rng.randint(where, len(data))
        return data[:where] + data[cut:] + data[where:cut]
    return data + rng.choice(BYTES)


def _digit_run(data: bytes, where: int) -> tuple[int, int] | None:
    start = where
    while start > 0 and data[start - 1 : start].isdigit():
        start -= 1
    end = where
    while end < len(data) and data[end : end + 1].isdigit():
        end += 1
    return (start, end) if end > start else None


# --- The campaign ---------------------------------------------------------------------------


@dataclass
class Finding:
    target: str
    kind: str  # exception type, "slow" or "property"
    where: str  # innermost fetchd frame
    message: str
    data: bytes
    seconds: float


@dataclass
class Report:
    cases: dict[str, int] = field(default_factory=dict)
    findings: dict[tuple[str, str, str], Finding] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "cases": self.cases,
            "total": sum(self.cases.values()),
            "seconds": round(self.seconds, 1),
            "findings": [
                {
                    "target": f.target,
                    "kind": f.kind,
                    "where": f.where,
                    "message": f.message[:300],
                    "input": f.data[:400].decode("latin-1"),
                    "input_length": len(f.data),
                }
                for f in self.findings.values()
            ],
        }


class _Hung(BaseException):
    """Raised by SIGALRM inside a target that ran past the hard limit."""


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _Hung


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/fetchd/" in f.filename] or frames
    last = ours[-1] if ours else None
    return f"{Path(last.filename).name}:{last.lineno}" if last else "?"


def check(target: Target, data: bytes, slow: float, hard: float) -> Finding | None:
    """Run one input; a Finding when the property does not hold."""
    use_alarm = hard > 0 and signal.getsignal(signal.SIGALRM) is _alarm
    started = time.perf_counter()
    try:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, hard)
        try:
            target.run(data)
        finally:
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
    except target.allowed:
        pass
    except _Hung:
        return Finding(target.name, "hung", "?", f"still running after {hard} s", data, hard)
    except Exception as exc:  # the point: catch what must not happen
        kind = "property" if isinstance(exc, PropertyViolation) else type(exc).__name__
        return Finding(
            target.name, kind, _where(exc), str(exc)[:300], data, time.perf_counter() - started
        )
    elapsed = time.perf_counter() - started
    if elapsed > slow:
        return Finding(target.name, "slow", "?", f"{elapsed:.2f} s for one input", data, elapsed)
    return None


def campaign(
    *,
    cases: int | None = None,
    seconds: float | None = None,
    seed: int = 0,
    targets: list[str] | None = None,
    slow: float = 2.0,
    hard: float = 30.0,
    progress: Callable[[Report], None] | None = None,
    found: Callable[[Finding], None] | None = None,
) -> Report:
    """Run inputs round-robin over the targets until ``cases`` in total or ``seconds`` pass."""
    chosen = [TARGETS[name] for name in (targets or list(TARGETS))]
    rng = random.Random(seed)
    for target in chosen:
        base = list(target.seeds) + harvested(target.seed_files)
        target.corpus = [s[: target.max_size] for s in base] or [b""]
    report = Report(cases={t.name: 0 for t in chosen})
    started = time.monotonic()
    done = 0
    while True:
        if cases is not None and done >= cases:
            break
        if seconds is not None and done % 64 == 0 and time.monotonic() - started > seconds:
            break
        target = chosen[done % len(chosen)]
        data = mutate(rng, target, rng.choice(target.corpus))
        finding = check(target, data, slow, hard)
        report.cases[target.name] += 1
        done += 1
        if finding is not None:
            key = (finding.target, finding.kind, finding.where)
            known = report.findings.get(key)
            if known is None or len(data) < len(known.data):  # keep the shortest reproducer
                report.findings[key] = finding
            if known is None and found is not None:
                found(finding)
        if progress is not None and done % 10000 == 0:
            report.seconds = time.monotonic() - started
            progress(report)
    report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, help="inputs in total (round-robin over targets)")
    parser.add_argument("--seconds", type=float, help="stop after this long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", action="append", choices=sorted(TARGETS))
    parser.add_argument("--slow", type=float, default=2.0, help="seconds one input may take")
    parser.add_argument("--hard", type=float, default=30.0, help="cut an input off after this")
    parser.add_argument("--memory", type=int, default=1024, help="address-space limit, MiB")
    parser.add_argument("--out", type=Path, help="write findings and the report here")
    parser.add_argument("--list", action="store_true", help="list the targets")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(sorted(TARGETS)))
        return 0
    if args.cases is None and args.seconds is None:
        args.cases = 10000
    if args.memory:
        import resource

        limit = args.memory << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _alarm)

    def progress(report: Report) -> None:
        total = sum(report.cases.values())
        print(
            f"{total} inputs, {report.seconds:.0f} s, {len(report.findings)} findings",
            file=sys.stderr,
            flush=True,
        )

    report = campaign(
        cases=args.cases,
        seconds=args.seconds,
        seed=args.seed,
        targets=args.target,
        slow=args.slow,
        hard=args.hard,
        progress=progress,
        found=lambda f: print(
            f"found: {f.target} {f.kind} at {f.where}: {f.message[:120]}", file=sys.stderr
        ),
    )
    result = report.as_dict()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
        for number, finding in enumerate(report.findings.values(), start=1):
            (args.out / f"finding-{number}-{finding.target}.bin").write_bytes(finding.data)
    print(json.dumps(result, indent=2))
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
