"""POP3 without I/O: replies, response codes, multi-line framing, listings (RFC 1939, 2449, 3206).

The asyncio client feeds bytes in and gets lines and whole messages out; everything that can be
wrong in what a server sends is decided here, where tests can feed it split at every byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fetchd.errors import (
    AuthError,
    CredentialsRejectedError,
    FetchdError,
    ProtocolError,
    ServerBusyError,
    ServerError,
)

MAX_LINE = 8192  # a status or listing line; RFC 1939 allows 512, servers exceed it a little
MAX_MESSAGE = 512 * 1024 * 1024  # one message; beyond this the server is not sending mail
MAX_DIGITS = 18  # a message number or size; int() refuses more than 4300 digits (ValueError)


def shown(data: bytes | str, limit: int = 120) -> str:
    """A server's text made safe for a log line or an error: escaped and length-capped."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, slots=True)
class Reply:
    ok: bool
    text: str  # after +OK / -ERR, without the response code
    code: str | None  # RFC 2449 extended response code, e.g. "IN-USE", "SYS/TEMP"


_CODE = re.compile(r"^\[([A-Za-z0-9/-]+)\]\s*")


def parse_reply(line: bytes) -> Reply:
    """A status line, without its CRLF."""
    if line.startswith(b"+OK"):
        ok, rest = True, line[3:]
    elif line.startswith(b"-ERR"):
        ok, rest = False, line[4:]
    else:
        raise ProtocolError(f"the server sent {shown(line)!r} where +OK or -ERR belongs")
    text = rest.decode("utf-8", "replace").strip()
    match = _CODE.match(text)
    code = match.group(1).upper() if match else None
    return Reply(ok, text[match.end() :] if match else text, code)


def error_for(reply: Reply, during: str, server: str) -> FetchdError:
    """Map a -ERR to fetchmail's outcome, by response code first (RFC 2449, RFC 3206)."""
    what = f"{server}: {during} failed: {shown(reply.text)}"
    if reply.code == "IN-USE" or reply.code == "LOGIN-DELAY":
        return ServerBusyError(what + " (the mailbox is busy; trying again later)")
    if reply.code == "SYS/TEMP":
        error = ServerError(what + " (temporary server error)")
        error.transient = True
        return error
    if reply.code == "SYS/PERM":
        error = ServerError(what)
        error.transient = False
        return error
    if during.startswith(("PASS", "APOP", "AUTH")):
        return CredentialsRejectedError(what)
    if reply.code == "AUTH" or during.startswith("USER"):
        return AuthError(what)
    lowered = reply.text.lower()
    if "lock" in lowered or "in use" in lowered or "busy" in lowered:
        return ServerBusyError(what)
    return ProtocolError(what)


def encode_command(verb: str, *args: str) -> bytes:
    """One command line; an argument with CR, LF or NUL would smuggle a second command."""
    for arg in args:
        if any(c in arg for c in "\r\n\0"):
            raise ProtocolError(f"refusing to send {verb}: an argument contains CR, LF or NUL")
    return (" ".join((verb, *args))).encode("utf-8") + b"\r\n"


def apop_timestamp(greeting: Reply) -> str | None:
    match = re.search(r"<[^<>\s]+@[^<>\s]+>", greeting.text)
    return match.group(0) if match else None


def parse_capabilities(lines: list[bytes]) -> dict[str, tuple[str, ...]]:
    capabilities: dict[str, tuple[str, ...]] = {}
    for line in lines:
        words = line.decode("ascii", "replace").split()
        if words:
            capabilities[words[0].upper()] = tuple(words[1:])
    return capabilities


