"""Test deliverers' view of a streamed message: the whole of it, as bytes (tests only: fetchd
itself never holds a message whole)."""

from __future__ import annotations

from fetchd.message import Message


async def whole(message: Message | bytes) -> bytes:
    """``message`` read to its end: header and every body chunk, CRLF line endings."""
    if isinstance(message, bytes):
        return message
    return message.head + b"".join([chunk async for chunk in message.body()])
