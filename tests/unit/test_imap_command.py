"""Tests of the pure IMAP argument encoding (fetchd.imap.command)."""

from __future__ import annotations

import pytest

from fetchd.imap.command import Literal, encode_astring, encode_mailbox, encode_modified_utf7


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("alice", b"alice"),
        ("alice@example.org", b"alice@example.org"),
        ("two words", b'"two words"'),
        ('q"uo\\te', b'"q\\"uo\\\\te"'),
        ("", b'""'),
        ("pässwörd", Literal("pässwörd".encode())),
        ("line\r\nbreak", Literal(b"line\r\nbreak")),
        ("a%b", b'"a%b"'),
    ],
)
def test_astring_takes_the_shortest_safe_form(value: str, expected: object) -> None:
    """Atoms stay bare, printable text is quoted with escapes, anything else is a literal."""
    assert encode_astring(value) == expected


def test_nul_cannot_be_sent() -> None:
    """NUL fits in no IMAP string form and is refused."""
    with pytest.raises(ValueError):
        encode_astring("a\0b")


def test_literal_repr_hides_the_content() -> None:
    """A literal's repr never shows its octets (it may be a password)."""
    assert "secret" not in repr(Literal(b"secret"))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("INBOX", b"INBOX"),
        ("inbox", b"INBOX"),
        ("Sent Items", b'"Sent Items"'),
        ("Entwürfe", b"Entw&APw-rfe"),
        ("R&D", b"R&-D"),
        ("日本語", b"&ZeVnLIqe-"),
    ],
)
def test_mailbox_names_in_modified_utf7(name: str, expected: bytes) -> None:
    """Mailbox names are sent in RFC 3501 modified UTF-7, INBOX case-insensitively."""
    assert encode_mailbox(name) == expected


def test_modified_utf7_rfc3501_example() -> None:
    """The example of RFC 3501 section 5.1.3 encodes as the RFC shows."""
    assert encode_modified_utf7("~peter/mail/台北/日本語") == b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"
