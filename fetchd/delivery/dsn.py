"""Delivery status notifications (RFC 3464), built without I/O.

When the local MTA refuses a message for good and fetchmail's rules say to bounce it, the
sender (or the postmaster) gets a ``multipart/report; report-type=delivery-status`` message:
a sentence for people, a ``message/delivery-status`` part for programs (one block per refused
recipient), and the refused message's header (``text/rfc822-headers``), never its body. It goes
out with the null envelope sender (``MAIL FROM:<>``), so that a bounce is never bounced.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from fetchd import __version__
from fetchd.delivery.headers import header_block

MAX_HEADER_OCTETS = 64 * 1024  # of the original header block, quoted in the report
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Refusal:
    """One recipient the MTA refused, with its reply."""

    recipient: str
    code: int
    text: str

    @property
    def status(self) -> str:
        """The RFC 3463 status: the enhanced code from the reply when it has one."""
        match = re.match(r"([245])\.(\d{1,3})\.(\d{1,3})\b", self.text)
        if match is not None:
            return match.group(0)
        return f"{str(self.code)[:1]}.0.0" if 400 <= self.code < 600 else "5.0.0"


def _clean(value: str, limit: int = 300) -> str:
    """One header- or field-safe line: no control characters from a reply or a header."""
    return _UNSAFE.sub(" ", value)[:limit]


def build_dsn(
    *,
    original: bytes,
    to: str,
    refusals: list[Refusal],
    reporting_host: str,
    remote_mta: str,
    explanation: str,
    now: datetime | None = None,
    boundary: str | None = None,
) -> bytes:
    """The whole notification, CRLF line endings, ready for DATA."""
    now = now or datetime.now(UTC).astimezone()
    boundary = boundary or f"fetchd-dsn-{secrets.token_hex(12)}"
    date = format_datetime(now)
    reporting_host = _clean(reporting_host, 200)
    lines = [
        f"From: FETCHMAIL-DAEMON@{reporting_host}",
        f"To: {_clean(to)}",
        f"Date: {date}",
        "Subject: Undeliverable mail (delivery status notification)",
        "MIME-Version: 1.0",
        "Auto-Submitted: auto-replied",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        f"This message was created automatically by fetchd {__version__} on {reporting_host}.",
        "",
        _clean(explanation, 500),
        "",
        "The message could not be delivered to:",
        *(f"  {_clean(r.recipient)}: {r.code} {_clean(r.text)}" for r in refusals),
        "",
        "Its header follows this report.",
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {reporting_host}",
        f"Arrival-Date: {date}",
    ]
    for refusal in refusals:
        lines += [
            "",
            f"Final-Recipient: rfc822; {_clean(refusal.recipient)}",
            "Action: failed",
            f"Status: {refusal.status}",
            f"Remote-MTA: dns; {_clean(remote_mta, 200)}",
            f"Diagnostic-Code: smtp; {refusal.code} {_clean(refusal.text)}",
        ]
    head = header_block(original)[:MAX_HEADER_OCTETS]
    if not head.endswith(b"\r\n"):
        head = head[: head.rfind(b"\r\n") + 2] if b"\r\n" in head else b""
    text = "\r\n".join(
        [*lines, "", f"--{boundary}", "Content-Type: text/rfc822-headers", "", ""]
    ).encode("ascii", "replace")
    return text + head + f"\r\n--{boundary}--\r\n".encode()
