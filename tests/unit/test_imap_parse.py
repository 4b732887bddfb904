"""Tests of the pure IMAP response reader and parser (fetchd.imap.parse)."""

from __future__ import annotations

import ast
import pathlib

import pytest

from fetchd.errors import ProtocolError, SocketError
from fetchd.imap import parse
from fetchd.imap.parse import (
    Capability,
    Continuation,
    Count,
    Fetch,
    Other,
    RawResponse,
    ResponseReader,
    Search,
    Status,
    Tagged,
    encode_sequence_set,
    parse_response,
    parse_sequence_set,
)

SESSION = (
    b"* OK [CAPABILITY IMAP4rev1 UIDPLUS] Dovecot ready.\r\n"
    b"* 3 FETCH (UID 7 RFC822.SIZE 12 FLAGS (\\Seen) BODY[] {12}\r\nab\r\n{3}\r\n)\r\n)\r\n"
    b"* 4 EXISTS\r\n"
    b"* 5 FETCH (BODY[] {0}\r\n UID 9)\r\n"
    b"A1 OK [READ-WRITE] Select completed.\r\n"
)
EXPECTED = [
    Status("OK", "CAPABILITY IMAP4rev1 UIDPLUS", "Dovecot ready."),
    Fetch(3, uid=7, size=12, flags=frozenset({"\\SEEN"}), body=b"ab\r\n{3}\r\n)\r\n"),
    Count("EXISTS", 4),
    Fetch(5, uid=9, body=b""),
    Tagged("A1", "OK", "READ-WRITE", "Select completed."),
]


def _parse_all(chunks: list[bytes]) -> list[parse.Response]:
    reader = ResponseReader()
    out: list[parse.Response] = []
    for chunk in chunks:
        out.extend(parse_response(raw) for raw in reader.feed(chunk))
    assert reader.feed(b"") == []
    return out


def test_session_parses_to_typed_responses() -> None:
    """A whole session in one chunk yields every response typed, literals included."""
    assert _parse_all([SESSION]) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(SESSION)))
def test_split_at_every_byte_boundary(cut: int) -> None:
    """Splitting the stream at any byte gives the same responses as one chunk."""
    assert _parse_all([SESSION[:cut], SESSION[cut:]]) == EXPECTED


def test_one_byte_at_a_time() -> None:
    """Feeding one byte at a time gives the same responses."""
    assert _parse_all([SESSION[i : i + 1] for i in range(len(SESSION))]) == EXPECTED


def test_literal_content_is_not_parsed_as_lines() -> None:
    """CRLF and braces inside a literal belong to the literal, not to the framing."""
    raw = ResponseReader().feed(b"* 1 FETCH (UID 1 BODY[] {9}\r\nA1 OK x\r\n)\r\n")
    assert raw == [RawResponse((b"* 1 FETCH (UID 1 BODY[] ", b")"), (b"A1 OK x\r\n",))]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"+ go ahead", Continuation(b"go ahead")),
        (b"+", Continuation(b"")),
        (b"* PREAUTH [CAPABILITY IMAP4rev1] hi", Status("PREAUTH", "CAPABILITY IMAP4rev1", "hi")),
        (b"* BYE shutting down", Status("BYE", None, "shutting down")),
        (b"* OK [UIDVALIDITY 1234] ok", Status("OK", "UIDVALIDITY 1234", "ok")),
        (
            b"* CAPABILITY IMAP4rev1 uidplus AUTH=PLAIN",
            Capability(frozenset({"IMAP4REV1", "UIDPLUS", "AUTH=PLAIN"})),
        ),
        (b"* SEARCH 4 8 15", Search((4, 8, 15))),
        (b"* SEARCH", Search(())),
        (b'* ESEARCH (TAG "A9") UID ALL 1:3,7', Search((1, 2, 3, 7))),
        (b'* ESEARCH (TAG "A9") UID', Search(())),
        (b"* ESEARCH UID COUNT 3 ALL 5", Search((5,))),
        (b"* 12 EXPUNGE", Count("EXPUNGE", 12)),
        (b"* 0 RECENT", Count("RECENT", 0)),
        (b"* FLAGS (\\Seen \\Deleted)", Other("FLAGS")),
        (
            b"* 2 FETCH (FLAGS (\\Deleted \\Seen))",
            Fetch(2, flags=frozenset({"\\DELETED", "\\SEEN"})),
        ),
        (b'* 2 FETCH (UID 4 X-GM-LABELS ("a b" c) RFC822.SIZE 99)', Fetch(2, uid=4, size=99)),
        (b'* 2 FETCH (UID 4 BODY[] "q\\"x")', Fetch(2, uid=4, body=b'q"x')),
        (b"* 2 FETCH (UID 4 BODY[HEADER.FIELDS (FROM)] NIL)", Fetch(2, uid=4)),
        (
            b"A001 NO [AUTHENTICATIONFAILED] bad",
            Tagged("A001", "NO", "AUTHENTICATIONFAILED", "bad"),
        ),
        (b"A001 bad what", Tagged("A001", "BAD", None, "what")),
    ],
)
def test_parse_table(line: bytes, expected: parse.Response) -> None:
    """Each kind of response parses to its typed value."""
    assert parse_response(RawResponse((line,))) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"* 2 FETCH UID 4",  # no list
        b"* 2 FETCH (UID)",  # item without value
        b"* 2 FETCH (UID x)",  # non-numeric UID
        b"* 2 FETCH (UID 4",  # unbalanced
        b"* 2 FETCH (UID 4))",  # unbalanced
        b"* 2 FETCH (FLAGS \\Seen)",  # FLAGS not a list
        b'* 2 FETCH (UID 4 BODY[] "unterminated)',
        b"* 2 FROB",
        b"* 2 EXISTS now",
        b"* SEARCH 1 x",
        b"* OK [UIDVALIDITY 5 no end",
        b"hello",
        b"A1 MAYBE fine",
        b"A1",
        b"* ESEARCH UID ALL 1:x",
    ],
)
def test_malformed_responses_are_refused(line: bytes) -> None:
    """A response that breaks the grammar raises ProtocolError instead of being guessed at."""
    with pytest.raises(ProtocolError):
        parse_response(RawResponse((line,)))


