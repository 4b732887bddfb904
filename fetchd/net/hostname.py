"""This machine's name, as fetchmail computes it for its Received lines and EHLO."""

from __future__ import annotations

import functools
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
