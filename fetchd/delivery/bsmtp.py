"""``bsmtp FILE``: append each message to a batch SMTP file, as fetchmail writes one.

Each message is the SMTP dialogue fetchmail would have had with a listener (sink.c,
open_bsmtp_sink): ``MAIL FROM:<sender>`` (with ``BODY=8BITMIME`` for 8-bit data), one
``RCPT TO:`` per recipient, ``DATA``, the message with dots stuffed, and ``.``; CRLF line
endings. ``bsmtp -`` writes to standard output.

The append is the commit: it is made after the previous message's record (``ready``), fsynced,
and a write that fails (a full disk) is cut back off the file, so the file never holds half a
message and the message stays on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fetchd.delivery.headers import (
    Trace,
    dot_stuff,
    envelope_sender,
    needs_8bit,
    normalize_line_endings,
    qualify,
    usable_address,
)
from fetchd.delivery.result import Outcome
from fetchd.delivery.rewrite import drop_return_path
from fetchd.net.hostname import calling_user, this_host


@dataclass(frozen=True, slots=True)
class BSMTPSettings:
    path: str  # "-" for standard output
    recipients: tuple[str, ...]
    smtpaddress: str | None = None
    trace: Trace = field(default_factory=Trace)
    by: str = field(default_factory=this_host)  # the Received line's "by"
    login: str = field(default_factory=calling_user)  # the sender when the message names none
    multidrop: bool = False
    pass8bits: bool = False


def batch(
    message: bytes, sender: str, rcpts: list[str], trace: bytes, pass8bits: bool = False
) -> bytes:
    """One message as a BSMTP transaction."""
    body = " BODY=8BITMIME" if pass8bits or needs_8bit(message) else ""
    head = f"MAIL FROM:<{sender}>{body}\r\n" + "".join(f"RCPT TO:<{r}>\r\n" for r in rcpts)
    return head.encode() + b"DATA\r\n" + dot_stuff(trace + message) + b".\r\n"


def _append(path: str, data: bytes) -> None:
    """Append all of ``data`` durably, or nothing: a failed write is truncated away."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


class BSMTPDeliverer:
    """Implements fetchd.poll.Deliverer for ``bsmtp``."""

    def __init__(self, settings: BSMTPSettings) -> None:
        self.settings = settings

    async def deliver(
        self,
        message: bytes,
        *,
        ready: Callable[[], Awaitable[None]] | None = None,
        recipients: tuple[str, ...] | None = None,
    ) -> Outcome:
        settings = self.settings
        data = normalize_line_endings(message)
        names = settings.recipients if recipients is None else recipients
        rcpts = qualify(names, settings.smtpaddress or "localhost")
        if not all(usable_address(rcpt) for rcpt in rcpts):
            return Outcome(False, False, "a recipient is not a usable address; kept", 550)
        trace = settings.trace.received(
            by=settings.by,
            recipient=rcpts[0] if len(rcpts) == 1 else None,
            multidrop=settings.multidrop,
        )
        # An address that is not one becomes the null sender, as for SMTP (fetchmail writes it
        # as it is, so "<a@b> NOTIFY=NEVER" could add parameters); nothing names a sender:
        # fetchmail writes the login name of the user it runs as.
        sender = envelope_sender(data)
        if sender is None:
            sender = settings.login
        transaction = batch(drop_return_path(data), sender, rcpts, trace, settings.pass8bits)
        if ready is not None:
            await ready()  # the previous message's record, before this one is committed
        try:
            if settings.path == "-":
                sys.stdout.buffer.write(transaction)
                sys.stdout.buffer.flush()
            else:
                await asyncio.to_thread(_append, settings.path, transaction)
        except OSError as exc:
            why = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
            return Outcome(False, False, f"cannot write {settings.path}: {why}; kept")
        return Outcome(True, True, "delivered", 0)