def test_literal_longer_than_announced_is_refused() -> None:
    """Bytes glued after a literal (the server sent more than it announced) are refused."""
    raw = ResponseReader().feed(b"* 1 FETCH (UID 1 BODY[] {3}\r\nabcdef)\r\n")
    assert len(raw) == 1
    with pytest.raises(ProtocolError, match="longer than announced"):
        parse_response(raw[0])


def test_huge_literal_is_refused_before_reading() -> None:
    """``{9999999999}`` is refused at once, and the reader refuses further use."""
    reader = ResponseReader()
    with pytest.raises(ProtocolError, match="9999999999"):
        reader.feed(b"* 1 FETCH (BODY[] {9999999999}\r\n")
    with pytest.raises(ProtocolError):
        reader.feed(b"* 1 EXISTS\r\n")


def test_literal_limit_is_configurable() -> None:
    """A literal one octet over the configured limit is refused, one at the limit accepted."""
    assert ResponseReader(max_literal=4).feed(b"* 1 FETCH (BODY[] {4}\r\nabcd)\r\n")
    with pytest.raises(ProtocolError):
        ResponseReader(max_literal=4).feed(b"* 1 FETCH (BODY[] {5}\r\n")


def test_overlong_line_is_refused() -> None:
    """A line with no CRLF beyond the limit is refused rather than buffered forever."""
    reader = ResponseReader(max_line=100)
    reader.feed(b"* " + b"x" * 50)
    with pytest.raises(ProtocolError):
        reader.feed(b"x" * 60)


def test_literal_cut_by_eof_is_a_socket_error() -> None:
    """End of file inside a literal is a broken connection, never a short message."""
    reader = ResponseReader()
    assert reader.feed(b"* 1 FETCH (UID 1 BODY[] {100}\r\nonly part") == []
    with pytest.raises(SocketError, match="inside a literal"):
        reader.feed(b"")


def test_line_cut_by_eof_is_a_socket_error() -> None:
    """End of file in the middle of a line (or after a literal) is a broken connection."""
    reader = ResponseReader()
    reader.feed(b"* 1 FETCH (UID 1 BODY[] {2}\r\nab")
    with pytest.raises(SocketError, match="middle of a response"):
        reader.feed(b"")


def test_eof_between_responses_is_clean() -> None:
    """End of file right after a CRLF is not an error."""
    reader = ResponseReader()
    reader.feed(b"* BYE bye\r\n")
    assert reader.feed(b"") == []
    assert not reader.in_response


def test_many_lines_in_one_chunk_do_not_recurse() -> None:
    """100,000 responses in one chunk are framed without recursion (aioimaplib's failure)."""
    data = b"".join(b"* %d FETCH (UID %d RFC822.SIZE 10)\r\n" % (i, i) for i in range(1, 100_001))
    responses = ResponseReader().feed(data)
    assert len(responses) == 100_000
    assert parse_response(responses[-1]) == Fetch(100_000, uid=100_000, size=10)


@pytest.mark.parametrize(
    ("numbers", "text"),
    [([1], "1"), ([3, 1, 2, 7], "1:3,7"), ([5, 5, 6, 9, 10, 12], "5:6,9:10,12")],
)
def test_sequence_set_round_trip(numbers: list[int], text: str) -> None:
    """Sequence sets are encoded compactly and parse back to the same numbers."""
    assert encode_sequence_set(numbers) == text
    assert list(parse_sequence_set(text)) == sorted(set(numbers))


def test_sequence_set_refuses_empty_and_zero() -> None:
    """An empty set or a 0 cannot be sent."""
    with pytest.raises(ValueError):
        encode_sequence_set([])
    with pytest.raises(ValueError):
        encode_sequence_set([0, 1])


def test_parse_module_is_pure() -> None:
    """The parse module imports no I/O module (asyncio, socket, ssl)."""
    tree = ast.parse(pathlib.Path(parse.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert not imported & {"asyncio", "socket", "ssl", "aioimaplib"}


@pytest.mark.parametrize(
    "line",
    [
        b"* 1 FETCH (UID 7 RFC822.SIZE 12 FLAGS (\\Seen \\Deleted))",
        b"* 1 FETCH (FLAGS () UID 3)",
        b"* 2 FETCH (UID 4 MODSEQ (12) RFC822.SIZE 0)",
        b"* 2 FETCH (UID 4 RFC822.SIZE NIL)",
    ],
)
def test_flat_fetch_fast_path_matches_the_general_parser(line: bytes) -> None:
    """The regular-expression path for plain FETCH lines gives what the tokenizer gives."""
    number, _, _ = line[2:].partition(b" ")

    def outcome(parser: object) -> object:
        try:
            return parser()  # type: ignore[operator]
        except ProtocolError as exc:
            return type(exc)

    offset = 3 + len(number) + len(b"FETCH ")
    general = outcome(
        lambda: parse._parse_fetch(int(number), parse._values(RawResponse((line,)), offset))
    )
    assert outcome(lambda: parse_response(RawResponse((line,)))) == general
