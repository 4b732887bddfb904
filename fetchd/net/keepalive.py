"""TCP keepalive on mail server connections, so that a peer that vanished is noticed.

A connection waiting in IMAP IDLE sends nothing for up to half an hour. If the server or a NAT
box in between drops it without a FIN or RST (a reboot, a timeout, a pulled cable), the client
would wait for that half hour and miss the mail meanwhile. With these settings the kernel
probes an idle connection after KEEPIDLE seconds and declares it dead after KEEPCNT unanswered
probes, about two minutes in all; the read then fails and the connection is re-opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

KEEPIDLE = 60
KEEPINTVL = 15
KEEPCNT = 4


def enable(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError, AttributeError):  # an option this platform lacks
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPIDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPINTVL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPCNT)
