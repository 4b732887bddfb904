"""The pipelined SMTP/LMTP transaction on an aiosmtplib connection: fetchd.delivery.pipelining
decides, this writes and reads.

aiosmtplib has neither PIPELINING nor CHUNKING, and its reader keeps one reply per command: a
reply that arrives while none is awaited is dropped. While a transaction runs, ``Replies`` takes
the connection's incoming bytes into aiosmtplib's own buffer and parses them there with
aiosmtplib's own parser, one reply after another, in order. TLS, AUTH and EHLO stay
aiosmtplib's. The message streams from its source (fetchd.message): the final dot or
``BDAT n LAST`` goes only after the source's end; a failure before that (the source's, a
timeout, a cancelled poll) escapes ``run``, and the caller must drop the connection, so that
the MTA discards the partial message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType

import aiosmtplib
import structlog
from aiosmtplib.protocol import MAX_RESPONSE_LENGTH, SMTPProtocol
from aiosmtplib.response import SMTPResponse

from fetchd.delivery.headers import DotStuffer
from fetchd.delivery.pipelining import Exchange, Kind, Refused, bdat, envelope_kinds
from fetchd.delivery.smtpauth import reply_lines
from fetchd.message import Message

log = structlog.get_logger("fetchd.smtp")

WRITE_SLICE = 256 << 10
# Pieces of a message smaller than this are joined into one BDAT chunk (the header and the
# first part of the body, most often the whole of a small message).
MIN_CHUNK = 64 << 10
# Replies not yet read may pile up while a large message is sent as many BDAT chunks; a server
# that sends more than this without being asked is cut off.
REPLY_BUFFER_LIMIT = 64 * MAX_RESPONSE_LENGTH

Ready = Callable[[], Awaitable[None]] | None


class _Tap(asyncio.Protocol):
    """Stands in for aiosmtplib's protocol on the transport while a transaction runs: the
    bytes received go to ``Replies``, everything else (flow control, EOF, a lost link) to
    aiosmtplib as before, and wakes ``Replies`` too. The transport is switched with
    ``set_protocol``: uvloop's transports look ``data_received`` up once per protocol, so
    patching the method would not be seen."""

    def __init__(self, protocol: SMTPProtocol, replies: Replies) -> None:
        self._protocol = protocol
        self._replies = replies

    def data_received(self, data: bytes) -> None:
        self._replies.received(data)

    def eof_received(self) -> bool | None:
        self._replies.lost()
        return self._protocol.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._replies.lost()
        self._protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self._protocol.resume_writing()


class Replies:
    """Every reply the server sends while in use (``async with``), kept in order."""

    def __init__(self, protocol: SMTPProtocol, timeout: float) -> None:
        self._protocol = protocol
        self._timeout = timeout
        self._waiter: asyncio.Future[None] | None = None
        self._flooded = False
        self._closed = False
        self._transport: asyncio.BaseTransport | None = None

    def received(self, data: bytes) -> None:
        buffer = self._protocol._buffer
        if len(buffer) + len(data) > REPLY_BUFFER_LIMIT:
            self._flooded = True
        else:
            buffer.extend(data)
        self._wake()

    def lost(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def __aenter__(self) -> Replies:
        transport = self._protocol.transport
        if transport is None or transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("connection lost")
        transport.set_protocol(_Tap(self._protocol, self))
        self._transport = transport
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._transport is not None:
            self._transport.set_protocol(self._protocol)

    def available(self) -> SMTPResponse | None:
        """The next reply if it is already in, without waiting."""
        if self._flooded:
            raise aiosmtplib.SMTPResponseException(-1, "the MTA sent more than was asked")
        reply = self._protocol._read_response_from_buffer()
        if reply is not None and log.is_enabled_for(logging.DEBUG):
            for line in reply_lines(reply.code, reply.message):
                log.debug("smtp.recv", text=line)
        return reply

    async def read(self) -> SMTPResponse:
        while True:
            reply = self.available()
            if reply is not None:
                return reply
            if self._closed or not self._protocol.is_connected:
                raise aiosmtplib.SMTPServerDisconnected("connection lost")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self._timeout):
                    await self._waiter
            except TimeoutError:
                raise aiosmtplib.SMTPReadTimeoutError(
                    "Timed out waiting for server response"
                ) from None
            finally:
                self._waiter = None


def _sent(lines: Sequence[bytes]) -> None:
    if log.is_enabled_for(logging.DEBUG):
        for line in lines:
            log.debug("smtp.send", text="SMTP> " + line.decode("utf-8", "replace").rstrip())


async def write_paced(protocol: SMTPProtocol, data: bytes) -> None:
    """A large piece in slices, each once the socket took the one before: the transport never
    holds a second copy of it."""
    if len(data) <= WRITE_SLICE:
        protocol.write(data)
        # A streamed body comes in chunks of this size, and each waits too: an MTA slower than
        # the server would otherwise let the transport's buffer grow by every chunk not yet
        # sent (issue 13: a 50 MB message to aiosmtpd peaked at 59 MB of RSS).
        await protocol._drain_helper()  # at once unless the transport is over its high water
        return
    view = memoryview(data)  # not released here: the transport may still hold a slice of it
    for start in range(0, len(view), WRITE_SLICE):
        protocol.write(view[start : start + WRITE_SLICE])  # type: ignore[arg-type]
        await protocol._drain_helper()  # aiosmtplib's own flow control (FlowControlMixin)


async def write_data(protocol: SMTPProtocol, trace: bytes, message: Message) -> None:
    """DATA's content as it streams from the source, dot-stuffed, without the final dot: the
    caller sends that, only after this returned (the source's end)."""
    if trace:
        protocol.write(trace)  # a Received header: no line of it starts with a dot
    stuffer = DotStuffer()
    await write_paced(protocol, stuffer.feed(message.head))
    async for chunk in message.body():
        await write_paced(protocol, stuffer.feed(chunk))


class Transaction:
    """One message's MAIL, RCPTs and DATA or BDAT chunks. ``stage`` says where a failure
    struck; ``run`` returns None when the message was taken for every recipient, else the
    refusal. ``reusable`` is False when the connection is left mid-transaction: close it.
    A failure that escapes ``run`` leaves it in an unknown state: close it too."""

    def __init__(
        self,
        protocol: SMTPProtocol,
        timeout: float,
        *,
        pipelining: bool,
        chunking: bool,
        lmtp: bool,
    ) -> None:
        self._protocol = protocol
        self._timeout = timeout
        self.pipelining = pipelining
        self.chunking = chunking
        self.lmtp = lmtp
        self.stage = "MAIL FROM"
        self.reusable = True
        self._exchange = Exchange(1, lmtp=lmtp, chunking=chunking)

    async def run(
        self, envelope: list[bytes], trace: bytes, message: Message, ready: Ready
    ) -> Refused | None:
        """``envelope``: MAIL then one RCPT per recipient (fetchd.delivery.pipelining)."""
        self._exchange = Exchange(len(envelope) - 1, lmtp=self.lmtp, chunking=self.chunking)
        async with Replies(self._protocol, self._timeout) as replies:
            self._replies = replies
            if not message.complete and ready is not None:
                await ready()  # the previous record must not wait for this body to arrive
                ready = None
            if self.chunking:
                return await self._bdat(envelope, trace, message, ready)
            return await self._data(envelope, trace, message, ready)

    def _send(self, data: bytes, kinds: Sequence[Kind]) -> None:
        for kind in kinds:
            self._exchange.sent(kind)
        self._protocol.write(data)

    async def _settle(self) -> None:
        """Read every reply still owed."""
        exchange = self._exchange
        while exchange.awaiting:
            exchange.received(await self._replies.read())

    def _take_available(self) -> None:
        exchange = self._exchange
        while exchange.awaiting and (reply := self._replies.available()) is not None:
            exchange.received(reply)

    async def _envelope(self, envelope: list[bytes], end: bytes | None) -> None:
        """Without PIPELINING: the envelope (and DATA, when ``end``) one command at a time,
        stopping at a refused MAIL or once every RCPT was refused."""
        kinds = envelope_kinds(len(envelope) - 1)
        if end is not None:
            envelope, kinds = [*envelope, end], [*kinds, "DATA"]
        for line, kind in zip(envelope, kinds, strict=True):
            self.stage = "RCPT TO" if kind == "RCPT" else "MAIL FROM" if kind == "MAIL" else kind
            _sent([line])
            self._send(line, [kind])
            await self._settle()
            if self._exchange.decided is not None:
                return

    async def _data(
        self, envelope: list[bytes], trace: bytes, message: Message, ready: Ready
    ) -> Refused | None:
        exchange = self._exchange
        if self.pipelining:
            group = [*envelope, b"DATA\r\n"]
            _sent(group)
            self._send(b"".join(group), [*envelope_kinds(len(envelope) - 1), "DATA"])
            await self._settle()
        else:
            await self._envelope(envelope, b"DATA\r\n")
        if exchange.decided is not None:
            self.stage = exchange.decided.stage
            self.reusable = not exchange.end_data  # mid-DATA: drop it rather than send a dot
            return exchange.decided
        self.stage = "end of DATA"
        await write_data(self._protocol, trace, message)
        if ready is not None:
            await ready()
        self._send(b".\r\n", ["END"])
        await self._settle()
        return exchange.result()

    async def _bdat(
        self, envelope: list[bytes], trace: bytes, message: Message, ready: Ready
    ) -> Refused | None:
        """The message as BDAT chunks; with PIPELINING the envelope goes with the first one and
        no chunk waits for the one before it to be answered."""
        exchange = self._exchange
        prefix = b""
        prefix_kinds: list[Kind] = []
        if self.pipelining:
            _sent(envelope)
            prefix = b"".join(envelope)
            prefix_kinds = envelope_kinds(len(envelope) - 1)
        else:
            await self._envelope(envelope, None)
            if exchange.decided is not None:
                self.stage = exchange.decided.stage
                return exchange.decided
        self.stage = "BDAT"
        pending = trace + message.head
        async for piece in message.body():
            if len(pending) < MIN_CHUNK:
                pending += piece
                continue
            await self._chunk(prefix, prefix_kinds, pending, last=False, ready=None)
            prefix, prefix_kinds, pending = b"", [], piece
            if exchange.decided is not None:
                break  # refused: no more of it is sent; the engine drains the source
        else:
            self.stage = "BDAT LAST"
            await self._chunk(prefix, prefix_kinds, pending, last=True, ready=ready)
        await self._settle()
        if exchange.decided is not None:
            self.stage = exchange.decided.stage
        return exchange.result()

    async def _chunk(
        self, prefix: bytes, kinds: list[Kind], data: bytes, *, last: bool, ready: Ready
    ) -> None:
        """One ``BDAT n`` (after the pipelined envelope, if any). The last octet of the last
        chunk, which commits the message, goes only once ``ready``."""
        header = bdat(len(data), last=last)
        _sent([header])
        kinds = [*kinds, "END" if last else "BDAT"]
        hold = b""
        if last and ready is not None:
            data, hold = (data[:-1], data[-1:]) if data else (b"", b"")
            if not hold:
                header, hold = header[:-1], header[-1:]
        if len(data) <= WRITE_SLICE:
            self._send(prefix + header + data, kinds)
            await self._protocol._drain_helper()  # each streamed chunk waits, as in DATA
        else:
            self._send(prefix + header, kinds)
            await write_paced(self._protocol, data)
        if ready is not None:
            await ready()
        if hold:
            self._protocol.write(hold)
        if self.pipelining:
            self._take_available()
        else:
            await self._settle()
