"""What the fuzzing campaign (contrib/fuzz/campaign.py) found: each input once, as a test.

Every one of these raised an untyped exception (ValueError, IndexError, RecursionError) or
allocated without bound where fetchd must answer with a typed FetchdError or a plain result.
"""

from __future__ import annotations

import time

import pytest

from fetchd.daemon.control import parse_request
from fetchd.delivery.headers import envelope_sender
from fetchd.delivery.multidrop import MultidropRules, route
from fetchd.delivery.rewrite import reply_hack
from fetchd.errors import ProtocolError
from fetchd.imap import parse as imap_parse
from fetchd.imap.client import IMAPClient, Security
from fetchd.imap.parse import ResponseReader, parse_response, parse_sequence_set
from fetchd.net.tls import TLSSettings
from fetchd.pop3.protocol import parse_listing
from fetchd.pop3.source import POP3Account, open_pop3
from tests.fakes.imapserver import FakeIMAPServer
from tests.fakes.pop3server import FakePOP3Server, Faults

HUGE = b"9" * 5000  # past int()'s 4300-digit limit


def _imap(line: bytes) -> object:
    return parse_response(ResponseReader().feed(line + b"\r\n")[0])


@pytest.mark.parametrize(
    ("lines", "what"),
    [
        ([b"1 120", HUGE + b" 3"], "LIST"),
        ([b"1 " + HUGE], "LIST"),  # the client turns sizes into ints
        ([HUGE + b" uid-1"], "UIDL"),
    ],
)
def test_a_listing_with_a_number_of_thousands_of_digits_is_a_protocol_error(
    lines: list[bytes], what: str
) -> None:
    """A LIST or UIDL line whose number or size has thousands of digits is malformed."""
    with pytest.raises(ProtocolError, match="malformed"):
        parse_listing(lines, what)


@pytest.mark.parametrize("reply", ["+OK ² 3", "+OK 1 " + "9" * 5000])
async def test_a_stat_reply_with_a_non_ascii_or_endless_number_is_a_protocol_error(
    reply: str,
) -> None:
    """STAT with a superscript digit or 5000 digits: ProtocolError, not a ValueError."""
    async with FakePOP3Server([b"a\r\n"], faults=Faults(errors={"STAT": reply})) as server:
        source = await open_pop3(
            POP3Account(
                "127.0.0.1", server.port, "u", "p", "u@fake", TLSSettings(sslproto=""), timeout=2.0
            )
        )
        with pytest.raises(ProtocolError, match="malformed STAT"):
            await source.client.stat()
        await source.abort()


@pytest.mark.parametrize(
    "line",
    [
        b"* SEARCH 1 " + HUGE,
        b"* " + HUGE + b" EXISTS",
        b"* 1 FETCH (UID " + HUGE + b")",
        b"* 1 FETCH (RFC822.SIZE " + HUGE + b' FLAGS ("x"))',  # the general tokenizer
        b"* ESEARCH UID ALL 1:" + HUGE,
        b"* ESEARCH UID ALL 1:4294967296",  # past 32 bits
    ],
)
def test_an_imap_number_of_thousands_of_digits_is_a_protocol_error(line: bytes) -> None:
    """A number in a response longer than any 64-bit value: ProtocolError, not ValueError."""
    with pytest.raises(ProtocolError):
        _imap(line)


def test_esearch_all_naming_more_messages_than_a_search_line_can_is_refused() -> None:
    """``ALL 1:N`` with N beyond what a plain SEARCH line could list is refused, not built."""
    with pytest.raises(ProtocolError, match="more than"):
        _imap(b"* ESEARCH UID ALL 1:%d" % (imap_parse.MAX_SEARCH + 1))
    assert _imap(b"* ESEARCH UID ALL 1:3,7").numbers == (1, 2, 3, 7)  # type: ignore[attr-defined]


def test_a_sequence_set_item_of_thousands_of_digits_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        list(parse_sequence_set("1," + HUGE.decode()))


