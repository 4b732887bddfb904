"""~/.netrc as fetchmail 6.4 reads it (its netrc.c rules), and its place in the password order."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from fetchd.auth.netrc import NetrcSyntaxError, find_password, parse_netrc, read_netrc
from fetchd.auth.prompt import Passwords
from fetchd.config.model import Server, User
from fetchd.errors import RCPermissionError

NETRC = """\
machine mail.example.org login joe password first
machine mail.example.org login ann passwd "two words"
machine other.example.org password anyuser
macdef init
machine mail.example.org login joe password frommacro

default login anonymous password guest
"""


def test_first_matching_machine_and_login_wins() -> None:
    entries = parse_netrc(NETRC, "n")
    assert find_password(entries, "mail.example.org", "joe") == "first"
    assert find_password(entries, "mail.example.org", "ann") == "two words"


def test_entry_without_login_matches_any_user_and_default_never_matches() -> None:
    entries = parse_netrc(NETRC, "n")
    assert find_password(entries, "other.example.org", "whoever") == "anyuser"
    assert find_password(entries, "unknown.example.org", "anonymous") is None
    assert find_password(entries, "mail.example.org", "zoe") is None


def test_macdef_body_is_skipped() -> None:
    entries = parse_netrc(NETRC, "n")
    assert "frommacro" not in {e.password for e in entries}


def test_broken_netrc_names_file_and_line_not_the_password() -> None:
    with pytest.raises(NetrcSyntaxError) as err:
        parse_netrc("machine a login joe\npassword", "/home/joe/.netrc")
    assert str(err.value).startswith("/home/joe/.netrc:2:")
    with pytest.raises(NetrcSyntaxError, match=r"^f:1: `login` before"):
        parse_netrc("login joe password secret", "f")
    with pytest.raises(NetrcSyntaxError, match=r"^f:2: a quote") as quoted:
        parse_netrc('machine a\npassword "hunter2', "f")
    assert "hunter2" not in str(quoted.value)


def test_world_readable_netrc_is_refused(tmp_path: Path) -> None:
    path = tmp_path / ".netrc"
    path.write_text("machine a password secret\n")
    path.chmod(0o644)
    with pytest.raises(RCPermissionError, match=r"\.netrc: .*0600"):
        read_netrc(str(path))
    path.chmod(0o600)
    assert find_password(read_netrc(str(path)), "a", "joe") == "secret"
    assert read_netrc(str(tmp_path / "absent")) == ()


def _login(passwords: Passwords, server: Server, user: User) -> str:
    return asyncio.run(passwords.for_login("rc", server, user))


def test_order_rc_password_then_netrc_poll_name_then_via(tmp_path: Path) -> None:
    path = tmp_path / ".netrc"
    path.write_text("machine gateway password viapass\nmachine poll.name password pollpass\n")
    os.chmod(path, 0o600)
    joe = User(remote="joe")
    assert _login(Passwords(str(path)), Server(pollname="poll.name", users=(joe,)), joe) == (
        "pollpass"
    )
    via = Server(pollname="elsewhere", via="gateway", users=(joe,))
    assert _login(Passwords(str(path)), via, joe) == "viapass"
    rc_joe = User(remote="joe", password="fromrc")
    assert _login(Passwords(str(path)), Server(pollname="poll.name"), rc_joe) == "fromrc"
