"""End to end through real servers: Dovecot -> fetchd -> a real Postfix -> a Maildir.

Every message arrives once and intact (Postfix adds its own trace headers above fetchd's), and
a body built to smuggle a second message (SMTP smuggling: bare LF and CR around dots, "MAIL
FROM:" lines) reaches Postfix as exactly one message, its text unchanged (the bare CR and LF
become ordinary line breaks) and nothing delivered to the smuggled recipient.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.support.command import run_fetchd
from tests.support.dovecot import Dovecot
from tests.support.postfix import DOMAIN, Postfix

pytestmark = pytest.mark.dovecot

SMUGGLER = (
    b"From: mallory@example.org\r\nSubject: smuggling\r\nMessage-ID: <smuggle@example.org>\r\n\r\n"
    b"hello\n.\nMAIL FROM:<mallory@example.org>\nRCPT TO:<ann@virtual.test>\nDATA\n"
    b"Subject: smuggled\n\nsecond\n.\n"
    b"and a CR dot: \r.\r\nMAIL FROM:<x@example.org>\r\n.dot line\r\n"
)


def messages() -> list[bytes]:
    plain = [
        (
            f"From: sender{i}@example.org\r\nSubject: message {i}\r\n"
            f"Message-ID: <{i}@example.org>\r\n\r\nbody {i}\r\n.leading dot\r\n"
        ).encode()
        + "caf\u00e9 8-bit line\r\n".encode()
        + (b"x" * 70 + b"\r\n") * (i * 50)
        for i in range(12)
    ]
    return [*plain, SMUGGLER]


def as_stored(message: bytes) -> bytes:
    """A message as the Maildir file holds it: every line ending (CRLF, and the bare CR and LF
    that fetchd turns into line breaks rather than pass on) an LF."""
    return re.sub(rb"\r\n|\r|\n", b"\n", message)


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
async def test_dovecot_to_fetchd_to_postfix_maildir(
    dovecot: Dovecot, postfix: Postfix, tmp_path: Path, protocol: str
) -> None:
    sent = messages()
    for item in sent:
        dovecot.deliver(item)
    port = dovecot.pop3_port if protocol == "pop3" else dovecot.imap_port
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll {dovecot.host} proto {protocol} port {port}\n"
        f'  user {dovecot.user} password "{dovecot.password}" is joe here\n'
        f'  sslcertfile "{dovecot.ca_file}" smtphost {postfix.host}/{postfix.port}'
        f" smtpaddress {DOMAIN}\n"
    )
    rc.chmod(0o600)
    code, out = await run_fetchd(tmp_path, rc)
    assert code == 0, out
    delivered = await asyncio.to_thread(postfix.wait_for, "joe", len(sent))
    assert len(delivered) == len(sent), postfix.log()
    for item in sent:
        matches = [d for d in delivered if d.endswith(as_stored(item))]
        assert len(matches) == 1, item[:60]  # once, and intact to the last byte
        header = matches[0][: -len(as_stored(item))]
        assert b"Delivered-To: joe@virtual.test" in header  # Postfix's own
        assert b"(fetchd-" in header and b"for <joe@virtual.test>" in header  # ours
    assert postfix.delivered("ann") == []  # nothing smuggled past the one message
    assert dovecot.messages() == []