async def test_select_with_an_endless_uidvalidity_is_a_protocol_error() -> None:
    """``[UIDVALIDITY 999...]`` of 5000 digits is no valid UIDVALIDITY: ProtocolError."""
    fake = FakeIMAPServer()
    fake.replace["SELECT"] = b"* 0 EXISTS\r\n* OK [UIDVALIDITY " + HUGE + b"] x\r\n{tag} OK"
    await fake.start()
    try:
        client = await IMAPClient.connect(
            "127.0.0.1",
            fake.port,
            security=Security.PLAIN,
            timeout=5.0,
            plaintext_password_allowed=True,  # sslproto ''
        )
        await client.login("alice", "secret")
        with pytest.raises(ProtocolError, match="UIDVALIDITY"):
            await client.select("INBOX")
    finally:
        await fake.stop()


async def test_an_empty_uidvalidity_code_in_a_session_is_a_protocol_error() -> None:
    """``* OK [UIDVALIDITY ]`` after SELECT is a changed UIDVALIDITY, not an IndexError."""
    fake = FakeIMAPServer()
    fake.add(b"Subject: 1\r\n\r\nbody\r\n")
    await fake.start()
    try:
        client = await IMAPClient.connect(
            "127.0.0.1",
            fake.port,
            security=Security.PLAIN,
            timeout=5.0,
            plaintext_password_allowed=True,  # sslproto ''
        )
        await client.login("alice", "secret")
        await client.select("INBOX")
        fake.replace["NOOP"] = b"* OK [UIDVALIDITY ] x\r\n{tag} OK"
        with pytest.raises(ProtocolError, match="UIDVALIDITY"):
            await client.noop()
    finally:
        await fake.stop()


NESTED = b"To: " + b"a: " * 2000 + b"\r\n\r\nbody\r\n"


def test_a_to_header_of_thousands_of_nested_groups_goes_to_the_postmaster() -> None:
    """``To: a: a: a: ...`` recurses in email.utils once per group: no addresses, no crash."""
    rules = MultidropRules(("pop.example.org",), localnames=("alice",), envelope=None)
    routing = route(NESTED + b"Cc: alice@pop.example.org\r\n", rules)
    assert routing.to_postmaster and routing.recipients == ("postmaster",)
    fine = b"Cc: alice@pop.example.org\r\n" + NESTED  # the other headers still count
    assert route(fine, rules).recipients == ("alice",)


def test_a_from_header_of_thousands_of_nested_groups_names_no_sender() -> None:
    """No crash, and no address: the deliverer falls back as for a message with no From."""
    assert envelope_sender(b"From: " + b"a: " * 2000 + b"\r\n\r\nbody\r\n") is None


def test_a_control_request_nested_thousands_deep_is_a_bad_request() -> None:
    """``[[[[...`` makes the JSON decoder recurse: a ValueError the server answers, not a crash."""
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_request(b"[" * 4000 + b"\n")


def test_a_to_header_of_a_long_run_of_blanks_is_rewritten_in_linear_time() -> None:
    """`To:` and 64 KiB of blanks: the fast-path pattern of reply_hack no longer backtracks.

    The campaign's one slow input: before possessive quantifiers this took about 1.3 s for
    16,000 blanks and grew with the square of the length (about 20 s here); now about 0.07 s.
    The bound is generous: it only tells linear from quadratic."""
    field = "To: " + " " * 65536 + "joe\r\n"
    began = time.perf_counter()
    rewritten = reply_hack(field, "example.org")
    assert time.perf_counter() - began < 5.0
    assert rewritten.endswith(" joe@example.org\r\n")


@pytest.mark.parametrize(
    "line", [b"* SEARCH 3 0 7", b"* 1 FETCH (UID 0 RFC822.SIZE 5)", b"* 1 FETCH (UID 00 FLAGS ())"]
)
def test_an_imap_uid_of_zero_is_a_protocol_error(line: bytes) -> None:
    """Stateful fuzzing, seed 1702: a SEARCH answer whose number became 0 reached the sequence
    set encoder, whose ValueError ended the poll as an internal error."""
    with pytest.raises(ProtocolError):
        _imap(line)
