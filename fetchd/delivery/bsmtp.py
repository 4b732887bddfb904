"""``bsmtp FILE``: append each message to a batch SMTP file, as fetchmail writes one.

Each message is the SMTP dialogue fetchmail would have had with a listener (sink.c,
open_bsmtp_sink): ``MAIL FROM:<sender>`` (with ``BODY=8BITMIME`` for 8-bit data), one
``RCPT TO:`` per recipient, ``DATA``, the message with dots stuffed, and ``.``; CRLF line
endings. ``bsmtp -`` writes to standard output.

The append is the commit: it is made after the previous message's record (``ready``), written as
the message streams from the server, fsynced, and a write that fails (a full disk) or a server
that fails before the message's end is cut back off the file, so the file never holds half a
message and the message stays on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from fetchd.delivery.headers import (
    DotStuffer,
    Trace,
    envelope_sender,
    qualify,
    usable_address,
)
from fetchd.delivery.result import Outcome
from fetchd.delivery.rewrite import drop_return_path
from fetchd.message import Message, as_message
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


def transaction_head(sender: str, rcpts: list[str], eight_bit: bool) -> bytes:
    """MAIL, RCPT and DATA of one message's BSMTP transaction."""
    body = " BODY=8BITMIME" if eight_bit else ""
    head = f"MAIL FROM:<{sender}>{body}\r\n" + "".join(f"RCPT TO:<{r}>\r\n" for r in rcpts)
    return head.encode() + b"DATA\r\n"


async def transaction(
    message: Message, sender: str, rcpts: list[str], trace: bytes, pass8bits: bool = False
) -> AsyncIterator[bytes]:
    """One message as a BSMTP transaction, in pieces as its body streams; the final dot
    only after the source's end."""
    yield transaction_head(sender, rcpts, pass8bits or message.maybe_8bit())
    stuffer = DotStuffer()
    yield stuffer.feed(trace + message.head)
    async for chunk in message.body():
        yield stuffer.feed(chunk)
    yield b".\r\n"


def _open_append(path: str) -> tuple[int, int]:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    return fd, os.lseek(fd, 0, os.SEEK_END)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _cut_back(fd: int, start: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, start)


async def _append(path: str, pieces: AsyncIterator[bytes]) -> None:
    """Append all the pieces durably, or nothing: a failed write, or a source that fails
    before its end, is truncated away."""
    fd, start = await asyncio.to_thread(_open_append, path)
    try:
        try:
            async for piece in pieces:
                await asyncio.to_thread(_write, fd, piece)
            await asyncio.to_thread(os.fsync, fd)
        except BaseException:
            await asyncio.to_thread(_cut_back, fd, start)
            raise
    finally:
        os.close(fd)


async def _to_stdout(pieces: AsyncIterator[bytes]) -> None:
    """Standard output cannot be cut back: the transaction goes to an unlinked spool file
    first, and out only once it is whole."""
    with tempfile.TemporaryFile() as spool:
        async for piece in pieces:
            await asyncio.to_thread(spool.write, piece)
        await asyncio.to_thread(spool.seek, 0)
        while chunk := await asyncio.to_thread(spool.read, 256 << 10):
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()


class BSMTPDeliverer:
    """Implements fetchd.poll.Deliverer for ``bsmtp``."""

    def __init__(self, settings: BSMTPSettings) -> None:
        self.settings = settings

    async def deliver(
        self,
        message: bytes | Message,
        *,
        ready: Callable[[], Awaitable[None]] | None = None,
        recipients: tuple[str, ...] | None = None,
    ) -> Outcome:
        settings = self.settings
        message = as_message(message)
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
        sender = envelope_sender(message.head)
        if sender is None:
            sender = settings.login
        pieces = transaction(
            message.with_head(drop_return_path(message.head)),
            sender,
            rcpts,
            trace,
            settings.pass8bits,
        )
        if ready is not None:
            await ready()  # the previous message's record, before this one is committed
        try:
            if settings.path == "-":
                await _to_stdout(pieces)
            else:
                await _append(settings.path, pieces)
        except OSError as exc:
            why = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
            return Outcome(False, False, f"cannot write {settings.path}: {why}; kept")
        return Outcome(True, True, "delivered", 0)
