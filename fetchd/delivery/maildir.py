"""Delivery straight into a Maildir (``mda "maildir:~/Mail/inbox"``), as getmail does.

A message is written under ``tmp/`` as it streams from the server (removed if the server fails
before its end), fsynced, and only then (after the previous message's
record, the engine's ``ready``) renamed into ``new/``, and ``new/`` itself is fsynced so the
rename survives a crash. A write that fails (a full disk, a quota) removes its half-written file
and keeps the message on the server for the next poll. Names follow the Maildir convention
(time, microseconds, pid, a counter, the host name), created exclusively, so two deliveries can
never overwrite each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from fetchd.delivery.headers import Trace
from fetchd.delivery.result import Outcome
from fetchd.message import Message, as_message
from fetchd.net.hostname import this_host

PREFIX = "maildir:"

_counter = itertools.count()


@dataclass(frozen=True, slots=True)
class MaildirSettings:
    path: str
    recipient: str
    trace: Trace = field(default_factory=Trace)
    by: str = field(default_factory=this_host)  # the Received line's "by"


def maildir_path(mda: str | None) -> str | None:
    """The Maildir an ``mda`` setting names, ``~`` expanded; None for a real MDA command."""
    if mda is None or not mda.startswith(PREFIX):
        return None
    return os.path.expanduser(mda[len(PREFIX) :].strip())


def unique_name() -> str:
    now = time.time()
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    return f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_counter)}.{host}"


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_tmp(maildir: Path) -> tuple[str, int]:
    """Create ``tmp/NAME`` exclusively; its name and descriptor."""
    for sub in ("tmp", "new", "cur"):
        if not (maildir / sub).is_dir():
            raise FileNotFoundError(errno.ENOENT, f"{maildir} is not a Maildir (no {sub}/)")
    name = unique_name()
    fd = os.open(maildir / "tmp" / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    return name, fd


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def _write_tmp(maildir: Path, pieces: AsyncIterator[bytes]) -> str:
    """Write ``tmp/NAME`` as the pieces arrive, and fsync it; on any failure (the disk, or the
    source before its end) nothing stays behind. Returns NAME."""
    name, fd = await asyncio.to_thread(_create_tmp, maildir)
    try:
        async for piece in pieces:
            await asyncio.to_thread(_write, fd, piece)
        await asyncio.to_thread(os.fsync, fd)  # a full disk may only show here, on writeback
    except BaseException:
        with contextlib.suppress(OSError):
            (maildir / "tmp" / name).unlink()
        raise
    finally:
        os.close(fd)
    return name


async def _pieces(head: bytes, message: Message) -> AsyncIterator[bytes]:
    """A file on this system: local line endings."""
    yield head.replace(b"\r\n", b"\n")
    async for chunk in message.body():
        yield chunk.replace(b"\r\n", b"\n")


def _commit(maildir: Path, name: str) -> None:
    """Move the message into ``new/`` and make the move durable."""
    try:
        os.rename(maildir / "tmp" / name, maildir / "new" / name)
    except BaseException:
        with contextlib.suppress(OSError):
            (maildir / "tmp" / name).unlink()
        raise
    _fsync_directory(maildir / "new")


class MaildirDeliverer:
    """Implements fetchd.poll.Deliverer for ``mda "maildir:PATH"``."""

    def __init__(self, settings: MaildirSettings) -> None:
        self.settings = settings
        self._maildir = Path(settings.path)

    async def deliver(
        self,
        message: bytes | Message,
        *,
        ready: Callable[[], Awaitable[None]] | None = None,
        recipients: tuple[str, ...] | None = None,
    ) -> Outcome:
        """One copy into the Maildir, whoever ``recipients`` (multidrop) names."""
        message = as_message(message)
        if ready is not None and not message.complete:
            await ready()  # the previous record must not wait for this body to arrive
            ready = None
        trace = self.settings.trace.received(
            by=self.settings.by, recipient=self.settings.recipient, multidrop=False
        )
        try:
            name = await _write_tmp(self._maildir, _pieces(trace + message.head, message))
        except OSError as exc:
            return Outcome(False, False, f"cannot write to {self._maildir}: {_why(exc)}")
        try:
            if ready is not None:
                await ready()  # the previous message's record, before this one is committed
        except BaseException:
            with contextlib.suppress(OSError):
                (self._maildir / "tmp" / name).unlink()
            raise
        try:
            await asyncio.to_thread(_commit, self._maildir, name)
        except OSError as exc:
            return Outcome(False, False, f"cannot deliver into {self._maildir}: {_why(exc)}")
        return Outcome(True, True, "delivered", 0)


def _why(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full; kept on the server"
    return f"{exc.strerror or exc}; kept on the server"
