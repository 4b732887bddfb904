"""One message on its way from a source to a deliverer: the header held, the body streamed.

A source hands the poll a ``Message`` as soon as the header (and up to ``READ_AHEAD`` octets)
has arrived; the deliverer reads the rest with ``body()``, in chunks as the server sends them,
so no message is ever held whole, whatever its size. ``body()`` ends only once the source has
seen the end of the message (POP3: the terminating dot; IMAP: the last literal and its tagged
OK): a deliverer reaches its commit point (final dot, end of the MDA's input, the rename into
``new/``) only after that. When the source fails first, ``body()`` raises ``RetrievalFailed``,
which every deliverer lets through after abandoning its delivery uncommitted.

Line endings become CRLF everywhere, across chunk boundaries (``LineEndings``): a bare CR or LF
never reaches the MTA.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fetchd import failpoints
from fetchd.delivery.headers import crlf_line_endings, normalize_line_endings

# Octets read before a message is handed on: a message this small arrives whole (``complete``),
# and is treated exactly as before streaming (its 8-bit content known before MAIL FROM ...).
READ_AHEAD = 256 << 10
# The header is held; one without an end in this many octets is cut at a line end here.
HEADER_LIMIT = 1 << 20


class RetrievalFailed(Exception):
    """The source broke or stalled in the middle of a message; ``error`` is its own error."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class MessageTooLarge(Exception):
    """More octets arrived than ``limit`` allows (the listing under-stated the size)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"{size} octets")
        self.size = size


class LineEndings:
    """CRLF for every CR, LF and CRLF of a stream fed in chunks, and a final CRLF.

    A CR that ends a chunk waits for the next one, which may start with its LF; so no output
    chunk ends in a bare CR, and ``"\\r\\n"`` is never split between two output chunks.
    """

    def __init__(self) -> None:
        self._cr = False  # a CR held back from the end of the previous chunk
        self._ended = True  # the output so far ends with CRLF (or is empty)
        self._empty = True

    def feed(self, data: bytes) -> bytes:
        if self._cr:
            data, self._cr = b"\r" + data, False
        if data.endswith(b"\r"):
            data, self._cr = data[:-1], True
        if not data:
            return b""
        # No copy of a chunk that has only CRLF (a final CRLF added and cut off again cost two).
        out = crlf_line_endings(data)
        if out:
            self._ended = out.endswith(b"\r\n")
            self._empty = False
        return out

    def end(self) -> bytes:
        """What the stream still needs: the held CR as CRLF, or a missing final CRLF."""
        if self._cr:
            self._cr, self._ended, self._empty = False, True, False
            return b"\r\n"
        return b"" if self._ended or self._empty else b"\r\n"


class _Body:
    """The part of a message after its header, shared by every ``Message`` made of it."""

    def __init__(
        self,
        first: bytes,
        rest: AsyncIterator[bytes] | None,
        endings: LineEndings | None,
        size: int,
    ) -> None:
        self.first = first
        self.rest = rest
        self.endings = endings or LineEndings()
        self.size = size  # octets the source produced so far
        self.limit = 0  # 0 = none; else MessageTooLarge once ``size`` passes it
        self.started = False
        self.finished = rest is None
        self.failed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.started:
            raise RuntimeError("the body of a message can be read once")
        self.started = True
        if self.first:
            yield self.first
        if self.rest is None:
            return
        streamed = 0
        while True:
            try:
                chunk = await anext(self.rest)
            except StopAsyncIteration:
                break
            except Exception as exc:
                self.failed = True
                raise RetrievalFailed(exc) from exc
            self.size += len(chunk)
            if self.limit and self.size > self.limit:
                raise MessageTooLarge(self.size)
            streamed += 1
            if streamed == 2:  # the deliverer has the read-ahead and one chunk: mid-body
                failpoints.hit("mid_body")  # kill -9 there (the crash tests)
            out = self.endings.feed(chunk)
            if out:
                yield out
        self.finished = True
        tail = self.endings.end()
        if tail:
            yield tail

    async def drain(self) -> int:
        if self.rest is not None and not self.finished and not self.failed:
            async for chunk in self.rest:
                self.size += len(chunk)
            self.finished = True
        return self.size


class Message:
    """A message: ``head`` (its header block, CRLF, with the empty line that ends it) in
    memory, the rest from ``body()``."""

    def __init__(self, head: bytes, body: _Body) -> None:
        self.head = head
        self._body = body

    @classmethod
    def whole(cls, data: bytes) -> Message:
        """A message already in memory (a small one, a bounce, a test's)."""
        data = normalize_line_endings(data)
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return cls(data, _Body(b"", None, None, len(data)))
        return cls(data[: end + 4], _Body(data[end + 4 :], None, None, len(data)))

    @classmethod
    def streamed(
        cls, start: bytes, rest: AsyncIterator[bytes], endings: LineEndings, size: int
    ) -> Message:
        """``start``: CRLF-normalized octets read so far, the whole header among them."""
        # A header longer than HEADER_LIMIT without its end: what it has up to a line end.
        end = start.find(b"\r\n\r\n")
        last = start.rfind(b"\r\n")
        cut = end + 4 if end >= 0 else (last + 2 if last >= 0 else 0)
        return cls(start[:cut], _Body(start[cut:], rest, endings, size))

    def with_head(self, head: bytes) -> Message:
        """The same message with an edited header (rewrite, dropped fields)."""
        return Message(head, self._body)

    @property
    def complete(self) -> bool:
        """The whole message is in memory: the source has already said it is complete."""
        return self._body.rest is None

    @property
    def size(self) -> int:
        """Octets the source has produced so far (all of them once ``body()`` ended)."""
        return self._body.size

    @property
    def limit(self) -> int:
        return self._body.limit

    @limit.setter
    def limit(self, octets: int) -> None:
        self._body.limit = octets

    def maybe_8bit(self) -> bool:
        """Whether the message may hold 8-bit octets; a streamed body is not seen before
        MAIL FROM, so it may."""
        if not self.complete:
            return True
        return not (self.head.isascii() and self._body.first.isascii())

    def whole_bytes(self) -> bytes:
        """The message as bytes; only for a ``complete`` one."""
        assert self.complete, "a streamed message is never held whole"
        return self.head + self._body.first

    def body(self) -> AsyncIterator[bytes]:
        """The rest of the message after ``head``: CRLF-normalized chunks, ending only once
        the source has said the message is complete. Readable once."""
        return self._body.chunks()

    async def drain(self) -> int:
        """Read and drop what nobody read (a refused message), so the source can go on to the
        next one; the size of the whole message."""
        return await self._body.drain()


def as_message(message: bytes | Message) -> Message:
    return message if isinstance(message, Message) else Message.whole(message)


async def read_message(chunks: AsyncIterator[bytes], *, ahead: int = READ_AHEAD) -> Message:
    """Read a message from a source's chunks until its header and ``ahead`` octets are in (or
    it ended, and is then ``complete``). The source's errors go through unchanged: nothing has
    been delivered yet."""
    parts: list[bytes] = []
    size = 0
    header_seen = False
    async for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        header_seen = header_seen or b"\n\n" in chunk or b"\n\r\n" in chunk
        if size >= HEADER_LIMIT or (size >= ahead and (header_seen or _has_header_end(parts))):
            break
    else:
        message = Message.whole(b"".join(parts))
        message._body.size = size
        return message
    endings = LineEndings()
    return Message.streamed(endings.feed(b"".join(parts)), chunks, endings, size)


def _has_header_end(parts: list[bytes]) -> bool:
    """An empty line that spans two chunks."""
    joined = b"".join(parts)
    return b"\n\n" in joined or b"\n\r\n" in joined
