"""The POP3 core without I/O: replies, response codes, listings, framing, command encoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fetchd.errors import (
    AuthError,
    CredentialsRejectedError,
    ProtocolError,
    ServerBusyError,
    ServerError,
)
from fetchd.pop3.protocol import (
    MultilineDecoder,
    apop_timestamp,
    encode_command,
    error_for,
    parse_capabilities,
    parse_listing,
    parse_reply,
    shown,
)


@pytest.mark.parametrize(
    ("line", "ok", "text", "code"),
    [
        (b"+OK", True, "", None),
        (b"+OK 2 320", True, "2 320", None),
        (b"-ERR [IN-USE] mailbox locked", False, "mailbox locked", "IN-USE"),
        (b"-ERR [SYS/TEMP] try later", False, "try later", "SYS/TEMP"),
        (b"-ERR [auth] bad password", False, "bad password", "AUTH"),
        (b"+OK [LOGIN-DELAY] 900", True, "900", "LOGIN-DELAY"),
    ],
)
def test_replies_and_response_codes(line: bytes, ok: bool, text: str, code: str | None) -> None:
    reply = parse_reply(line)
    assert (reply.ok, reply.text, reply.code) == (ok, text, code)


@pytest.mark.parametrize("line", [b"", b"OK", b"* OK", b"+ok", b"250 hello"])
def test_a_line_that_is_no_reply_is_a_protocol_error(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_reply(line)


@pytest.mark.parametrize(
    ("line", "during", "error", "exit_code"),
    [
        (b"-ERR [IN-USE] locked", "PASS", ServerBusyError, 14),
        (b"-ERR [LOGIN-DELAY] wait", "PASS", ServerBusyError, 14),
        (b"-ERR [SYS/TEMP] disk", "RETR 1", ServerError, 7),
        (b"-ERR [SYS/PERM] gone", "RETR 1", ServerError, 7),
        (b"-ERR [AUTH] nope", "PASS", CredentialsRejectedError, 3),
        (b"-ERR invalid password", "PASS", CredentialsRejectedError, 3),
        (b"-ERR [AUTH] token", "AUTH XOAUTH2", CredentialsRejectedError, 3),
        (b"-ERR no such user", "USER", AuthError, 3),
        (b"-ERR mailbox is locked by another session", "STAT", ServerBusyError, 14),
        (b"-ERR no such message", "RETR 9", ProtocolError, 4),
    ],
)
def test_errors_map_to_fetchmail_outcomes(
    line: bytes, during: str, error: type[Exception], exit_code: int
) -> None:
    mapped = error_for(parse_reply(line), during, "pop.example.org")
    assert type(mapped) is error
    assert mapped.exit_code == exit_code
    assert "pop.example.org" in str(mapped)


def test_sys_temp_is_transient_and_sys_perm_is_not() -> None:
    assert error_for(parse_reply(b"-ERR [SYS/TEMP] x"), "STAT", "h").transient
    assert not error_for(parse_reply(b"-ERR [SYS/PERM] x"), "STAT", "h").transient


@pytest.mark.parametrize("bad", ["a\r\nDELE 1", "x\n", "nul\0"])
def test_commands_refuse_smuggled_lines(bad: str) -> None:
    with pytest.raises(ProtocolError):
        encode_command("USER", bad)


def test_command_encoding() -> None:
    assert encode_command("RETR", "12") == b"RETR 12\r\n"
    assert encode_command("QUIT") == b"QUIT\r\n"


def test_listings() -> None:
    assert parse_listing([b"1 120", b"2 4000"], "LIST") == {1: "120", 2: "4000"}
    assert parse_listing([b"1 abc-1", b"3 Zz9"], "UIDL") == {1: "abc-1", 3: "Zz9"}


@pytest.mark.parametrize(
    ("lines", "what"),
    [
        ([b"x 120"], "LIST"),
        ([b"0 120"], "LIST"),
        ([b"1 12a"], "LIST"),
        ([b"1"], "LIST"),
        ([b"1 5", b"1 6"], "LIST"),
        ([b"1 " + b"u" * 71], "UIDL"),
        ([b"1 uid\x01"], "UIDL"),
    ],
)
def test_malformed_listings_are_protocol_errors(lines: list[bytes], what: str) -> None:
    with pytest.raises(ProtocolError):
        parse_listing(lines, what)


def test_capabilities_and_apop_timestamp() -> None:
    caps = parse_capabilities([b"USER", b"SASL PLAIN CRAM-MD5", b"pipelining"])
    assert caps == {"USER": (), "SASL": ("PLAIN", "CRAM-MD5"), "PIPELINING": ()}
    assert apop_timestamp(parse_reply(b"+OK ready <1896.697@dbc.mtview.ca.us>")) == (
        "<1896.697@dbc.mtview.ca.us>"
    )
    assert apop_timestamp(parse_reply(b"+OK ready")) is None


def test_decoder_unstuffs_dots_and_stops_at_the_terminator() -> None:
    decoder = MultilineDecoder()
    data = b"a\r\n..b\r\n.c\r\n\r\n.\r\nNEXT"
    consumed = decoder.feed(data)
    assert decoder.done
    assert data[consumed:] == b"NEXT"
    assert decoder.body() == b"a\r\n.b\r\nc\r\n\r\n"


def test_decoder_refuses_oversize() -> None:
    decoder = MultilineDecoder(limit=10)
    with pytest.raises(ProtocolError):
        decoder.feed(b"0123456789abc\r\n")


_LINES = st.lists(
    st.binary(max_size=20).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), max_size=8
)


@given(_LINES, st.integers(min_value=1, max_value=7))
def test_stuffing_round_trips_at_any_split(lines: list[bytes], step: int) -> None:
    wire = b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines) + b".\r\n"
    decoder = MultilineDecoder()
    for start in range(0, len(wire), step):
        if decoder.done:
            break
        decoder.feed(wire[start : start + step])
    assert decoder.done
    assert decoder.lines() == lines


def test_shown_escapes_and_caps() -> None:
    assert shown(b"a\x1b[31mb") == "a\\x1b[31mb"
    assert len(shown(b"x" * 500)) == 120
