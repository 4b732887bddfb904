"""IMAPSource: one IMAP folder as a ``MailSource`` for the poll engine, addressed only by UID.

Selection, as fetchmail does it for IMAP: the listing is the folder's unseen messages
(``UID SEARCH UNSEEN NOT DELETED``), or every message with ``fetchall``, with their sizes from
``UID FETCH ... (UID RFC822.SIZE FLAGS)`` in chunks. Bodies come with ``BODY.PEEK[]`` (which
leaves ``\\Seen`` alone) in batches bounded by octets, and each message is yielded the moment
its literal and closing parenthesis are in; a message over PARTIAL_OCTETS streams in parts
(``BODY.PEEK[]<offset.length>``), its total checked against the announced size.
``MessageInfo.number`` is the UID and ``.uid`` its decimal text; the UID means something only
with ``uidvalidity``, which the engine stores
(``AccountState.set_uidvalidity``) before it compares UIDs. If UIDVALIDITY changes during the
session the client raises ProtocolError and nothing more is done.

Another client may change the folder while we poll; we never delete a message we did not
deliver:
- everything is addressed by UID, so another client's EXPUNGE cannot shift what we touch;
  a message expunged before we fetched it is skipped (logged), never half-delivered;
- a message another client has flagged ``\\Deleted`` is not listed: it is already on its way
  out, and fetching it would race that client;
- with UIDPLUS we remove exactly our UIDs (``UID EXPUNGE``). Without it, EXPUNGE removes every
  ``\\Deleted`` message, including ones another client flagged (fetchmail sends it anyway). We
  emulate UID EXPUNGE as RFC 4315 describes: ``UID SEARCH DELETED``, take \\Deleted off the
  others, EXPUNGE, put it back on those still there. A connection lost in between leaves the
  others unflagged: kept, not lost. The one race left is another client flagging a message
  between our SEARCH and EXPUNGE; it wanted that message gone.
- ``recorded`` (the engine's delivered UIDs under this UIDVALIDITY) lets commit also expunge
  messages we flagged in an earlier session that died before its EXPUNGE: they are not listed
  (\\Deleted), so the engine cannot ask for them again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Iterable, Sequence

import structlog

from fetchd.errors import ProtocolError
from fetchd.imap.client import IMAPClient, SelectedMailbox
from fetchd.imap.parse import MAX_LITERAL, Fetch
from fetchd.message import Message, read_message
from fetchd.source import MessageInfo

log = structlog.get_logger("fetchd.imap")

SIZE_CHUNK = 1000  # UIDs per UID FETCH of sizes: one round trip each, replies of ~50 kB
STORE_CHUNK = 1000  # UIDs per UID STORE (sequence sets of scattered UIDs stay short)
BATCH_OCTETS = 1 << 20  # bodies requested per UID FETCH: bounds what the server sends ahead
BATCH_MESSAGES = 100
PARTIAL_OCTETS = 256 << 10  # a larger message streams in parts of this size

_DELETED = "\\DELETED"


class IMAPSource:
    """One selected IMAP folder; make it with ``IMAPSource.open`` on a logged-in client."""

    def __init__(
        self,
        client: IMAPClient,
        mailbox: SelectedMailbox,
        *,
        label: str,
        fetchall: bool = False,
        batch_octets: int = BATCH_OCTETS,
        batch_messages: int = BATCH_MESSAGES,
        size_chunk: int = SIZE_CHUNK,
        recorded: Callable[[], Collection[str]] | None = None,
    ) -> None:
        self.label = label
        self.client = client
        self.mailbox = mailbox
        self.fetchall = fetchall
        self._batch_octets = batch_octets
        self._batch_messages = batch_messages
        self._size_chunk = size_chunk
        self._recorded = recorded
        self._deleted: set[int] = set()

    @classmethod
    async def open(
        cls,
        client: IMAPClient,
        folder: str,
        *,
        label: str,
        fetchall: bool = False,
        recorded: Callable[[], Collection[str]] | None = None,
        size_chunk: int = SIZE_CHUNK,
    ) -> IMAPSource:
        """SELECT ``folder`` (read-write: we set flags) and wrap it.

        ``size_chunk``: message sizes asked per UID FETCH (fetchmail's ``fetchsizelimit``).
        """
        mailbox = await client.select(folder)
        if mailbox.read_only:
            log.warning("imap.read_only", folder=folder, label=label)
        return cls(
            client,
            mailbox,
            label=label,
            fetchall=fetchall,
            recorded=recorded,
            size_chunk=size_chunk if size_chunk > 0 else SIZE_CHUNK,
        )

    @property
    def complete_listing(self) -> bool:
        """Whether ``list_messages`` shows every message (fetchall) or only unseen ones."""
        return self.fetchall

    @property
    def uidvalidity(self) -> int:
        """The folder's UIDVALIDITY: store it before comparing UIDs with the UID store."""
        return self.mailbox.uidvalidity

    async def list_messages(self) -> Sequence[MessageInfo]:
        """Unseen (or, with fetchall, all) messages not flagged \\Deleted, in UID order."""
        criteria = b"NOT DELETED" if self.fetchall else b"UNSEEN NOT DELETED"
        uids = sorted(set(await self.client.uid_search(criteria)))
        listing: list[MessageInfo] = []
        for start in range(0, len(uids), self._size_chunk):
            chunk = uids[start : start + self._size_chunk]
            wanted = set(chunk)
            found: dict[int, int] = {}
            fetching = self.client.uid_fetch(chunk, b"(UID RFC822.SIZE FLAGS)")
            async for item in _closing(fetching):
                if item.uid not in wanted:
                    continue  # unsolicited: another client changed a message we do not list
                if item.flags is not None and _DELETED in item.flags:
                    found.pop(item.uid, None)  # flagged by another client, even mid-listing
                    wanted.discard(item.uid)
                elif item.size is not None:
                    found[item.uid] = item.size
            listing.extend(MessageInfo(uid, str(uid), found[uid]) for uid in chunk if uid in found)
        return listing

    async def retrieve(
        self, messages: Sequence[MessageInfo]
    ) -> AsyncIterator[tuple[MessageInfo, Message | bytes]]:
        """Yield each message in the order given. Small ones come whole, fetched in batches of
        bounded size; one over PARTIAL_OCTETS streams in parts of that size
        (``BODY.PEEK[]<offset.length>``), so none is ever held whole.

        A message another client expunged meanwhile is skipped (logged); the engine then
        neither records nor deletes it.
        """
        for batch in _batches(messages, self._batch_octets, self._batch_messages):
            if len(batch) == 1 and batch[0].size > PARTIAL_OCTETS:
                streamed = await self._streamed(batch[0])
                if streamed is None:
                    log.warning("imap.vanished", label=self.label, uid=batch[0].number)
                else:
                    yield batch[0], streamed
                continue
            by_uid = {info.number: info for info in batch}
            arrived: dict[int, bytes] = {}
            seen: dict[int, int] = {}  # UID -> hash of the body that came for it
            position = 0
            async for item in _closing(self.client.uid_fetch(by_uid, b"(UID BODY.PEEK[])")):
                if item.uid not in by_uid or item.body is None:
                    continue
                if item.uid in seen:
                    # The same body twice is harmless; another body under a UID already seen
                    # means one of them is labelled with the wrong UID, and taking either
                    # could record and delete a message that was never delivered.
                    if seen[item.uid] != hash(item.body):
                        raise ProtocolError(
                            f"{self.label}: two different messages arrived as UID {item.uid}"
                        )
                    continue
                seen[item.uid] = hash(item.body)
                arrived[item.uid] = item.body
                # Yield in the given order as soon as the next one is complete.
                while position < len(batch) and batch[position].number in arrived:
                    info = batch[position]
                    position += 1
                    yield info, arrived.pop(info.number)
            for info in batch[position:]:
                if info.number in arrived:
                    yield info, arrived.pop(info.number)
                else:
                    log.warning("imap.vanished", label=self.label, uid=info.number)

    async def _streamed(self, info: MessageInfo) -> Message | None:
        """A large message, its header read and its body to come in parts; None if it is
        gone."""
        first = await self._part(info.number, 0)
        if first is None:
            return None
        return await read_message(self._parts(info, first))

    async def _parts(self, info: MessageInfo, first: bytes) -> AsyncIterator[bytes]:
        """The message's parts in order, until one comes short; then its size must be the
        one the listing announced (RFC822.SIZE), or the message is not delivered."""
        part, offset = first, 0
        while True:
            if part:
                yield part
            offset += len(part)
            if len(part) < PARTIAL_OCTETS:
                break
            if offset > MAX_LITERAL:
                raise ProtocolError(f"{self.label}: message {info.number} exceeds every limit")
            following = await self._part(info.number, offset)
            if following is None:
                raise ProtocolError(
                    f"{self.label}: message {info.number} vanished while it was read"
                )
            part = following
        if offset != info.size:
            raise ProtocolError(
                f"{self.label}: message {info.number} has {offset} octets, but the server "
                f"announced {info.size}; not delivered"
            )

    async def _part(self, uid: int, offset: int) -> bytes | None:
        """PARTIAL_OCTETS of the message from ``offset``; None when it is not there."""
        items = b"(UID BODY.PEEK[]<%d.%d>)" % (offset, PARTIAL_OCTETS)
        found: bytes | None = None
        async for item in _closing(self.client.uid_fetch([uid], items)):
            if item.uid == uid and item.body is not None and item.origin == offset:
                found = item.body
        return found

    async def delete(self, messages: Sequence[MessageInfo]) -> None:
        """Flag \\Deleted (silently); they go at ``commit``."""
        uids = [info.number for info in messages]
        await self._store(uids, b"(\\Deleted)")
        self._deleted.update(uids)

    async def mark_seen(self, messages: Sequence[MessageInfo]) -> None:
        """Flag \\Seen, for keep mode after delivery (BODY.PEEK[] left the flag alone)."""
        await self._store([info.number for info in messages], b"(\\Seen)")

    async def commit(self) -> None:
        """Expunge exactly what we flagged (see the module docstring), then LOGOUT."""
        if self._deleted:
            uidplus = "UIDPLUS" in self.client.capabilities
            ours = set(self._deleted)
            flagged: set[int] = set()
            if self._recorded is not None or not uidplus:
                flagged = set(await self.client.uid_search(b"DELETED"))
            if self._recorded is not None and flagged - ours:
                recorded = await asyncio.to_thread(self._recorded)
                ours |= {uid for uid in flagged if str(uid) in recorded}
            if uidplus:
                await self.client.uid_expunge(ours)
            else:
                await self._expunge_only(ours, flagged - ours)
        await self.client.logout()

    async def abort(self) -> None:
        """Drop the connection without EXPUNGE or LOGOUT: the server keeps every message."""
        self.client.close()

    async def _expunge_only(self, ours: set[int], others: set[int]) -> None:
        """UID EXPUNGE without UIDPLUS (RFC 4315): hide the others' \\Deleted meanwhile."""
        if others:
            log.info("imap.expunge_emulated", label=self.label, ours=len(ours), others=len(others))
            await self._store(sorted(others), b"(\\Deleted)", b"-FLAGS.SILENT")
        await self.client.expunge()
        if others:
            await self._store(sorted(others), b"(\\Deleted)")

    async def _store(self, uids: list[int], flags: bytes, change: bytes = b"+FLAGS.SILENT") -> None:
        for start in range(0, len(uids), STORE_CHUNK):
            await self.client.uid_store(uids[start : start + STORE_CHUNK], change, flags)


async def _closing(fetches: AsyncGenerator[Fetch, None]) -> AsyncIterator[Fetch]:
    """Iterate and always close ``fetches``, so an abandoned reply marks the client broken now
    rather than whenever the event loop finalizes the generator."""
    async with contextlib.aclosing(fetches):
        async for item in fetches:
            yield item


def _batches(
    messages: Iterable[MessageInfo], max_octets: int, max_messages: int
) -> Iterable[list[MessageInfo]]:
    batch: list[MessageInfo] = []
    octets = 0
    for info in messages:
        if batch and (octets + info.size > max_octets or len(batch) >= max_messages):
            yield batch
            batch, octets = [], 0
        batch.append(info)
        octets += info.size
    if batch:
        yield batch
