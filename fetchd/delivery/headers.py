"""What fetchd reads from and adds to a message before the MTA sees it: pure.

- every line ending becomes CRLF (a bare CR or LF never reaches the MTA: SMTP smuggling);
- the envelope sender, chosen from the headers as fetchmail chooses it;
- the ``Received:`` header fetchmail prepends, naming the server, protocol and recipient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, getaddresses

from fetchd import __version__

_LINE_ENDS = re.compile(rb"\r\n|\r|\n")


def crlf_line_endings(data: bytes) -> bytes:
    """Every CR, LF and CRLF as CRLF; ``data`` itself (no copy) when it has only CRLF."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") == crlf and data.count(b"\r") == crlf:  # the usual case: C speed
        return data
    return _LINE_ENDS.sub(b"\r\n", data)


def normalize_line_endings(message: bytes) -> bytes:
    """CRLF everywhere, and a final CRLF."""
    normalized = crlf_line_endings(message)
    if normalized and not normalized.endswith(b"\r\n"):
        normalized += b"\r\n"
    return normalized


def header_block(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def bad_header_line(message: bytes) -> int | None:
    """The number (from 1) of the first header line that is neither a field (no colon) nor a
    continuation, as fetchmail's ``bad-header`` check finds it; None when there is none."""
    for number, line in enumerate(header_block(message).split(b"\r\n")[:-1], start=1):
        if line and not line[:1].isspace() and b":" not in line:
            return number
    return None


def headers(message: bytes) -> list[tuple[str, str]]:
    """The header fields, unfolded, names lower-cased, values decoded leniently."""
    fields: list[tuple[str, str]] = []
    for raw in header_block(message).split(b"\r\n"):
        if not raw:
            continue
        if raw[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + " " + raw.strip().decode("utf-8", "replace"))
            continue
        key, colon, rest = raw.partition(b":")
        if colon and key and b" " not in key:
            fields.append(
                (key.decode("ascii", "replace").lower(), rest.strip().decode("utf-8", "replace"))
            )
    return fields


# fetchmail's order when there is no Return-Path: the most specific sender first.
_SENDER_HEADERS = ("resent-sender", "sender", "resent-from", "from", "apparently-from")


def parse_addresses(value: str) -> list[tuple[str, str]]:
    """``email.utils.getaddresses`` of one header value. It recurses once per group (``a: b:
    c: ...``), so a hostile header nests past Python's recursion limit: that gives no address
    rather than a RecursionError, the same message failing every poll."""
    try:
        return getaddresses([value])
    except RecursionError:
        return []


def usable_address(address: str) -> bool:
    """Nothing in it that could end an SMTP command early or start another one."""
    return address.isprintable() and not any(c in address for c in "<> ")


def qualify(names: tuple[str, ...], domain: str) -> list[str]:
    """Local names as addresses: ``name@domain`` unless a name has its own domain."""
    return [name if "@" in name else f"{name}@{domain}" for name in names]


def _valid(address: str) -> bool:
    return (
        len(address) <= 256
        and not any(c in address for c in "\r\n\0<> \t")
        and not address.startswith("-")
    )


def envelope_sender(message: bytes) -> str | None:
    """MAIL FROM for this message: Return-Path, else the sender headers; "" for the null
    sender or a bad address, None when nothing names a sender (the caller's fallback)."""
    fields = headers(message)
    for name, value in fields:
        if name == "return-path":
            address = value.strip().strip("<>").strip()
            return address if not address or _valid(address) else ""
    for wanted in _SENDER_HEADERS:
        for name, value in fields:
            if name == wanted:
                address = _first_address(value)
                if address and _valid(address):
                    return address
    return None


def local_sender(message: bytes) -> str | None:
    """The sender fetchmail gives an MDA as %F: the Return-Path as the message has it, without
    angle brackets and unchecked ("" for the null sender; the MDA judges it; %F is a quoted
    shell word, so nothing in it reaches the shell), else the sender headers' address as for
    MAIL FROM; None when nothing names a sender."""
    for name, value in headers(message):
        if name == "return-path":
            return value.strip().strip("<>").strip()
    return envelope_sender(message)


_ANGLE = re.compile(r"<([^<>\s]*)>")
_BARE = re.compile(r"[^\s<>()\",;:]+@[^\s<>()\",;:]+")


def _first_address(value: str) -> str:
    """The first address of a From-like header: in angle brackets, else a bare addr-spec.

    The common forms only (``Name <a@b>``, ``a@b (Name)``, ``a@b``); a header this does not
    understand gives no address, and the message then goes out with the null sender.
    """
    if (match := _ANGLE.search(value)) is not None:
        return match.group(1)
    if (match := _BARE.search(value)) is not None:
        return match.group(0)
    if (parsed := parse_addresses(value)) and parsed[0][1]:
        return parsed[0][1]
    return ""


@dataclass(frozen=True, slots=True)
class Trace:
    """Where a message came from, for the ``Received:`` line fetchmail prepends (none at all
    with ``invisible``)."""

    server: str = ""
    server_ip: str | None = None
    protocol: str = "POP3"
    invisible: bool = False
    polling: str = ""  # tracepolls: "polling LABEL account USER[ folder NAME]"

    def received(
        self, *, by: str, recipient: str | None, multidrop: bool, now: datetime | None = None
    ) -> bytes:
        """fetchmail's trace header (6.4 layout), naming fetchd; empty when invisible. The
        ``for`` clause names the one recipient; with several (``recipient`` None), there is
        none, as in fetchmail."""
        if self.invisible:
            return b""
        when = format_datetime(now or datetime.now(UTC).astimezone())
        origin = f"{self.server} [{self.server_ip}]" if self.server_ip else self.server
        mode = "multi-drop" if multidrop else "single-drop"
        polling = f" {self.polling}" if self.polling else ""
        # Names from the rc file (a folder, a label) can hold any character through its escapes:
        # none may end the line and start a header of its own.
        clause = f"for <{_one_line(recipient)}> ({mode}); " if recipient is not None else ""
        return (
            f"Received: from {_one_line(origin)}\r\n"
            f"\tby {_one_line(by)} with {self.protocol} (fetchd-{__version__}"
            f"{_one_line(polling)})\r\n"
            f"\t{clause}{when}\r\n"
        ).encode("utf-8", "replace")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(text: str) -> str:
    return _CONTROL.sub("_", text)


def tracepolls_note(pollname: str, account: str, folder: str | None) -> str:
    """fetchmail's ``tracepolls`` words: the poll label, the remote account, and the folder
    when the rc file names one."""
    note = f"polling {pollname} account {account}"
    return f"{note} folder {folder}" if folder else note


def dot_stuff(message: bytes) -> bytes:
    """SMTP transparency (RFC 5321 4.5.2) for a CRLF-normalized message (no final dot)."""
    stuffed = message.replace(b"\r\n.", b"\r\n..") if b"\r\n." in message else message
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


class DotStuffer:
    """``dot_stuff`` for a CRLF-normalized stream fed in chunks (none ending in a bare CR, as
    fetchd.message.LineEndings makes them): a line start is remembered across chunks."""

    def __init__(self) -> None:
        self._line_start = True

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        stuffed = chunk.replace(b"\r\n.", b"\r\n..") if b"\r\n." in chunk else chunk
        if self._line_start and stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        self._line_start = chunk.endswith(b"\r\n")
        return stuffed


def needs_8bit(message: bytes) -> bool:
    return not message.isascii()
