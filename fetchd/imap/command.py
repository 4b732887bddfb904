"""IMAP command arguments, encoded without I/O (RFC 3501 section 4 and 5.1.3).

A string argument goes out as an atom when it can, as a quoted string when it is printable
ASCII, and otherwise as a literal (``{n}`` then the octets once the server says ``+``). NUL can
be sent in none of them. Mailbox names are encoded in modified UTF-7 first.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

_ATOM = re.compile(rb"[!#$&'+,\-./0-9:;<=>?@A-Z^_`a-z|}~]+\Z")  # ATOM-CHAR minus ] * % \
_QUOTABLE = re.compile(rb"[\x20-\x7e]*\Z")


@dataclass(frozen=True, slots=True)
class Literal:
    """Octets sent as a synchronizing literal: ``{n}`` CRLF, wait for ``+``, then the octets."""

    data: bytes

    def __repr__(self) -> str:  # a literal may be a password: never show its content
        return f"Literal(<{len(self.data)} octets>)"


Argument = bytes | Literal


def encode_astring(value: str | bytes) -> Argument:
    """The shortest safe form of a string argument: atom, quoted string or literal."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if b"\x00" in data:
        raise ValueError("NUL cannot be sent in an IMAP string")
    if _ATOM.match(data):
        return data
    if _QUOTABLE.match(data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return Literal(data)


def encode_mailbox(name: str) -> Argument:
    """A mailbox name as an argument: INBOX case-insensitively, others in modified UTF-7."""
    if name.upper() == "INBOX":
        return b"INBOX"
    return encode_astring(encode_modified_utf7(name))


def encode_modified_utf7(name: str) -> bytes:
    """RFC 3501 5.1.3: printable ASCII as is ("&" as "&-"), anything else as &base64(UTF-16)-."""
    out = bytearray()
    pending: list[str] = []

    def flush() -> None:
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be"))
            out.extend(b"&" + encoded.rstrip(b"=").replace(b"/", b",") + b"-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.extend(b"&-" if char == "&" else char.encode("ascii"))
        else:
            pending.append(char)
    flush()
    return bytes(out)
