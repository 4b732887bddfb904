"""The password for a login, in fetchmail's order: the rc file's, then ~/.netrc (matched on the
poll name, then the `via` name), then one typed at the terminal, asked once."""

from __future__ import annotations

import asyncio
import getpass
import sys

from fetchd.auth.netrc import NetrcEntry, find_password, netrc_path, read_netrc
from fetchd.config.model import Server, User
from fetchd.config.parser import NO_PASSWORD_AUTH
from fetchd.errors import AuthError


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
        if server.auth in NO_PASSWORD_AUTH:
            # A `skip` entry named on the command line: fetchmail's placeholder, as for the
            # others (the parser gives it only to the entries it will poll); it is never sent.
            return user.remote
        from_netrc = self._from_netrc(server, user)
        if from_netrc is not None:
            return from_netrc
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
