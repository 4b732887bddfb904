"""IMAP4rev1 server responses, bytes in and typed values out: no I/O (RFC 3501 section 7, 9).

Two layers:
- ``ResponseReader`` frames the byte stream into whole responses. A response is a line ending in
  CRLF, except that a line ending in ``{n}`` announces a literal of exactly n octets, after which
  the same response continues. The reader is iterative (one pass over each chunk, whatever the
  number of lines), refuses a literal larger than its limit before reading any of it, refuses an
  over-long line, and reports end of file in the middle of a response as a broken connection,
  never as a short message. After any error it refuses further use.
- ``parse_response`` turns one framed response into a typed value (tagged status, untagged
  status with its response code, CAPABILITY, EXISTS, EXPUNGE, FETCH, SEARCH, ESEARCH,
  continuation), strictly: anything malformed raises ProtocolError rather than being guessed at.

Also the sequence-set helpers the client needs to address messages by UID.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from fetchd.errors import ProtocolError, SocketError

# 1 GiB: no mail server offers such a message; a larger announcement is a broken or hostile
# server, and we refuse it before reading (and buffering) a single octet of it.
MAX_LITERAL = 1 << 30
# A line without its literals. A SEARCH answer over a big mailbox is the longest we expect
# (50,000 UIDs is about 300 kB).
MAX_LINE = 16 << 20
# A number in a response: RFC 3501 numbers are 32-bit, sizes fit in 64 bits; a longer run of
# digits is refused (Python's int() refuses more than 4300 digits with a ValueError).
MAX_DIGITS = 20
UID_MAX = (1 << 32) - 1
# ESEARCH ALL as ranges: no more numbers than a plain SEARCH line of MAX_LINE octets can carry.
MAX_SEARCH = MAX_LINE // 2

_LITERAL_AT_END = re.compile(rb"\{(\d+)\}\Z")


@dataclass(frozen=True, slots=True)
class RawResponse:
    """A whole response; ``literals[i]`` sits between ``parts[i]`` and ``parts[i+1]``."""

    parts: tuple[bytes, ...]
    literals: tuple[bytes, ...] = ()

    @property
    def first_line(self) -> bytes:
        """The text before the first literal (the whole line when there is none)."""
        return self.parts[0]


class ResponseReader:
    """Frames IMAP responses from a byte stream; feed it bytes, get whole responses back."""

    def __init__(self, *, max_literal: int = MAX_LITERAL, max_line: int = MAX_LINE) -> None:
        self._max_literal = max_literal
        self._max_line = max_line
        self._buffer = bytearray()
        self._parts: list[bytes] = []
        self._literals: list[bytes] = []
        self._line_length = 0  # text octets of the response so far, literals excluded
        self._literal_size: int | None = None  # octets of the literal we are inside, if any
        self._error: Exception | None = None

    @property
    def buffered(self) -> int:
        """Octets received and not yet part of a whole response."""
        return len(self._buffer) + self._line_length + sum(map(len, self._literals))

    @property
    def in_response(self) -> bool:
        """True between the first octet of a response and its final CRLF."""
        return bool(self._buffer or self._parts)

    def feed(self, data: bytes) -> list[RawResponse]:
        """Take more bytes (``b""`` = end of file) and return the responses they complete."""
        if self._error is not None:
            raise ProtocolError("IMAP response reader used after an error") from self._error
        try:
            if not data:
                self._end_of_file()
                return []
            self._buffer += data
            return self._drain()
        except (ProtocolError, SocketError) as exc:
            self._error = exc
            raise

    def _end_of_file(self) -> None:
        if self._literal_size is not None:
            raise SocketError(
                f"connection closed inside a literal ({len(self._buffer)} of "
                f"{self._literal_size} octets received)"
            )
        if self.in_response:
            raise SocketError("connection closed in the middle of a response line")

    def _drain(self) -> list[RawResponse]:
        done: list[RawResponse] = []
        buffer = self._buffer
        position = 0
        while True:
            if self._literal_size is not None:
                end = position + self._literal_size
                if len(buffer) < end:
                    break
                # One copy: slicing the bytearray itself would copy the literal twice.
                with memoryview(buffer) as view:
                    self._literals.append(bytes(view[position:end]))
                self._literal_size = None
                position = end
                continue
            end = buffer.find(b"\r\n", position)
            if end < 0:
                if self._line_length + len(buffer) - position > self._max_line:
                    raise ProtocolError(f"response line longer than {self._max_line} octets")
                break
            line = bytes(buffer[position:end])
            position = end + 2
            self._line_length += len(line)
            if self._line_length > self._max_line:
                raise ProtocolError(f"response line longer than {self._max_line} octets")
            announced = _LITERAL_AT_END.search(line) if line.endswith(b"}") else None
            if announced is None:
                self._parts.append(line)
                done.append(RawResponse(tuple(self._parts), tuple(self._literals)))
                self._parts, self._literals, self._line_length = [], [], 0
                continue
            digits = announced.group(1)
            size = int(digits) if len(digits) <= 12 else self._max_literal + 1
            if size > self._max_literal:
                raise ProtocolError(
                    f"server announced a literal of {digits[:20].decode()} octets "
                    f"(limit {self._max_literal})"
                )
            self._parts.append(line[: announced.start()])
            self._literal_size = size
        del buffer[:position]
        return done


# --- Typed responses -------------------------------------------------------------------------

# A parsed value: an atom or number as str (NIL too), a quoted string or literal as bytes, a
# parenthesised list as a tuple.
Value = str | bytes | tuple["Value", ...]


@dataclass(frozen=True, slots=True)
class Tagged:
    """The tagged status that ends a command: ``tag OK|NO|BAD [code] text``."""

    tag: str
    status: str
    code: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Status:
    """An untagged status: ``* OK|NO|BAD|PREAUTH|BYE [code] text``."""

    status: str
    code: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Continuation:
    """``+ text``: the server waits for more of our command."""

    text: bytes


@dataclass(frozen=True, slots=True)
class Capability:
    """``* CAPABILITY ...``, names upper-cased."""

    names: frozenset[str]


@dataclass(frozen=True, slots=True)
class Count:
    """``* n EXISTS|RECENT|EXPUNGE``."""

    kind: str
    number: int


@dataclass(frozen=True, slots=True)
class Fetch:
    """``* n FETCH (...)``: the items we use, None when the server did not send them."""

    sequence: int
    uid: int | None = None
    size: int | None = None
    flags: frozenset[str] | None = None
    body: bytes | None = None  # BODY[] (the whole message), or the part BODY[]<origin> holds
    origin: int | None = None  # where a partial BODY[]<origin> starts (RFC 3501 6.4.5)


@dataclass(frozen=True, slots=True)
class Search:
    """``* SEARCH n...`` or ``* ESEARCH ... ALL set``: the numbers found."""

    numbers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Other:
    """An untagged response we have no use for (FLAGS, LIST, ...)."""

    name: str


Response = Tagged | Status | Continuation | Capability | Count | Fetch | Search | Other

_STATUS_WORDS = frozenset({"OK", "NO", "BAD", "PREAUTH", "BYE"})
_TAGGED_WORDS = frozenset({"OK", "NO", "BAD"})
_TAG = re.compile(rb"[!#$&'*+,\-./0-9:;<=>?@A-Z^_`a-z|}~]+")
_STATUS_LINE = re.compile(rb"(\S+) (\S+)(?: (.*))?\Z", re.DOTALL)
_CODE = re.compile(rb"\[([^\]]*)\] ?")
_NUMBER = re.compile(rb"[0-9]+\Z")


def parse_response(raw: RawResponse) -> Response:
    """Type one framed response; ProtocolError when it breaks the grammar."""
    first = raw.first_line
    if first.startswith(b"+"):
        if raw.literals:
            raise ProtocolError("literal in a continuation request")
        return Continuation(first[2:] if first.startswith(b"+ ") else first[1:])
    if first.startswith(b"* "):
        return _parse_untagged(raw)
    return _parse_tagged(raw)


def _parse_tagged(raw: RawResponse) -> Tagged:
    match = _STATUS_LINE.match(raw.first_line)
    if raw.literals or match is None or not _TAG.fullmatch(match.group(1)):
        raise ProtocolError(f"unexpected line from server: {_shown(raw.first_line)}")
    status = match.group(2).upper().decode("ascii", "replace")
    if status not in _TAGGED_WORDS:
        raise ProtocolError(f"tagged response is not OK/NO/BAD: {_shown(raw.first_line)}")
    code, text = _code_and_text(match.group(3) or b"")
    return Tagged(match.group(1).decode("ascii"), status, code, text)


def _parse_untagged(raw: RawResponse) -> Response:
    first = raw.first_line
    word, _, rest = first[2:].partition(b" ")
    upper = word.upper().decode("ascii", "replace")
    if upper in _STATUS_WORDS:
        if raw.literals:
            raise ProtocolError(f"literal in a status response: {_shown(first)}")
        code, text = _code_and_text(rest)
        return Status(upper, code, text)
    if upper == "CAPABILITY":
        return Capability(frozenset(rest.decode("ascii", "replace").upper().split()))
    if upper == "SEARCH":
        return Search(tuple(_nonzero(_number(n), "SEARCH") for n in rest.split()))
    if upper == "ESEARCH":
        return _parse_esearch(_values(raw, len(first) - len(rest)))
    if _NUMBER.match(word):
        name, _, _ = rest.partition(b" ")
        kind = name.upper().decode("ascii", "replace")
        if kind == "FETCH":
            if not raw.literals:
                flat = _FLAT_FETCH.match(rest)
                if flat is not None:
                    return _parse_fetch(_number(word), [_flat_items(flat.group(1))])
            return _parse_fetch(_number(word), _values(raw, len(first) - len(rest) + 6))
        if kind in ("EXISTS", "RECENT", "EXPUNGE") and name == rest:
            return Count(kind, _number(word))
        raise ProtocolError(f"unknown numbered response: {_shown(first)}")
    return Other(upper)


# The common FETCH reply without literals, quoted strings or nested lists beyond one level
# (``UID 7 RFC822.SIZE 99 FLAGS (\\Seen)``): parsed by two regular expressions instead of the
# general tokenizer, which makes a 50,000-line listing several times cheaper. Same result.
_FLAT_FETCH = re.compile(
    rb"FETCH \(((?:[A-Za-z0-9.]+ (?:[0-9]+|NIL|\([^()\"{}\[\]\r\n]*\))(?: |(?=\))))*)\)\Z"
)
_FLAT_ITEM = re.compile(rb"([A-Za-z0-9.]+) (?:([0-9]+|NIL)|\(([^()]*)\))")


def _flat_items(text: bytes) -> tuple[Value, ...]:
    items: list[Value] = []
    for name, atom, flags in _FLAT_ITEM.findall(text):
        items.append(name.decode("ascii"))
        if atom:
            items.append(atom.decode("ascii"))
        else:
            items.append(tuple(flags.decode("ascii", "replace").split()))
    return tuple(items)


def _code_and_text(rest: bytes) -> tuple[str | None, str]:
    code = None
    if rest.startswith(b"["):
        match = _CODE.match(rest)
        if match is None:
            raise ProtocolError(f"unterminated response code: {_shown(rest)}")
        code = match.group(1).decode("ascii", "replace")
        rest = rest[match.end() :]
    return code, rest.decode("utf-8", "replace")


def _parse_fetch(sequence: int, values: list[Value]) -> Fetch:
    if len(values) != 1 or not isinstance(values[0], tuple):
        raise ProtocolError(f"FETCH {sequence} without a parenthesised list of items")
    items = values[0]
    if len(items) % 2:
        raise ProtocolError(f"FETCH {sequence}: an item without a value")
    uid = size = None
    flags: frozenset[str] | None = None
    body = None
    origin: int | None = None
    for index in range(0, len(items), 2):
        name, value = items[index], items[index + 1]
        if not isinstance(name, str):
            raise ProtocolError(f"FETCH {sequence}: item name is not an atom")
        key = name.upper()
        if key == "UID":
            uid = _nonzero(_number_value(value, "UID"), "UID")
        elif key == "RFC822.SIZE":
            size = _number_value(value, "RFC822.SIZE")
        elif key == "FLAGS":
            if not isinstance(value, tuple) or not all(isinstance(f, str) for f in value):
                raise ProtocolError(f"FETCH {sequence}: FLAGS is not a list of atoms")
            flags = frozenset(f.upper() for f in value if isinstance(f, str))
        elif key == "BODY[]":
            if not isinstance(value, bytes):
                raise ProtocolError(f"FETCH {sequence}: BODY[] is not a string")
            body = value
        elif key.startswith("BODY[]<") and key.endswith(">"):
            origin = _number(key[7:-1].encode("ascii", "replace"))
            if value == "NIL":
                value = b""  # a part beyond the end of the message, from some servers
            if not isinstance(value, bytes):
                raise ProtocolError(f"FETCH {sequence}: {key} is not a string")
            body = value
    return Fetch(sequence, uid, size, flags, body, origin)


def _parse_esearch(values: list[Value]) -> Search:
    # RFC 4731: "* ESEARCH [(TAG "x")] [UID] *(name value)"; only ALL carries what we want.
    position = 1 if values and isinstance(values[0], tuple) else 0
    if position < len(values) and str(values[position]).upper() == "UID":
        position += 1
    numbers: tuple[int, ...] = ()
    rest = values[position:]
    if len(rest) % 2:
        raise ProtocolError("ESEARCH: a result name without a value")
    for name, value in zip(rest[::2], rest[1::2], strict=True):
        if isinstance(name, str) and name.upper() == "ALL":
            if not isinstance(value, str):
                raise ProtocolError("ESEARCH ALL is not a sequence set")
            numbers = tuple(itertools.islice(parse_sequence_set(value), MAX_SEARCH + 1))
            if len(numbers) > MAX_SEARCH:
                raise ProtocolError(f"ESEARCH ALL names more than {MAX_SEARCH} messages")
    return Search(numbers)


def _number(token: bytes) -> int:
    if not _NUMBER.match(token) or len(token) > MAX_DIGITS:
        raise ProtocolError(f"not a number: {_shown(token)}")
    return int(token)


def _nonzero(number: int, what: str) -> int:
    """Message numbers and UIDs are nz-number (RFC 3501 9): a 0 would reach a sequence set."""
    if number == 0:
        raise ProtocolError(f"{what}: 0 is no message number or UID")
    return number


def _number_value(value: Value, what: str) -> int:
    if (
        not isinstance(value, str)
        or not value.isdigit()
        or not value.isascii()
        or len(value) > MAX_DIGITS
    ):
        raise ProtocolError(f"{what} is not a number")
    return int(value)


def _shown(data: bytes) -> str:
    """Server text for an error message: capped and escaped, never trusted for the terminal."""
    text = data[:120].decode("ascii", "backslashreplace")
    return repr(text if len(data) <= 120 else text + "...")


# --- Value tokenizer -------------------------------------------------------------------------

_TOKEN = re.compile(
    rb' |(?P<open>\()|(?P<close>\))|"(?P<quoted>(?:[^"\\\r\n]|\\["\\])*)"'
    rb"|(?P<atom>[^ ()\"{\[\]\r\n]*(?:\[[^\]\r\n]*\][^ ()\"{\[\]\r\n]*)*)"
)
_UNESCAPE = re.compile(rb'\\(["\\])')


def _values(raw: RawResponse, start: int) -> list[Value]:
    """Parse the values of ``raw`` from offset ``start`` of its first part onwards."""
    stack: list[list[Value]] = [[]]
    for index, part in enumerate(raw.parts):
        if index and part[:1] not in (b"", b" ", b")"):
            # A literal runs exactly as long as announced; text glued to its end means the
            # server sent more than it announced.
            raise ProtocolError(f"literal longer than announced, followed by {_shown(part)}")
        _tokenize(part, start if index == 0 else 0, stack)
        if index < len(raw.literals):
            stack[-1].append(raw.literals[index])
    if len(stack) != 1:
        raise ProtocolError("unbalanced parentheses in a response")
    return stack[0]


def _tokenize(text: bytes, position: int, stack: list[list[Value]]) -> None:
    end = len(text)
    while position < end:
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ProtocolError(f"cannot parse response near {_shown(text[position:])}")
        position = match.end()
        kind = match.lastgroup
        if kind is None:
            continue  # the separating space
        if kind == "open":
            stack.append([])
        elif kind == "close":
            if len(stack) == 1:
                raise ProtocolError("unbalanced parentheses in a response")
            done = tuple(stack.pop())
            stack[-1].append(done)
        elif kind == "quoted":
            stack[-1].append(_UNESCAPE.sub(rb"\1", match.group("quoted")))
        else:
            stack[-1].append(match.group("atom").decode("ascii", "replace"))


# --- Sequence sets ---------------------------------------------------------------------------

_RANGE = re.compile(r"([0-9]+)(?::([0-9]+))?\Z")


def parse_sequence_set(text: str) -> Iterator[int]:
    """The numbers of a sequence set without ``*``: "1:3,7" -> 1, 2, 3, 7."""
    for item in text.split(","):
        match = _RANGE.match(item) if len(item) <= 2 * MAX_DIGITS + 1 else None
        if match is None:
            raise ProtocolError(f"bad sequence set item {item[:40]!r}")
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if low > high:
            low, high = high, low
        if high > UID_MAX:
            raise ProtocolError(f"sequence set item {item[:40]!r} is beyond 32 bits")
        yield from range(low, high + 1)


def encode_sequence_set(numbers: Iterable[int]) -> str:
    """A compact sequence set for ``numbers`` (sorted, runs as ranges): [1, 2, 3, 7] -> "1:3,7"."""
    ordered = sorted(set(numbers))
    if not ordered:
        raise ValueError("an empty sequence set cannot be sent")
    if ordered[0] < 1:
        raise ValueError("message numbers and UIDs start at 1")
    pieces: list[str] = []
    start = previous = ordered[0]
    for number in ordered[1:]:
        if number != previous + 1:
            pieces.append(_range_text(start, previous))
            start = number
        previous = number
    pieces.append(_range_text(start, previous))
    return ",".join(pieces)


def _range_text(start: int, end: int) -> str:
    return str(start) if start == end else f"{start}:{end}"
