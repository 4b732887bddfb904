"""Differential test: the MTA receives from fetchd what it receives from the real fetchmail.

Each message is served by a fresh demo POP3 server, once to fetchmail (the Debian package, the
oracle) and once to fetchd, each forwarding to its own aiosmtpd sink in the test's event loop. We
compare the envelope (MAIL FROM, RCPT TO), the tool's own ``Received:`` header without the tool's
name and version and the date, every other header line, and the body, after normalizing line
ends to CRLF. Multidrop cases serve one or more messages in one poll and compare every message
each tool passes on, its recipients as a set; each also states fetchmail's recipients, so that
a case shows what it claims to.

fetchmail refuses some things as root, so as root it runs as an ordinary user (FETCHD_TEST_USER,
default ``fmtest``) with its rc file owned by that user and private, as in test_rc_differential.

The rc file needs three things for fetchmail to talk to the demo server: ``sslproto ''`` (else it
insists on STLS), ``keep`` (else it fetches with TOP, which the demo server lacks) and
``fetchsizelimit 0`` (else it asks ``LIST n``, which the demo server answers as a list). The poll
name ``pop.test`` reaches loopback through ``via``; fetchmail's ``rewrite`` appends the via name
(the name fetchmail connects to), and RCPT TO the smtphost name, so the two domains differ.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fetchd.demo.pop3server import DemoPOP3Server
from tests.support.command import run_fetchd
from tests.support.fetchmail import run_fetchmail
from tests.support.mta import Sink, running_mta

pytestmark = pytest.mark.fetchmail

SECRET = "s3cr3t-Pa55"
TIMEOUT = 60


@dataclass(frozen=True)
class Case:
    id: str
    message: bytes
    options: str = ""
    smtphost: str = "localhost"
    via: str = "127.0.0.1"
    server_options: str = ""
    users: str = "joe"  # the local names of ``is ... here``: more than one makes it multidrop
    more: tuple[bytes, ...] = ()  # further messages after ``message``, in one poll


@dataclass(frozen=True)
class Delivery:
    """What one SMTP transaction carried, in a form whose pytest diff reads well."""

    mail_from: str
    rcpt_to: list[str]
    trace: list[str]  # the Received header, the tool's name, version and date taken out
    headers: list[str]
    body: bytes


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


PLAIN = _crlf(
    "Return-Path: <sender@example.org>\n"
    "From: Sender <sender@example.org>\n"
    "To: joe@example.com\n"
    "Subject: plain message\n"
    "Message-ID: <plain@example.org>\n"
    "Date: Mon, 06 Jan 2025 10:00:00 +0000\n"
    "\n"
    "Hello, Joe.\n"
)
FROM_SENDER = _crlf(
    "From: Alice <alice@example.org>\n"
    "Sender: list-bounces@lists.example.org\n"
    "To: joe@example.com\n"
    "Subject: no Return-Path\n"
    "\n"
    "Who sent this?\n"
)
FROM_ONLY = _crlf(
    "From: Alice <alice@example.org>\n"
    "To: joe@example.com\n"
    "Subject: no Return-Path, no Sender\n"
    "\n"
    "Who sent this?\n"
)
NO_DOMAIN = _crlf(
    "From: alice\n"
    'To: joe, Ann <ann>, "Bob, Jr" <bob@x.org>\n'
    "Cc: (comment) carol\n"
    "Reply-To: Dave <dave>\n"
    "Subject: addresses without a domain\n"
    "\n"
    "Local names only.\n"
)
# Every header fetchmail's reply_hack looks at, plus some it leaves alone, and harder syntax.
NO_DOMAIN_MORE = _crlf(
    "Return-Path: <alice>\n"
    "From: alice (Alice A)\n"
    "Sender: owner\n"
    "To: joe,\n"
    "  ann\n"
    "Cc: undisclosed-recipients:;\n"
    'Bcc: "x@y" <zed>\n'
    "Resent-From: rf\n"
    "Resent-To: rt, rt2@example.org\n"
    "Resent-Cc: rc\n"
    "Resent-Bcc: rb\n"
    "Resent-Sender: rs\n"
    "Apparently-To: at\n"
    "Apparently-From: af\n"
    "Errors-To: errs\n"
    "X-Other: bob\n"
    "Subject: more addresses without a domain\n"
    "\n"
    "Local names only.\n"
)
STATUS = _crlf(
    "Return-Path: <sender@example.org>\n"
    "Status: \n"
    "X-Mozilla-Status: 0001\n"
    "Subject: status lines\n"
    "Status: RO\n"
    "X-Mozilla-Status:\n"
    "X-Mozilla-Status2: 00000000\n"
    "\n"
    "Status: not a header\n"
)
DELIVERED_TO = _crlf(
    "Return-Path: <sender@example.org>\n"
    "Delivered-To: joe@example.com\n"
    "Subject: delivered-to lines\n"
    "Delivered-To: joe-alias@example.net\n"
    "\n"
    "Delivered-To: not a header\n"
)
FOLDED = _crlf(
    "Return-Path: <sender@example.org>\n"
    "Subject: a subject folded\n"
    "\tover three\n"
    "  lines\n"
    "X-Long: one,\n"
    " two\n"
    "\n"
    "Folded.\n"
)
# The demo server sends bytes decoded as Latin-1 and encoded as UTF-8: both tools see the same.
EIGHT_BIT = _crlf(
    "Return-Path: <sender@example.org>\n"
    "Subject: 8-bit body\n"
    "MIME-Version: 1.0\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: 8bit\n"
    "\n"
    "Grüße aus Köln — ½ € ✓\n"
)
LEADING_DOTS = _crlf(
    "Return-Path: <sender@example.org>\n"
    "Subject: leading dots\n"
    "\n"
    ".\n"
    "..two dots\n"
    ".one dot\n"
    "...\n"
    "end\n"
)
BARE_LF = (
    b"Return-Path: <sender@example.org>\n"
    b"Subject: bare LF line ends\n"
    b"X-Folded: a\n"
    b" b\n"
    b"\n"
    b"line one\n"
    b"line two\n"
)
# No Return-Path and no header that names a sender: both fall back to the account.
NO_SENDER = _crlf("To: joe@example.com\nSubject: nobody sent this\n\nBody.\n")
# A bounce: the null sender stays null.
NULL_SENDER = _crlf("Return-Path: <>\nTo: joe@example.com\nSubject: a bounce\n\nBody.\n")
# A header line with no colon: fetchmail's bad-header check.
BAD_HEADER = _crlf(
    "Return-Path: <sender@example.org>\n"
    "Subject: a broken header\n"
    "this line has no colon\n"
    "To: joe@example.com\n"
    "\n"
    "Body.\n"
)

CASES = [
    Case("return-path", PLAIN),
    Case("from-and-sender", FROM_SENDER),
    Case("from-only", FROM_ONLY),
    Case("no-sender", NO_SENDER),
    Case("no-sender-via-name", NO_SENDER, via="localhost"),
    Case("null-sender", NULL_SENDER),
    Case("return-path-no-domain", _crlf("Return-Path: <alice>\nSubject: s\n\nBody.\n")),
    Case("no-domain", NO_DOMAIN),
    Case("no-domain-no-rewrite", NO_DOMAIN, "no rewrite"),
    Case("no-domain-more", NO_DOMAIN_MORE),
    Case("no-domain-more-no-rewrite", NO_DOMAIN_MORE, "no rewrite"),
    Case("status", STATUS),
    Case("status-dropstatus", STATUS, "dropstatus"),
    Case("delivered-to", DELIVERED_TO),
    Case("delivered-to-dropdelivered", DELIVERED_TO, "dropdelivered"),
    Case("folded-header", FOLDED),
    Case("8bit-body", EIGHT_BIT),
    Case("leading-dots", LEADING_DOTS),
    Case("bare-lf", BARE_LF),
    # A via name that is not an IP literal: fetchmail brackets only literals when it qualifies.
    Case("no-domain-via-name", NO_DOMAIN, via="localhost"),
    Case("no-domain-no-rewrite-via-name", NO_DOMAIN, "no rewrite", via="localhost"),
    # RCPT TO gets the smtphost name (as given) unless smtpaddress says otherwise.
    Case("smtphost-by-address", PLAIN, smtphost="127.0.0.1"),
    # The poll label and account in the Received line.
    Case("tracepolls", PLAIN, server_options="tracepolls"),
    # The server's true name: the resolver's canonical name and address, or with `no dns` the
    # name from the rc file and no address.
    Case("no-dns", PLAIN, server_options="no dns"),
    Case("no-dns-via-name", NO_DOMAIN, server_options="no dns", via="localhost"),
    Case("bad-header-accept", BAD_HEADER, server_options="bad-header accept"),
]


# Multidrop: who of joe, bob, carol and dave gets each message. The server is `localhost` (the
# via name, its true name with `no dns`) and also known as mail.example.org.
MULTIDROP_USERS = "joe bob carol dave"
MULTIDROP_SERVER = "no dns aka mail.example.org"


def _multidrop(*lines: str, body: str = "Multidrop.\n") -> bytes:
    return _crlf("".join(line + "\n" for line in lines) + "\n" + body)


_LIST_HEAD = (
    "From: List <list@lists.example.net>",
    "To: joe@mail.example.org, bob@mail.example.org, carol@mail.example.org",
    "Subject: one copy per recipient, as a VERP list sends it",
    "Message-ID: <verp@lists.example.net>",
)


def _verp(who: str) -> bytes:
    return _multidrop(
        f"Return-Path: <list-bounces+{who}=mail.example.org@lists.example.net>", *_LIST_HEAD
    )


RECEIVED_SECOND_FOR = _multidrop(
    "Return-Path: <sender@example.org>",
    "Received: by mail.example.org (Postfix, from userid 1000)\n\tid 4AB12; Mon, 6 Jan 2025",
    "Received: from mx.sender.net (mx.sender.net [192.0.2.7])\n"
    "\tby mail.example.org (Postfix) with ESMTPS id 4AB11\n"
    "\tfor <bob@mail.example.org>; Mon, 6 Jan 2025 10:00:00 +0000",
    "From: sender@example.org",
    "To: joe@mail.example.org, carol@mail.example.org",
    "Subject: the envelope is in the second Received line",
)
TOP_BY_OTHER = _multidrop(
    "Return-Path: <sender@example.org>",
    "Received: from mail.example.org by relay.elsewhere.net with SMTP\n"
    "\tfor <carol@elsewhere.net>; Mon, 6 Jan 2025 10:01:00 +0000",
    "Received: from mx.sender.net by mail.example.org with ESMTP\n"
    "\tfor <dave@mail.example.org>; Mon, 6 Jan 2025 10:00:00 +0000",
    "To: joe@mail.example.org",
    "Subject: the top Received line is another host's",
)
RECEIVED_NO_FOR_AT_ALL = _multidrop(
    "Return-Path: <sender@example.org>",
    "Received: from mx.sender.net by mail.example.org with ESMTP id 1",
    "Received: from a.example by b.example for <carol@mail.example.org>; Mon, 6 Jan 2025",
    "To: joe@mail.example.org, bob@mail.example.org",
    "Subject: our server's line has no for; another host's has",
)
RECEIVED_FOREIGN_FOR = _multidrop(
    "Return-Path: <sender@example.org>",
    "Received: from x by mail.example.org with ESMTP for <someone@elsewhere.net>; Mon, 6 Jan",
    "To: joe@mail.example.org",
    "Subject: our server's line names someone elsewhere",
)
RECEIVED_UNKNOWN_USER = _multidrop(
    "Return-Path: <sender@example.org>",
    "Received: from x by mail.example.org with ESMTP for <nobody@mail.example.org>; Mon, 6 Jan",
    "To: joe@mail.example.org",
    "Subject: our server's line names no local user",
)
RECEIVED_SKIP = _multidrop(
    "Return-Path: <sender@example.org>",
    "Received: from x by mail.example.org with ESMTP for <joe@mail.example.org>; Mon, 6 Jan",
    "Received: from y by mx1.example.org with ESMTP for <bob@mail.example.org>; Mon, 6 Jan",
    "Received: from z by mail.example.org with ESMTP for <carol@mail.example.org>; Mon, 6 Jan",
    "To: dave@mail.example.org",
    "Subject: skip counts",
)
BARE = _multidrop(
    "From: root",
    "To: joe, bob",
    "Subject: cron mail, no domains",
)
MIXED = _multidrop(
    "From: root",
    "To: carol, dave@example.net",
    "Subject: one bare, one qualified",
)
ENVELOPE_HEADERS = _multidrop(
    "Return-Path: <sender@example.org>",
    "Delivered-To: catchall@mail.example.org",
    "X-Original-To: bob@mail.example.org",
    "Delivered-To: joe@mail.example.org",
    "X-Original-To: sales@shop.example.net, dave@mail.example.org",
    "To: carol@mail.example.org",
    "Subject: envelope headers",
)
RECEIVED_BY_POLL_NAME = _multidrop(
    "Return-Path: <sender@example.org>",
    "Received: from x by pop.test with ESMTP for <bob@pop.test>; Mon, 6 Jan 2025",
    "Received: from x by localhost with ESMTP for <carol@localhost>; Mon, 6 Jan 2025",
    "To: joe@pop.test",
    "Subject: the poll name is not the server's name",
)
RECEIVED_LOCALDOMAINS = _multidrop(
    "Return-Path: <sender@example.org>",
    "Received: from x by mx.example.net with ESMTP for <sales@example.net>; Mon, 6 Jan 2025",
    "Received: from y by mail.example.org with ESMTP for <info@shop.example.net>; Mon, 6 Jan",
    "To: joe@mail.example.org",
    "Subject: Received lines and localdomains",
)
QVIRTUAL = _multidrop(
    "Return-Path: <sender@example.org>",
    "X-Original-To: v-bob@mail.example.org, v-x@elsewhere.net",
    "To: v-joe@mail.example.org, v-carol",
    "Subject: qmail virtual domain prefixes",
)
RESENT_BARE = _multidrop(
    "Return-Path: <sender@example.org>",
    "To: joe@mail.example.org",
    "Resent-To: bob, whoever",
    "Subject: resent to bare names",
)
NOBODY = _multidrop(
    "Return-Path: <sender@example.org>",
    "To: someone@elsewhere.net, other@elsewhere.net",
    "Subject: for nobody here",
)
NOBODY_ONE = _multidrop(
    "Return-Path: <sender@example.org>",
    "To: someone@elsewhere.net, nobody@mail.example.org",
    "Subject: one foreign address, one unknown user",
)


@dataclass(frozen=True)
class Multidrop:
    case: Case
    expect: list[list[str]]  # fetchmail's recipients of each message it passed on


def _md(
    id: str,
    messages: tuple[bytes, ...],
    expect: list[list[str]],
    options: str = "",
    server: str = "",
    users: str = MULTIDROP_USERS,
) -> Multidrop:
    case = Case(
        id,
        messages[0],
        f"{options}".strip(),
        via="localhost",
        server_options=f"{MULTIDROP_SERVER} {server}",
        users=users,
        more=messages[1:],
    )
    return Multidrop(case, [sorted(x) for x in expect])


def _at(*names: str) -> list[str]:
    return [f"{name}@localhost" for name in names]


MULTIDROP_CASES = [
    _md("received-second-line-for", (RECEIVED_SECOND_FOR,), [_at("bob")]),
    _md("received-top-by-another-host", (TOP_BY_OTHER,), [_at("dave")]),
    _md("received-for-only-on-another-host", (RECEIVED_NO_FOR_AT_ALL,), [_at("joe", "bob")]),
    _md("received-foreign-for", (RECEIVED_FOREIGN_FOR,), [["pm@localhost"]]),
    _md("received-unknown-user", (RECEIVED_UNKNOWN_USER,), [["pm@localhost"]]),
    _md("received-skip-1", (RECEIVED_SKIP,), [_at("carol")], server="envelope 1 Received"),
    _md(
        "received-skip-1-aka-suffix",
        (RECEIVED_SKIP,),
        [_at("bob")],
        server="envelope 1 Received aka example.org",
    ),
    _md("received-skip-3", (RECEIVED_SKIP,), [_at("dave")], server="envelope 3 Received"),
    _md("verp-copies", (_verp("joe"), _verp("bob"), _verp("carol")), [_at("joe", "bob", "carol")]),
    _md("bare", (BARE,), [_at("joe", "bob")]),
    _md("bare-no-rewrite", (BARE,), [["pm@localhost"]], options="no rewrite"),
    _md("mixed", (MIXED,), [_at("carol", "dave")], server="aka example.net"),
    _md("mixed-no-rewrite", (MIXED,), [_at("dave")], "no rewrite", "aka example.net"),
    _md(
        "mixed-localdomains",
        (MIXED,),
        [["carol@localhost", "dave@example.net"]],
        server="localdomains example.net",
    ),
    _md(
        "x-original-to-skip-1-localdomains",
        (ENVELOPE_HEADERS,),
        [["sales@shop.example.net", "dave@localhost"]],
        server='envelope 1 "X-Original-To" localdomains example.net',
    ),
    _md(
        "x-original-to-skip-1",
        (ENVELOPE_HEADERS,),
        [_at("dave")],
        server='envelope 1 "X-Original-To"',
    ),
    _md("delivered-to-skip-1", (ENVELOPE_HEADERS,), [_at("joe")], server="envelope 1 Delivered-To"),
    _md(
        "delivered-to-skip-1-dropdelivered",
        (ENVELOPE_HEADERS,),
        [_at("joe")],
        options="dropdelivered",
        server="envelope 1 Delivered-To",
    ),
    _md("received-by-poll-name", (RECEIVED_BY_POLL_NAME,), [_at("carol")]),
    _md(
        "received-localdomains",
        (RECEIVED_LOCALDOMAINS,),
        [["info@shop.example.net"]],
        server="localdomains example.net",
    ),
    _md("qvirtual-guessed", (QVIRTUAL,), [_at("joe", "carol")], server='qvirtual "v-"'),
    _md(
        "qvirtual-x-original-to",
        (QVIRTUAL,),
        [_at("bob")],
        server='qvirtual "v-" envelope "X-Original-To"',
    ),
    _md("resent-bare", (RESENT_BARE,), [_at("bob")]),
    _md(
        "resent-bare-wildcard",
        (RESENT_BARE,),
        [_at("bob", "whoever")],
        users="*",
    ),
    _md("nobody", (NOBODY,), [["pm@localhost"]]),
    _md("nobody-one-foreign", (NOBODY_ONE,), [["pm@localhost"]]),
]


@pytest.mark.parametrize("md", MULTIDROP_CASES, ids=[m.case.id for m in MULTIDROP_CASES])
async def test_multidrop_recipients_are_fetchmails(
    md: Multidrop, oracle_home: Path, tmp_path: Path
) -> None:
    """Each message fetchmail passes on, fetchd passes on to the same recipients (as sets), with
    the same bytes apart from the Received line; copies fetchmail suppresses, fetchd does too."""
    theirs = _deliveries(await _fetchmail_delivers(md.case, oracle_home))
    assert [d.rcpt_to for d in theirs] == md.expect  # the case shows what it claims to
    ours = _deliveries(await _fetchd_delivers(md.case, tmp_path))
    assert ours == theirs


@pytest.fixture
def oracle_home() -> Iterator[Path]:
    """A home the oracle's user can enter: pytest's own tmp_path is private to root."""
    path = Path(tempfile.mkdtemp(prefix="fetchd-delivery-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _rc_text(case: Case, pop_port: int, smtp_port: int) -> str:
    return (
        "set postmaster pm\n"
        f"poll pop.test via {case.via} proto pop3 port {pop_port} {case.server_options}\n"
        f'  user demo password "{SECRET}" is {case.users} here\n'
        f"  smtphost {case.smtphost}/{smtp_port}\n"
        f"  sslproto '' fetchsizelimit 0 keep {case.options}\n"
    )


async def _fetchmail_delivers(case: Case, home: Path, codes: tuple[int, ...] = (0,)) -> Sink:
    pop = DemoPOP3Server("demo", SECRET, [case.message, *case.more])
    await pop.start()
    try:
        async with running_mta() as sink:
            rcfile = home / "fetchmailrc"
            rcfile.write_text(_rc_text(case, pop.port, sink.port))
            rcfile.chmod(0o600)
            code, out = await run_fetchmail(home, rcfile, TIMEOUT)
            assert code in codes, f"fetchmail failed ({code}):\n{out}"
            return sink
    finally:
        await pop.stop()


async def _fetchd_delivers(case: Case, home: Path, codes: tuple[int, ...] = (0,)) -> Sink:
    pop = DemoPOP3Server("demo", SECRET, [case.message, *case.more])
    await pop.start()
    try:
        async with running_mta() as sink:
            rcfile = home / ".fetchmailrc"
            rcfile.write_text(_rc_text(case, pop.port, sink.port))
            rcfile.chmod(0o600)
            code, out = await run_fetchd(home, rcfile, env={"LC_ALL": "C.UTF-8"}, timeout=TIMEOUT)
            assert code in codes, f"fetchd failed ({code}):\n{out}"
            return sink
    finally:
        await pop.stop()


def _deliveries(sink: Sink) -> list[Delivery]:
    """Each message the sink got, without the first Received header (and its continuations).
    Recipients are compared as sets: fetchmail's order is its header walk's, not a contract."""
    assert len(sink.received) == len(sink.envelopes), sink.envelopes
    return [_delivery(env, data) for env, data in zip(sink.envelopes, sink.received, strict=True)]


def _delivery(envelope: tuple[str, list[str]], data: bytes) -> Delivery:
    mail_from, rcpt_to = envelope
    message = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    end = message.find(b"\r\n\r\n")
    assert end >= 0, message
    head, body = message[:end], message[end + 4 :]
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("Received:"), lines[0]
    rest = 1
    while rest < len(lines) and lines[rest][:1] in (" ", "\t"):
        rest += 1
    trace = [_TOOL.sub("(TOOL", line).rsplit("; ", 1)[0] for line in lines[:rest]]
    if "; " not in lines[rest - 1]:  # no `for` clause (several recipients): the date alone
        trace[-1] = "\t(date)"
    return Delivery(mail_from, sorted(rcpt_to), trace, lines[rest:], body)


_TOOL = re.compile(r"\((?:fetchmail|fetchd)-[^ )]+")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_mta_receives_from_fetchd_what_it_receives_from_fetchmail(
    case: Case, oracle_home: Path, tmp_path: Path
) -> None:
    theirs = _deliveries(await _fetchmail_delivers(case, oracle_home))
    ours = _deliveries(await _fetchd_delivers(case, tmp_path))
    assert len(theirs) == 1
    assert ours == theirs
    if "tracepolls" in case.server_options:  # the words are there, not missing from both
        assert "(TOOL polling pop.test account demo)" in theirs[0].trace[1]
    # The address is there with `dns`, and not without: the cases test both.
    assert ("[" in theirs[0].trace[0]) == ("no dns" not in case.server_options), theirs


async def test_a_bad_header_is_refused_by_both(oracle_home: Path, tmp_path: Path) -> None:
    """fetchmail's default, bad-header reject: neither tool passes the message on. (fetchmail
    would then delete it without keep; fetchd keeps it, tested in tests/unit/test_routing.py.)"""
    case = Case("bad-header-reject", BAD_HEADER)
    theirs = await _fetchmail_delivers(case, oracle_home, codes=(0, 1))
    ours = await _fetchd_delivers(case, tmp_path, codes=(0, 1))
    assert theirs.received == [] and ours.received == []
