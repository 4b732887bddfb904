"""Parsing fetchmail's .fetchids file the way fetchmail 6.4 reads it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fetchd.errors import StateError
from fetchd.state.fetchids import parse_fetchids, parse_fetchids_line

# Written by the real fetchmail 6.4.37 against Dovecot (POP3, keep + uidl): an account polled by
# name, one whose user name is an address, and one polled "via 127.0.0.1". IMAP polls of the same
# run wrote nothing: fetchmail keeps this file for POP3 only.
FETCHMAIL_6_4_SAMPLE = (
    b"bob@LocalHost 000000016b060bb2\n"
    b"bob@LocalHost 000000026b060bb2\n"
    b"bob@LocalHost 000000036b060bb2\n"
    b"bob@127.0.0.1 000000016b060bb2\n"
    b"bob@127.0.0.1 000000026b060bb2\n"
    b"bob@127.0.0.1 000000036b060bb2\n"
    b"joe@example.com@localhost 000000016b060bb2\n"
    b"joe@example.com@localhost 000000026b060bb2\n"
    b"joe@example.com@localhost 000000036b060bb2\n"
)


def test_real_fetchmail_file_parses_into_user_host_uid() -> None:
    """Every line of a file fetchmail wrote becomes one entry with its user, host and UID."""
    entries = parse_fetchids(FETCHMAIL_6_4_SAMPLE, ".fetchids")
    assert [(e.user, e.host, e.uid, e.line) for e in entries[:1]] == [
        (b"bob", b"LocalHost", "000000016b060bb2", 1)
    ]
    assert len(entries) == 9
    assert {(e.user, e.host) for e in entries} == {
        (b"bob", b"LocalHost"),
        (b"bob", b"127.0.0.1"),
        (b"joe@example.com", b"localhost"),
    }


def test_user_name_that_is_an_address_splits_at_the_last_at_sign() -> None:
    """'joe@example.com@localhost UID' is user joe@example.com on host localhost."""
    entry = parse_fetchids_line(b"joe@example.com@localhost 17", 1)
    assert entry is not None
    assert (entry.user, entry.host, entry.uid) == (b"joe@example.com", b"localhost", "17")


def test_account_match_is_case_blind_like_fetchmail() -> None:
    """Host and user compare case-blind, as fetchmail's strcasecmp does."""
    entry = parse_fetchids_line(b"Bob@LocalHost 1", 1)
    assert entry is not None
    assert entry.belongs_to("localhost", "bob")
    assert entry.belongs_to("LOCALHOST", "BOB")
    assert not entry.belongs_to("localhost", "bobby")
    assert not entry.belongs_to("127.0.0.1", "bob")


def test_uid_may_contain_at_signs() -> None:
    """A UIDL with '@' (InterMail's Message-IDs) stays whole; the account is left of the space."""
    entry = parse_fetchids_line(b"bob@pop.example.org <1234.5678@mx.example.org>", 3)
    assert entry is not None
    assert (entry.user, entry.host) == (b"bob", b"pop.example.org")
    assert entry.uid == "<1234.5678@mx.example.org>"


def test_user_name_with_blanks_before_its_at_sign() -> None:
    """Lotus Notes user names contain spaces; fetchmail splits at the first space after an '@'."""
    entry = parse_fetchids_line(b"John Smith@notes.example.org ABC123", 1)
    assert entry is not None
    assert (entry.user, entry.host, entry.uid) == (b"John Smith", b"notes.example.org", "ABC123")


def test_blanks_around_fields_and_crlf_are_ignored() -> None:
    """Leading blanks, several spaces before the UID, trailing text and CR do not enter the UID."""
    entries = parse_fetchids(b"  bob@host    uid-1\r\n\tbob@host uid-2 trailing\n", "f")
    assert [(e.user, e.host, e.uid) for e in entries] == [
        (b"bob", b"host", "uid-1"),
        (b"bob", b"host", "uid-2"),
    ]


def test_blank_lines_carry_nothing() -> None:
    """Empty and whitespace-only lines are skipped; line numbers still count them."""
    entries = parse_fetchids(b"\nbob@host 1\n   \n\nbob@host 2\n", "f")
    assert [(e.uid, e.line) for e in entries] == [("1", 2), ("2", 5)]


def test_non_ascii_uid_octets_survive() -> None:
    """Octets outside ASCII map one to one (Latin-1), so no UID is merged with another."""
    entry = parse_fetchids_line(b"bob@host uid\xe9\xff", 1)
    assert entry is not None
    assert entry.uid == "uid\u00e9\u00ff"


@pytest.mark.parametrize(
    "line",
    [
        b"no at sign here 123",  # fetchmail skips it; we refuse it
        b"bob@host",  # no UID
        b"bob@host   ",  # blanks, no UID
        b"bob@host\t123",  # a tab is not fetchmail's separator
        b"@host 123",  # no user
        b"bob@ 123",  # no host
        b"garbage\x00\x01",
    ],
)
def test_malformed_line_is_an_error_naming_file_and_line(line: bytes) -> None:
    """A line fetchmail could not have written raises StateError with 'file:line'."""
    data = b"bob@host 1\n" + line + b"\nbob@host 2\n"
    with pytest.raises(StateError, match=r"^/home/u/\.fetchids:2: "):
        parse_fetchids(data, "/home/u/.fetchids")


_BLANK_FREE = st.characters(blacklist_categories=("Cc", "Zs", "Zl", "Zp", "Cs"))


@given(
    user=st.text(_BLANK_FREE, min_size=1, max_size=20),
    host=st.text(_BLANK_FREE, min_size=1, max_size=20).filter(lambda h: "@" not in h),
    uid=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=70),
)
def test_any_line_fetchmail_writes_parses_back(user: str, host: str, uid: str) -> None:
    """'%s@%s %s\\n' as fetchmail writes it parses back to the same user, host and UID."""
    line = f"{user}@{host} {uid}\n".encode()
    (entry,) = parse_fetchids(line, "f")
    assert (entry.user, entry.host, entry.uid) == (user.encode(), host.encode(), uid)
    assert entry.belongs_to(host, user)
