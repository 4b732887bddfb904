"""Delivery through an MDA (``mda "/usr/bin/procmail -d %T"``), as fetchmail runs one.

The command goes through /bin/sh, as in fetchmail, with ``%T`` (the local recipient), ``%F``
(the envelope sender) and ``%%``. Values that come from a message can reach the shell only as
single-quoted words, a single quote in them replaced by ``_`` (fetchmail's own rule), and an
address that starts with ``-`` (an option, for the MDA) is refused. The MDA gets a scrubbed
environment and no descriptors but its stdin, stdout and stderr; its output goes to our log.

Outcomes: exit 0 with the whole message read is delivered; EX_TEMPFAIL (75), a timeout (its
process group is killed) or a message not read to the end keeps the message for the next poll;
any other exit is permanent, and softbounce keeps it too (bounces are issue 5's later work).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import os
import re
import tempfile
import termios
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import structlog

from fetchd.children import kill_and_reap
from fetchd.delivery.headers import Trace, local_sender
from fetchd.delivery.result import Outcome
from fetchd.errors import DeliveryError
from fetchd.message import Message, as_message
from fetchd.net.hostname import this_host

log = structlog.get_logger("fetchd.mda")

EX_TEMPFAIL = 75
SPOOL_CHUNK = 256 << 10
_UNQUOTABLE = re.compile("['\\x00]")
# What the MDA may see of our environment: enough to find programs and a home, no secrets.
_KEPT_ENVIRONMENT = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ")


@dataclass(frozen=True, slots=True)
class MDASettings:
    command: str
    recipients: tuple[str, ...]
    timeout: float = 300.0
    stripcr: bool = True
    trace: Trace = field(default_factory=Trace)
    by: str = field(default_factory=this_host)  # the Received line's "by"


def shell_word(value: str) -> str:
    """A value from a message as one harmless single-quoted shell word: inside single quotes
    the shell takes every character as it is but the quote itself, which becomes "_", as
    fetchmail makes it (and a NUL, which no argument can hold)."""
    return "'" + _UNQUOTABLE.sub("_", value) + "'"


def mda_sender(message: bytes) -> str:
    """%F as fetchmail fills it: "<>" for the null sender, empty when nothing names one."""
    sender = local_sender(message)
    return "<>" if sender == "" else sender or ""


def expand(command: str, recipient: str, sender: str) -> str:
    """fetchmail's %T (and its old spelling %s), %F and %% in an MDA command."""
    for value, what in ((recipient, "recipient"), (sender, "sender")):
        if value.startswith("-"):
            raise DeliveryError(
                f"refusing an MDA {what} that starts with '-': {value[:60]!r}", permanent=True
            )
    out = []
    index = 0
    while index < len(command):
        char = command[index]
        if char == "%" and index + 1 < len(command):
            code = command[index + 1]
            if code in "TFs%":
                # %s is fetchmail's old spelling of %T.
                out.append(
                    {
                        "T": shell_word(recipient),
                        "F": shell_word(sender),
                        "s": shell_word(recipient),
                        "%": "%",
                    }[code]
                )
                index += 2
                continue
        out.append(char)
        index += 1
    return "".join(out)


def _environment() -> dict[str, str]:
    return {key: os.environ[key] for key in _KEPT_ENVIRONMENT if key in os.environ}


