"""fetchmail 7's `passwordfile` and `passwordfd`: parsed, dumped, described, read. fetchmail
6.4.37 (the installed oracle) does not know these keywords, so they are pinned here, not in the
differential test; their dump lines appear only when set, so a 6.4 dump is unchanged."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from fetchd.auth.prompt import Passwords, read_password_fd, read_password_file
from fetchd.config import ParseEnvironment, configdump, parse
from fetchd.config.describe import describe
from fetchd.config.model import Server, User
from fetchd.errors import AuthError, RCPermissionError

ENV = ParseEnvironment(login="me", home="/home/me", rcdir="/home/me", hostname="box")


def test_parsed_and_dumped_only_when_set() -> None:
    config = parse("poll h user u passwordfile pw passwordfd 5\npoll g user v\n", "rc", ENV)
    first, second = (s.users[0] for s in config.servers)
    assert (first.passwordfile, first.passwordfd) == ("/home/me/pw", 5)
    assert (second.passwordfile, second.passwordfd) == (None, None)
    dump = configdump(config)
    assert dump.count('"passwordfile":"/home/me/pw",') == 1
    assert dump.count("'passwordfd':5,") == 1
    assert dump.count("passwordf") == 2


def test_password_file_first_line_and_privacy(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("s3cret\r\nsecond line\n")
    path.chmod(0o600)
    assert read_password_file(str(path)) == "s3cret"
    path.chmod(0o640)
    with pytest.raises(RCPermissionError, match="token: the password file must be yours") as err:
        read_password_file(str(path))
    assert "s3cret" not in str(err.value)


def test_password_fd_read_once() -> None:
    read, write = os.pipe()
    os.write(write, b"from-fd\nignored\n")
    os.close(write)
    assert read_password_fd(read) == "from-fd"
    with pytest.raises(OSError):
        os.fstat(read)  # closed after the read


def test_one_run_rereads_the_password_file_at_each_login(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("old-token\n")
    path.chmod(0o600)
    user = User(remote="joe", passwordfile=str(path))
    server = Server(pollname="h", users=(user,))
    passwords = Passwords(str(tmp_path / "no-netrc"))
    assert asyncio.run(passwords.for_login("rc", server, user)) == "old-token"
    path.write_text("refreshed-token\n")
    assert asyncio.run(passwords.for_login("rc", server, user)) == "refreshed-token"


def test_dash_v_names_each_source_without_a_secret() -> None:
    config = parse(
        "poll a user u passwordfile pw\npoll b user v passwordfd 4\n"
        "poll c user w password hunter2\npoll d user x\n"
        "poll e auth xoauth2 user y\npoll f auth oauthbearer user z passwordfile pw\n",
        "rc",
        ENV,
    )
    lines = [line for line in describe(config).splitlines() if "Password:" in line]
    assert lines == [
        "  Password: the first line of /home/me/pw, read at each login",
        "  Password: read once from file descriptor 4",
        "  Password: given in the rc file",
        "  Password: from ~/.netrc, else asked for",
        "  Password: the OAuth2 token that fetchd --oauth2-login stored, if any, else from"
        " ~/.netrc (never asked for)",
        "  Password: the OAuth2 token that fetchd --oauth2-login stored, if any, else the first"
        " line of /home/me/pw, read at each login",
    ]


@pytest.mark.parametrize("auth", ["xoauth2", "oauthbearer"])
def test_an_oauth2_account_without_a_token_is_never_prompted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auth: str
) -> None:
    def prompt(text: str) -> str:
        raise AssertionError(f"prompted: {text}")

    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("getpass.getpass", prompt)
    user = User(remote="joe")
    passwords = Passwords(str(tmp_path / "no-netrc"))
    with pytest.raises(AuthError, match="no OAuth2 token for joe@h: run fetchd --oauth2-login"):
        asyncio.run(passwords.for_login("rc", Server(pollname="h", auth=auth, users=(user,)), user))
    # the same account with a password auth is asked, on the terminal it has
    with pytest.raises(AssertionError, match="prompted: Enter password for joe@h"):
        asyncio.run(passwords.for_login("rc", Server(pollname="h", users=(user,)), user))
