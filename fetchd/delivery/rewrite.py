"""fetchmail's edits of a message's header before delivery (transact.c readheaders). Pure.

- ``From `` and ``>From `` lines in the header (mbox separators) are dropped;
- empty ``Status:`` / ``X-Mozilla-Status:`` lines are dropped, others with ``dropstatus``;
- ``Delivered-To:`` lines are dropped with ``dropdelivered``;
- ``rewrite`` (on by default): an address without a host part in From, To, Cc, Reply-To,
  Return-Path and the like gets ``@`` and the mail server's name, so that replies work
  (rfc822.c reply_hack, whose quirks are kept: this must read mail as fetchmail does);
- a multidrop warning is added as ``X-Fetchmail-Warning:``.

For SMTP (and BSMTP) delivery the first Return-Path is taken off: it became the envelope
sender, and the receiving MTA writes its own (``drop_return_path``).
"""

from __future__ import annotations

import re

_ADDRESS_HEADERS = (
    "from:",
    "to:",
    "reply-to:",
    "return-path:",
    "cc:",
    "bcc:",
    "resent-from:",
    "resent-to:",
    "resent-cc:",
    "resent-bcc:",
    "apparently-from:",
    "apparently-to:",
    "sender:",
    "resent-sender:",
)
_C_SPACE = frozenset(" \t\n\v\f\r")  # C's isspace(), not Unicode's
_STATUS = re.compile(r"(?:X-Mozilla-)?Status:", re.I)


# The common shapes that the state machine would leave alone: one address with its host,
# bare or in angle brackets after a plain name (no quotes, comments, commas or groups).
# Possessive quantifiers (each class excludes what follows it, so nothing is lost): without
# them a long run of blanks is tried at every split between ``[ \t]*`` and the name, in
# quadratic time (found by contrib/fuzz).
_NOTHING_TO_ADD = re.compile(
    r"[A-Za-z-]++:[ \t]*+"
    r"(?:[^\s\",;:()<>@!]++@[^\s\",;:()<>]++"  # local@host
    r"|[^\",;:()<>@!]*+<[^\s\",;:()<>@!]++@[^\s\",;:()<>]++>)"  # Name <local@host>
    r"[ \t]*+\r\n"
)


def reply_hack(field: str, host: str) -> str:
    """One header field (its continuation lines included, ending in CRLF) with ``@host`` after
    every address that has no host part. A port of fetchmail's state machine."""
    if not field[:17].lower().startswith(_ADDRESS_HEADERS) or _NOTHING_TO_ADD.fullmatch(field):
        return field
    buf = list(field)
    suffix = list("@" + host)
    parendepth = state = 0
    has_host = has_bare = False
    last_nws = ""
    parens_from: int | None = None
    i = 0
    while i < len(buf):
        char = buf[i]
        if state != 2:
            if char == "(":
                parendepth += 1
            elif char == ")":
                parendepth -= 1
        if not parendepth and not has_host:
            if state == 0:
                if char == ":":
                    state = 1
            elif state == 1:
                if char not in _C_SPACE:
                    last_nws = char
                header_end = char == "\n" and (i + 1 >= len(buf) or buf[i + 1] not in " \t")
                if char == "<":
                    state = 3
                elif char in "@!":
                    has_host = True
                elif char == '"':
                    state = 2
                elif (char == "," or header_end) and has_bare and last_nws != ";":
                    at = parens_from if parens_from is not None else i
                    while at >= 0 and (buf[at] in _C_SPACE or buf[at] == ","):
                        at -= 1
                    buf[at + 1 : at + 1] = suffix
                    i += len(suffix)
                    has_host = True
                elif (
                    i + 1 < len(buf)
                    and buf[i + 1] == "("
                    and has_bare
                    and last_nws not in (";", ")")
                ):
                    parens_from = i
                elif char not in _C_SPACE:
                    has_bare = True
            elif state == 2:
                if char == '"':
                    backslashes = 0
                    while i - 1 - backslashes >= 0 and buf[i - 1 - backslashes] == "\\":
                        backslashes += 1
                    if backslashes % 2 == 0:
                        state = 1
            elif state == 3:
                if char in "@!":
                    has_host = True
                elif char == ">" and i > 0 and buf[i - 1] != "<":
                    state = 1
                    if not has_host:
                        buf[i:i] = suffix  # before the '>'
                        i += len(suffix)
                        has_host = True
        if i > 0 and buf[i - 1] == "," and not parendepth:
            has_host = has_bare = False
            parens_from = None
        i += 1
    return "".join(buf)


def _fields(head: str) -> list[str]:
    """The header block as whole fields, each with its continuation lines and CRLF."""
    fields: list[str] = []
    for line in head.split("\r\n")[:-1]:
        if line[:1] in (" ", "\t") and fields:
            fields[-1] += line + "\r\n"
        else:
            fields.append(line + "\r\n")
    return fields


def edit_headers(
    message: bytes,
    *,
    rewrite_host: str | None,
    dropstatus: bool,
    dropdelivered: bool,
    warning: str | None = None,
) -> bytes:
    """The message with fetchmail's header edits (CRLF line endings expected)."""
    end = message.find(b"\r\n\r\n")
    head_bytes, body = (message, b"") if end < 0 else (message[: end + 2], message[end + 2 :])
    head = head_bytes.decode("latin-1")  # byte for byte: 8-bit header bytes pass unchanged
    kept: list[str] = []
    for field in _fields(head):
        lowered = field[:18].lower()
        if lowered.startswith(("from ", ">from ")):
            continue
        status = _STATUS.match(field)
        if status and (dropstatus or not field[status.end() :].strip()):
            continue
        if dropdelivered and lowered.startswith("delivered-to:"):
            continue
        kept.append(reply_hack(field, rewrite_host) if rewrite_host else field)
    if warning is not None:
        kept.append("X-Fetchmail-Warning: " + re.sub(r"[\r\n]", " ", warning) + "\r\n")
    edited = "".join(kept).encode("latin-1", "replace")
    if edited == head_bytes:
        return message  # nothing changed: no copy of a possibly large message
    return edited + body


def drop_return_path(message: bytes) -> bytes:
    """The message without its first Return-Path field (continuation lines included)."""
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[: end + 2]
    match = re.search(rb"(?:^|\r\n)(Return-Path:[^\r]*\r\n(?:[ \t][^\r]*\r\n)*)", head, re.I)
    if match is None:
        return message
    return message[: match.start(1)] + message[match.end(1) :]
