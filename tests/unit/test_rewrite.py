"""fetchmail's header edits: reply_hack's address rewriting, Status and Delivered-To lines,
mbox From_ lines, and Return-Path for SMTP delivery."""

from __future__ import annotations

import pytest

from fetchd.delivery.rewrite import drop_return_path, edit_headers, reply_hack

HOST = "pop.example.org"


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("To: joe\r\n", "To: joe@pop.example.org\r\n"),
        ("To: joe, ann@x.org\r\n", "To: joe@pop.example.org, ann@x.org\r\n"),
        ("To: ann@x.org, joe\r\n", "To: ann@x.org, joe@pop.example.org\r\n"),
        ("From: Alice <alice>\r\n", "From: Alice <alice@pop.example.org>\r\n"),
        ("Cc: carol (Carol C)\r\n", "Cc: carol@pop.example.org (Carol C)\r\n"),
        ("To: joe,\r\n ann\r\n", "To: joe@pop.example.org,\r\n ann@pop.example.org\r\n"),
        ('To: "Bob, Jr" <bob@x.org>\r\n', 'To: "Bob, Jr" <bob@x.org>\r\n'),
        ("Return-Path: <>\r\n", "Return-Path: <>\r\n"),  # the null sender stays null
        ("Return-Path: <alice>\r\n", "Return-Path: <alice@pop.example.org>\r\n"),
        ("To: undisclosed-recipients:;\r\n", "To: undisclosed-recipients:;\r\n"),
        ("To: host!user\r\n", "To: host!user\r\n"),  # a UUCP path has its host
        ("Subject: joe\r\n", "Subject: joe\r\n"),  # not an address header
        ("Message-ID: <x>\r\n", "Message-ID: <x>\r\n"),
    ],
)
def test_reply_hack(field: str, expected: str) -> None:
    assert reply_hack(field, HOST) == expected


def message(*fields: str) -> bytes:
    return ("".join(f + "\r\n" for f in fields) + "\r\nbody\r\n").encode()


def test_edits_and_a_message_with_nothing_to_edit_is_not_copied() -> None:
    original = message(
        "From alice Tue Dec  1 10:00:00 2026",  # an mbox separator left in the header
        "Status: RO",
        "X-Mozilla-Status: ",
        "Delivered-To: catchall@pop.example.org",
        "To: joe",
        "Subject: hi\r\n\tcontinued",
    )
    kept = edit_headers(original, rewrite_host=None, dropstatus=False, dropdelivered=False)
    assert kept == message(
        "Status: RO",
        "Delivered-To: catchall@pop.example.org",
        "To: joe",
        "Subject: hi\r\n\tcontinued",
    )
    edited = edit_headers(
        original, rewrite_host=HOST, dropstatus=True, dropdelivered=True, warning="w\r\nX: 1"
    )
    assert edited == message(
        "To: joe@pop.example.org", "Subject: hi\r\n\tcontinued", "X-Fetchmail-Warning: w  X: 1"
    )
    plain = message("To: joe@pop.example.org", "Subject: caf\u00e9")
    assert edit_headers(plain, rewrite_host=HOST, dropstatus=True, dropdelivered=True) is plain


def test_return_path_is_taken_off_once() -> None:
    original = message("Return-Path: <a@x.org>", "Subject: s", "Return-Path: <b@x.org>")
    assert drop_return_path(original) == message("Subject: s", "Return-Path: <b@x.org>")
    body_only = b"Subject: s\r\n\r\nReturn-Path: <in the body>\r\n"
    assert drop_return_path(body_only) is body_only
