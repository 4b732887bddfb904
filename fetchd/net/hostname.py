"""This machine's name and the user fetchd runs as, as fetchmail takes them for its Received
lines, EHLO and the senders it falls back to."""

from __future__ import annotations

import functools
import os
import pwd
import socket


@functools.cache
def this_host() -> str:
    """fetchmail's ``host_fqdn(0)``: the host name, made canonical through the resolver when
    it has no dot; the bare name when the resolver does not know it."""
    name = socket.gethostname()
    if "." in name:
        return name
    try:
        found = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM, flags=socket.AI_CANONNAME)
    except (OSError, UnicodeError):
        return name
    return next((canonical for *_, canonical, _ in found if canonical), name)


def calling_user() -> str:
    """The login name of the user running fetchd (fetchmail's ``user``), or the uid when the
    password database has no entry for it (a container)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())
