"""The MailSource interface that POP3 and IMAP implement (fetchmail's ``struct method``, small).

The poll engine (``fetchd.poll``) drives a source through one session: list, retrieve, delete,
commit. A source never decides what to delete: it only does what the engine asks, after the engine
has recorded the delivery durably.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fetchd.message import Message


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """One message on the server as the listing showed it."""

    number: int  # POP3 message number or IMAP UID: what the source needs to address it
    uid: str  # the stable identity recorded in the UID store
    size: int  # octets, as the server reports them (may lie: never trusted for framing)


class MailSource(Protocol):
    """One authenticated session with a mailbox."""

    label: str  # "user@server" or "user@server/folder", for progress lines and errors

    async def list_messages(self) -> Sequence[MessageInfo]:
        """Every message in the mailbox, in server order."""
        ...

    def retrieve(
        self, messages: Sequence[MessageInfo]
    ) -> AsyncIterator[tuple[MessageInfo, Message | bytes]]:
        """Yield each message in the order given: its header read, its body streaming
        (``fetchd.message``), or whole as bytes. The next one comes only after this one's body
        was read (or dropped)."""
        ...

    async def delete(self, messages: Sequence[MessageInfo]) -> None:
        """Mark messages for deletion; nothing is gone before ``commit``."""
        ...

    async def commit(self) -> None:
        """End the session so that the server performs the deletions (QUIT / EXPUNGE)."""
        ...

    async def abort(self) -> None:
        """Drop the session without committing: the server keeps every message."""
        ...