def parse_listing(lines: list[bytes], what: str) -> dict[int, str]:
    """LIST or UIDL lines: ``number value`` with a positive number, each number once."""
    result: dict[int, str] = {}
    for line in lines:
        parts = line.split()
        if (
            len(parts) < 2
            or not parts[0].isdigit()
            or len(parts[0]) > MAX_DIGITS
            or int(parts[0]) < 1
        ):
            raise ProtocolError(f"malformed {what} line from the server: {shown(line)!r}")
        number = int(parts[0])
        if number in result:
            raise ProtocolError(f"the server listed message {number} twice in {what}")
        value = parts[1].decode("ascii", "replace")
        if what == "LIST" and not (value.isdigit() and len(value) <= MAX_DIGITS):
            raise ProtocolError(f"malformed LIST size from the server: {shown(line)!r}")
        if what == "UIDL" and not (
            1 <= len(value) <= 70 and all(0x21 <= b <= 0x7E for b in parts[1])
        ):
            raise ProtocolError(f"malformed UIDL from the server: {shown(line)!r}")
        result[number] = value
    return result


class MultilineDecoder:
    """Collects one multi-line response body: dot-unstuffed lines, ended by a lone ".".

    ``feed`` takes any slice of the byte stream and returns how many bytes it consumed; the body
    is complete when ``done``. Lines come out with CRLF endings whatever the server used.
    """

    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._partial = b""
        self._limit = limit
        self.done = False

    def feed(self, data: bytes) -> int:
        consumed = 0
        while not self.done:
            newline = data.find(b"\n", consumed)
            if newline < 0:
                self._partial += data[consumed:]
                if len(self._partial) > self._limit:
                    raise ProtocolError("a line of the server's reply exceeds every limit")
                return len(data)
            line = self._partial + data[consumed:newline]
            self._partial = b""
            consumed = newline + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if line == b".":
                self.done = True
                break
            if line.startswith(b"."):
                line = line[1:]
            self._parts.append(line + b"\r\n")
            self._size += len(line) + 2
            if self._size > self._limit:
                raise ProtocolError(f"the server sent a reply larger than {self._limit} octets")
        return consumed

    def lines(self) -> list[bytes]:
        return [part[:-2] for part in self._parts]

    def body(self) -> bytes:
        return b"".join(self._parts)


class BodyDecoder:
    """A message (RETR's multi-line reply) decoded as it arrives, in chunks of any size.

    ``feed`` returns the dot-unstuffed octets of its data and how many of its bytes were part
    of the message: after the terminating ``.`` line (``done``), the rest is the next reply's.
    Only lines that start with a dot need a look, so a chunk without one passes at C speed. A
    dot at the end of a chunk (or a dot and a CR) waits for the next chunk, which decides
    whether it ends the message or was stuffed. Line endings are left as the server sent them.
    """

    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        self._limit = limit
        self._line_start = True  # the next octet starts a line
        self._held = b""  # "." or ".\r" at a line start, undecided
        self.size = 0
        self.done = False

    def feed(self, data: bytes) -> tuple[bytes, int]:
        if self.done:
            return b"", 0
        held = len(self._held)
        buf = self._held + data if held else data
        self._held = b""
        out: list[bytes] = []
        pos, end = 0, len(buf)
        while pos < end:
            if self._line_start and buf[pos] == 0x2E:  # "."
                after = buf[pos + 1 : pos + 3]
                if after[:1] == b"\n" or after == b"\r\n":
                    self.done = True
                    return self._out(out), pos + 1 + len(after[: after.find(b"\n") + 1]) - held
                if after in (b"", b"\r"):
                    self._held = buf[pos:]
                    return self._out(out), len(data)
                pos += 1  # a stuffed dot
            self._line_start = False
            found = buf.find(b"\n.", pos)
            if found < 0:
                out.append(buf[pos:])
                self._line_start = buf.endswith(b"\n")
                break
            out.append(buf[pos : found + 1])
            pos = found + 1
            self._line_start = True
        return self._out(out), len(data)

    def _out(self, out: list[bytes]) -> bytes:
        data = b"".join(out)
        self.size += len(data)
        if self.size > self._limit:
            raise ProtocolError(f"the server sent a message larger than {self._limit} octets")
        return data
