"""The password for a login, in fetchmail's order: the rc file's, then ~/.netrc (matched on the
poll name, then the `via` name), then one typed at the terminal, asked once (never an OAuth2
token)."""

from __future__ import annotations

import asyncio
import getpass
import os
import stat
import sys

from fetchd.auth.netrc import NetrcEntry, find_password, netrc_path, read_netrc
from fetchd.config.lexer import OAUTH2_AUTH_WORDS
from fetchd.config.model import Server, User
from fetchd.config.parser import NO_PASSWORD_AUTH
from fetchd.errors import AuthError, RCPermissionError


class Passwords:
    """Passwords typed at the terminal, remembered for the lifetime of this object: one per
    run of the command (a one-shot run or a daemon's life), so each is asked for once, as
    fetchmail asks once per run."""

    def __init__(self, netrc: str | None = None) -> None:
        self._asked: dict[tuple[str, str], str] = {}
        self._netrc_path = netrc
        # Read once, at the first login that needs it, as fetchmail reads it once at start.
        self._netrc: tuple[NetrcEntry, ...] | None = None

    def _from_netrc(self, server: Server, user: User) -> str | None:
        if self._netrc is None:
            self._netrc = read_netrc(self._netrc_path or netrc_path())
        found = find_password(self._netrc, server.pollname, user.remote)
        if found is None and server.via:
            found = find_password(self._netrc, server.via, user.remote)
        return found

    async def for_login(self, rcfile: str, server: Server, user: User) -> str:
        if user.password is not None:
            return user.password
        if user.passwordfile is not None:
            # Read at each login, so a token another tool refreshes is picked up.
            return await asyncio.to_thread(read_password_file, user.passwordfile)
        if user.passwordfd is not None:
            key = (server.pollname, user.remote)
            if key not in self._asked:
                self._asked[key] = read_password_fd(user.passwordfd)
            return self._asked[key]
        if server.auth in NO_PASSWORD_AUTH:
            # A `skip` entry named on the command line: fetchmail's placeholder, as for the
            # others (the parser gives it only to the entries it will poll); it is never sent.
            return user.remote
        from_netrc = self._from_netrc(server, user)
        if from_netrc is not None:
            return from_netrc
        if server.auth.lower() in OAUTH2_AUTH_WORDS:
            # A token is never typed: it expires within the hour, and a prompt in a daemon's
            # first poll would wait forever on a login nobody can finish.
            raise AuthError(
                f"no OAuth2 token for {user.remote}@{server.pollname}: run fetchd "
                f"--oauth2-login {user.remote}@{server.pollname} once, or give the token "
                "with passwordfile"
            )
        key = (server.pollname, user.remote)
        if key in self._asked:
            return self._asked[key]
        prompt = f"Enter password for {user.remote}@{server.pollname}: "
        if not sys.stdin.isatty():
            raise AuthError(
                f"no password for {user.remote}@{server.pollname} in {rcfile} or the netrc "
                "file, and no terminal to ask on"
            )
        self._asked[key] = await asyncio.to_thread(getpass.getpass, prompt)
        return self._asked[key]


def _first_line(data: str) -> str:
    return data.split("\n", 1)[0].removesuffix("\r")


def read_password_file(path: str) -> str:
    """The first line of ``path``; a file others may read or not ours is refused, as the rc
    file is, since it holds the secret."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as err:
        raise AuthError(f"{path}: cannot read the password file: {err.strerror}") from None
    with os.fdopen(fd, encoding="utf-8", errors="replace") as f:
        info = os.fstat(f.fileno())
        if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
            raise RCPermissionError(
                f"{path}: the password file must be yours with no more than -rw------- (0600)"
                " permissions"
            )
        return _first_line(f.read())


def read_password_fd(fd: int) -> str:
    """The first line read from descriptor ``fd`` (to its end), as fetchmail 7 reads it once."""
    try:
        with os.fdopen(fd, encoding="utf-8", errors="replace", closefd=True) as f:
            return _first_line(f.read())
    except OSError as err:
        raise AuthError(f"passwordfd {fd}: cannot read the password: {err.strerror}") from None