class MDADeliverer:
    """Implements fetchd.poll.Deliverer by running the MDA once per message (per recipient
    when the command names ``%T``)."""

    def __init__(self, settings: MDASettings) -> None:
        self.settings = settings

    async def deliver(
        self,
        message: bytes | Message,
        *,
        ready: Callable[[], Awaitable[None]] | None = None,
        recipients: tuple[str, ...] | None = None,
    ) -> Outcome:
        """``recipients``: this message's local names (multidrop); default, the account's."""
        message = as_message(message)
        sender = mda_sender(message.head)
        per_recipient = "%T" in self.settings.command or "%s" in self.settings.command
        names = self.settings.recipients if recipients is None else recipients
        recipients = names if per_recipient else names[:1]
        if ready is not None:
            await ready()  # the previous message's record, before this one can be delivered
        if len(recipients) > 1 and not message.complete:
            # One MDA after the other, each reading the whole message: the body is spooled to
            # an unlinked file first, so every MDA starts only after the source's end.
            with tempfile.TemporaryFile() as spool:
                await _spool(message, spool)
                return await self._each(recipients, sender, message.head, spool)
        return await self._each(recipients, sender, message.head, message)

    async def _each(
        self,
        recipients: tuple[str, ...],
        sender: str,
        head: bytes,
        body: Message | BinaryIO,
    ) -> Outcome:
        for recipient in recipients:
            trace = self.settings.trace.received(
                by=self.settings.by, recipient=recipient, multidrop=len(recipients) > 1
            )
            try:
                command = expand(self.settings.command, recipient, sender)
            except DeliveryError as exc:
                return Outcome(False, False, str(exc), 550)
            pieces = _pieces(trace + head, body, self.settings.stripcr)
            outcome = await self._run(command, pieces)
            if not outcome.delivered:
                return outcome
        return Outcome(True, True, "delivered", 0)

    async def _run(self, command: str, pieces: AsyncIterator[bytes]) -> Outcome:
        # Our own pipe, whose read end we keep: after the MDA exits, bytes still in the pipe
        # show it did not read the whole message (asyncio's pipe cannot tell: the last write
        # may sit in the kernel's buffer when the MDA exits without reading it).
        read_end, write_end = os.pipe()
        try:
            process = await asyncio.create_subprocess_shell(
                command,
                stdin=read_end,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=_environment(),
                start_new_session=True,
                close_fds=True,
            )
        except BaseException:
            os.close(read_end)
            os.close(write_end)
            raise
        feeder = _Feeder(write_end)
        feeding = asyncio.create_task(feeder.feed(pieces))
        output = b""
        unread = 0
        try:
            try:
                async with asyncio.timeout(self.settings.timeout):
                    assert process.stdout is not None
                    reading = asyncio.create_task(_output_and_exit(process, process.stdout))
                    try:
                        while not reading.done():
                            waiting = {reading} if feeding.done() else {reading, feeding}
                            await asyncio.wait(waiting, return_when=FIRST_COMPLETED)
                            if feeding.done() and feeding.exception() is not None:
                                # The source failed: the MDA must never see the end of its
                                # input, so it dies with its process group first.
                                await kill_and_reap(process)
                                feeding.result()
                        output, status = reading.result()
                    finally:
                        reading.cancel()
            except TimeoutError:
                await kill_and_reap(process)
                return Outcome(
                    False, False, f"MDA did not finish in {self.settings.timeout:g} s; kept", None
                )
            unread = _unread(read_end)
        finally:
            if process.returncode is None:  # abandoned (a stopping daemon, a failed source)
                await kill_and_reap(process)
            os.close(read_end)  # a writer still blocked on a full pipe now gets EPIPE
            feeder.close()  # after the MDA is gone: it must not see an end of file early
            with contextlib.suppress(Exception):
                await feeding
        fully_read = feeder.complete and unread == 0
        for line in output.decode("utf-8", "replace").splitlines()[:20]:
            log.info("mda.output", text=f"MDA: {line[:200]}")
        if status == 0 and fully_read:
            return Outcome(True, True, "delivered", 0)
        if status == 0:
            return Outcome(False, False, "MDA exited before reading the whole message; kept")
        if status == EX_TEMPFAIL:
            return Outcome(False, False, "MDA temporary failure (exit 75); kept", 451)
        how = f"killed by signal {-status}" if status < 0 else f"exit {status}"
        return Outcome(False, False, f"MDA failed ({how}) (softbounce; kept)", 550)


async def _output_and_exit(
    process: asyncio.subprocess.Process, stdout: asyncio.StreamReader
) -> tuple[bytes, int]:
    output = await stdout.read(64 * 1024)
    while await stdout.read(64 * 1024):
        pass  # read to the end, so the MDA never blocks on a full pipe
    return output, await process.wait()


async def _pieces(head: bytes, body: Message | BinaryIO, stripcr: bool) -> AsyncIterator[bytes]:
    """What the MDA reads: the trace and header, then the body as it streams (or from the
    spool); LF line endings with ``stripcr``."""
    chunks = body.body() if isinstance(body, Message) else _replay(body)
    yield head.replace(b"\r\n", b"\n") if stripcr else head
    async for chunk in chunks:
        yield chunk.replace(b"\r\n", b"\n") if stripcr else chunk


async def _spool(message: Message, spool: BinaryIO) -> None:
    async for chunk in message.body():
        await asyncio.to_thread(spool.write, chunk)


async def _replay(spool: BinaryIO) -> AsyncIterator[bytes]:
    await asyncio.to_thread(spool.seek, 0)
    while chunk := await asyncio.to_thread(spool.read, SPOOL_CHUNK):
        yield chunk


class _Feeder:
    """Writes the MDA's input; its end (closing the pipe: the MDA's end of file) comes only
    after the last piece, when the source has said the message is complete."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        self.complete = False

    async def feed(self, pieces: AsyncIterator[bytes]) -> None:
        async for piece in pieces:
            assert self._fd is not None
            if not await asyncio.to_thread(_write_all, self._fd, piece):
                return  # EPIPE: the MDA is gone; its exit status tells the rest
        self.complete = True
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _write_all(fd: int, data: bytes) -> bool:
    """Write ``data`` to the pipe, in a thread (it blocks while the MDA reads); False when the
    MDA closed its input first."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:  # EPIPE: the MDA is gone
        return False
    return True


def _unread(fd: int) -> int:
    """Bytes still in the pipe (FIONREAD on our copy of its read end)."""
    buffer = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buffer)
    return buffer[0]
