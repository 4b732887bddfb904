"""The password for a login: the rc file's, or one typed at the terminal, asked once."""

from __future__ import annotations

import asyncio
import getpass
import sys

from fetchd.config.model import Server, User
from fetchd.config.parser import NO_PASSWORD_AUTH
from fetchd.errors import AuthError


class Passwords:
    """Passwords typed at the terminal, remembered for the lifetime of this object: one per
    run of the command (a one-shot run or a daemon's life), so each is asked for once, as
    fetchmail asks once per run."""

    def __init__(self) -> None:
        self._asked: dict[tuple[str, str], str] = {}

    async def for_login(self, rcfile: str, server: Server, user: User) -> str:
        if user.password is not None:
            return user.password
        if server.auth in NO_PASSWORD_AUTH:
            # A `skip` entry named on the command line: fetchmail's placeholder, as for the
            # others (the parser gives it only to the entries it will poll); it is never sent.
            return user.remote
        key = (server.pollname, user.remote)
        if key in self._asked:
            return self._asked[key]
        prompt = f"Enter password for {user.remote}@{server.pollname}: "
        if not sys.stdin.isatty():
            raise AuthError(
                f"no password for {user.remote}@{server.pollname} in {rcfile}, and no "
                "terminal to ask on"
            )
        self._asked[key] = await asyncio.to_thread(getpass.getpass, prompt)
        return self._asked[key]
