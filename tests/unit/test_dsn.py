"""RFC 3464 notifications, read back with the standard library's MIME parser."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

from fetchd.delivery.dsn import Refusal, build_dsn

ORIGINAL = (
    b"Return-Path: <alice@example.org>\r\nFrom: Alice <alice@example.org>\r\n"
    b"Subject: the report\r\nMessage-ID: <1@example.org>\r\n\r\nsecret body\r\n"
)


def _dsn(refusals: list[Refusal], original: bytes = ORIGINAL) -> email.message.Message:
    data = build_dsn(
        original=original,
        to="alice@example.org",
        refusals=refusals,
        reporting_host="fetchd.test",
        remote_mta="127.0.0.1",
        explanation="The local mail server refused this message for good.",
        now=datetime(2026, 12, 1, 12, 0, tzinfo=UTC),
        boundary="BOUNDARY",
    )
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF only
    return email.message_from_bytes(data, policy=email.policy.compat32)


def test_structure_and_fields() -> None:
    report = _dsn([Refusal("joe@localhost", 550, "5.1.1 <joe@localhost>: unknown user")])
    assert report["To"] == "alice@example.org"
    assert report["From"] == "FETCHMAIL-DAEMON@fetchd.test"
    assert report["Auto-Submitted"] == "auto-replied"
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    text, status, headers = report.get_payload()
    assert text.get_content_type() == "text/plain"
    assert "joe@localhost: 550 5.1.1" in text.get_payload()
    assert status.get_content_type() == "message/delivery-status"
    per_message, per_recipient = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; fetchd.test"
    assert per_message["Arrival-Date"] == "Tue, 01 Dec 2026 12:00:00 +0000"
    assert per_recipient["Final-Recipient"] == "rfc822; joe@localhost"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"  # the enhanced code from the reply
    assert per_recipient["Remote-MTA"] == "dns; 127.0.0.1"
    assert per_recipient["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    assert headers.get_content_type() == "text/rfc822-headers"
    quoted = headers.get_payload()
    assert "Subject: the report" in quoted and "secret body" not in quoted  # header only


def test_one_block_per_recipient_and_a_status_without_an_enhanced_code() -> None:
    report = _dsn([Refusal("a@localhost", 554, "no"), Refusal("b@localhost", 552, "too big")])
    _, status, _ = report.get_payload()
    blocks = status.get_payload()[1:]
    assert [b["Final-Recipient"] for b in blocks] == ["rfc822; a@localhost", "rfc822; b@localhost"]
    assert [b["Status"] for b in blocks] == ["5.0.0", "5.0.0"]


def test_a_reply_or_header_cannot_inject_lines() -> None:
    hostile = Refusal("joe@localhost\r\nBcc: victim@example.org", 550, "bad\r\nX-Injected: 1")
    report = _dsn([hostile])
    assert report["Bcc"] is None
    _, status, _ = report.get_payload()
    assert all(block["X-Injected"] is None for block in status.get_payload())


def test_a_message_without_a_body_separator_still_gives_its_header() -> None:
    report = _dsn([Refusal("joe@localhost", 550, "no")], original=b"Subject: only\r\n")
    assert "Subject: only" in report.get_payload()[2].get_payload()
