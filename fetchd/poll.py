"""One poll of one account. The delivery invariant lives here, and only here.

For every message (see ../shared/DESIGN.md):
1. retrieve it completely: the source yields each message as its header arrives and its body
   streams to the deliverer (fetchd.message), whose commit point comes after the source's end;
2. deliver it and get a definite answer (250 / MDA exit 0);
3. record it durably in the UID store (committed and fsynced);
4. only then ask the source to delete it, and commit the session (QUIT / EXPUNGE).
Any error before the commit aborts the session, so the server keeps every message it has; what
was recorded is deleted unread on the next poll instead of being delivered twice.

One message at a time, never held whole: stream it, commit, record, and only then delete. The
record of message k is written while message k+1 is on its way (just before its commit point,
or after RECORD_GRACE seconds if k+1 is slow to arrive).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from fetchd import failpoints
from fetchd.message import Message, MessageTooLarge, RetrievalFailed, as_message
from fetchd.selection import Selection, SelectionPolicy, select_messages
from fetchd.source import MailSource, MessageInfo

# How long a delivered message's pending record waits for the next message's header before it
# is written on its own (it is written with the next message's commit otherwise).
RECORD_GRACE = 0.05

log = structlog.get_logger("fetchd.poll")


class DeliveryResult(Protocol):
    """What the poll needs to know of one delivery attempt."""

    @property
    def delivered(self) -> bool:
        """The MTA or MDA took responsibility for the message."""
        ...

    @property
    def may_delete(self) -> bool:
        """The message may leave the server (delivered, or discarded as spam by rule)."""
        ...

    @property
    def reason(self) -> str:
        """A short text for the progress line when the message stays."""
        ...


class Deliverer(Protocol):
    """Hands one message to the MTA or MDA."""

    async def deliver(
        self, message: Message, *, ready: Callable[[], Awaitable[None]] | None = None
    ) -> DeliveryResult:
        """Deliver one message; never raise for a per-message refusal.

        The message's body streams from the source: the deliverer reaches its commit point
        only after ``message.body()`` ended. If reading it raises (``RetrievalFailed``, or
        ``MessageTooLarge``), the delivery must be abandoned uncommitted (connection dropped,
        MDA killed, file removed) and the exception let through.

        ``ready``, when given, must be awaited just before the step that commits the delivery
        (SMTP: the final dot). The engine uses it to finish recording the previous message
        while this one is already on its way, so the store's fsync is off the critical path
        and still at most one message is ever delivered but not recorded. If ``ready`` raises,
        the delivery must be abandoned uncommitted and the error propagated.
        """
        ...


class DeliveryState(Protocol):
    """The account's slice of the durable UID store."""

    def delivered(self) -> Collection[str]:
        """UIDs already recorded as delivered."""
        ...

    def record_delivered(self, uids: Iterable[str]) -> None:
        """Record durably (committed and fsynced) before returning."""
        ...

    def forget_absent(self, present_uids: Iterable[str]) -> None:
        """Drop records of UIDs the server no longer has."""
        ...


@dataclass
class PollResult:
    """Counts of one account's poll, for the summary line and the exit code."""

    label: str
    on_server: int = 0
    octets: int = 0
    seen: int = 0
    fetched: int = 0
    delivered: int = 0
    deleted: int = 0
    kept: int = 0
    oversized: int = 0
    deferred: int = 0
    refusals: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PollSettings:
    """How one poll behaves beyond selection."""

    selection: SelectionPolicy = field(default_factory=SelectionPolicy)
    expunge: int = 0  # commit (QUIT) and reconnect after this many deletions; 0 = at the end
    check_only: bool = False  # -c: count only, retrieve nothing
    warnings: float = 3600.0  # seconds between two warnings about one oversized message


class PollMemory:
    """What polls remember of one another, for the lifetime of this object: the process's
    (``PROCESS_MEMORY``, as fetchmail keeps it: a daemon warns once an interval, a new run
    anew), or a caller's own (a test, a fleet worker)."""

    def __init__(self) -> None:
        # Messages whose permanent refusal (5xx, kept by softbounce) was already reported.
        self.refusals_warned: set[tuple[str, str]] = set()
        # When each oversized message was last warned about, by (account, UID): fetchmail's
        # `warnings` interval.
        self.oversized_warned: dict[tuple[str, str], float] = {}
        # Octets actually read of messages found over `limit` although the listing said
        # otherwise, by (account, UID): a server that under-states a size is not trusted with it
        # again.
        self.read_sizes: dict[tuple[str, str], int] = {}

    def warn_once_about_refusal(
        self, label: str, info: MessageInfo, outcome: DeliveryResult
    ) -> None:
        code = getattr(outcome, "code", None)
        if not isinstance(code, int) or code < 500 or (label, info.uid) in self.refusals_warned:
            return
        self.refusals_warned.add((label, info.uid))
        log.warning(
            "message.refused",
            text=f"message {label}:{info.number} was refused: {outcome.reason}; it stays on "
            "the server, and this is said once, not at every poll",
        )

    def warn_oversized(self, label: str, info: MessageInfo, interval: float, text: str) -> None:
        now = time.monotonic()
        last = self.oversized_warned.get((label, info.uid))
        if last is not None and now - last < interval:
            return
        self.oversized_warned[(label, info.uid)] = now
        log.warning("message.oversized", text=text)


PROCESS_MEMORY = PollMemory()


async def poll_account(
    open_source: Callable[[], Awaitable[MailSource]],
    deliverer: Deliverer,
    state: DeliveryState,
    settings: PollSettings,
    memory: PollMemory = PROCESS_MEMORY,
) -> PollResult:
    """Poll one mailbox, in as many sessions as ``expunge`` asks for."""
    result: PollResult | None = None
    while True:
        source = await open_source()
        try:
            more = await _one_session(source, deliverer, state, settings, result, memory)
        except BaseException:
            await source.abort()
            raise
        result = more.result
        if not more.again:
            return result


@dataclass
class _SessionOutcome:
    result: PollResult
    again: bool  # another session is needed (expunge N split the work)


async def _one_session(
    source: MailSource,
    deliverer: Deliverer,
    state: DeliveryState,
    settings: PollSettings,
    previous: PollResult | None,
    memory: PollMemory,
) -> _SessionOutcome:
    listing = await source.list_messages()
    delivered = await asyncio.to_thread(state.delivered)
    read_sizes = {uid: n for (label, uid), n in memory.read_sizes.items() if label == source.label}
    selection = select_messages(listing, delivered, settings.selection, read_sizes)
    first_session = previous is None
    result = previous or _count(source.label, listing, selection)
    if first_session:
        _announce(result, source)
        # Records of messages the server no longer has are garbage; drop them so the store stays
        # as large as the mailbox. Only after a full listing, so nothing present is forgotten:
        # an IMAP listing of unseen mail is not one (a message flagged \Deleted before a crash
        # is not listed, and its record is what lets commit expunge it).
        if getattr(source, "complete_listing", True):
            await asyncio.to_thread(state.forget_absent, [m.uid for m in listing])
    if settings.check_only:
        await source.commit()
        return _SessionOutcome(result, again=False)

    fetch = selection.fetch
    again = False
    if settings.expunge and not settings.selection.keep and len(fetch) > settings.expunge:
        fetch, again = fetch[: settings.expunge], True

    to_delete = list(selection.delete_unread)
    delivered_kept: list[MessageInfo] = []
    total = len(listing)
    progress = _Progress(result, total)
    deleting = not settings.selection.keep
    for info in selection.delete_unread:
        log.info(
            "message.flushed", text=f"flushing message {source.label}:{info.number} of {total}"
        )
    for info in selection.oversized:
        size = max(info.size, read_sizes.get(info.uid, 0))
        memory.warn_oversized(
            source.label,
            info,
            settings.warnings,
            f"skipping message {source.label}:{info.number} ({size} octets): "
            "over the size limit, left on the server",
        )
    limit = settings.selection.limit

    recording = _Recording(state)
    messages = source.retrieve(fetch)
    try:
        while (item := await _next_message(messages, recording)) is not None:
            info, message = item
            failpoints.hit("retrieved")
            message.limit = limit
            if limit and message.complete and message.size > limit:
                await _oversized(source.label, info, message.size, result, memory, settings)
                await recording.wait()  # the previous record waits for no further message
                continue
            result.fetched += 1
            try:
                outcome = await deliverer.deliver(message, ready=recording)
            except MessageTooLarge:
                # The listing under-stated it: `limit` holds for the octets actually read.
                # The deliverer abandoned it uncommitted; it stays, and is read no further.
                result.fetched -= 1
                size = await message.drain()
                await _oversized(source.label, info, size, result, memory, settings)
                await recording.wait()
                continue
            except RetrievalFailed as exc:
                raise exc.error from None  # the source's own error: the session is aborted
            await message.drain()  # a message refused before its body was needed
            failpoints.hit("delivered")
            await recording.wait()  # also when the deliverer stopped before it needed to
            if outcome.delivered or outcome.may_delete:
                # The invariant's step 3: durable before the next message is committed to the
                # MTA (its final dot waits for it) and before any delete is sent.
                recording.start(info.uid)
                result.delivered += outcome.delivered
                if deleting:
                    to_delete.append(info)
                else:
                    delivered_kept.append(info)
            else:
                result.kept += 1
                result.refusals.append(outcome.reason)
                memory.warn_once_about_refusal(source.label, info, outcome)
            progress.message(source.label, info, deleting and outcome.may_delete, outcome)
        await recording.wait()
    finally:
        await recording.abandon()
        with contextlib.suppress(Exception):
            await messages.aclose()  # type: ignore[attr-defined]

    mark_seen = getattr(source, "mark_seen", None)
    if settings.selection.keep and delivered_kept and mark_seen is not None:
        await mark_seen(delivered_kept)  # IMAP: \Seen only after delivery (fetchmail's keep)
    if to_delete:
        confirm = getattr(state, "confirm_claim", None)
        if confirm is not None:  # fleet mode: the row is still ours, else nothing is deleted
            await asyncio.to_thread(confirm)
        await source.delete(to_delete)
        result.deleted += len(to_delete)
        failpoints.hit("deleted")
    failpoints.hit("before_commit")
    await source.commit()
    # A session that delivered nothing cannot make progress by reconnecting.
    return _SessionOutcome(result, again=again and result.delivered > 0)


class _Recording:
    """The one delivered message whose record may still be pending while the next is sent.

    ``start`` notes the UID; ``wait`` (called by the deliverer just before the next message's
    commit point, and by the engine before any delete) writes it durably. The write is one
    small SQLite transaction, done on the event loop: handing it to a thread costs more CPU than
    the write itself. If writes keep taking longer than ``SLOW_RECORD`` seconds (a slow disk;
    ``SLOW_LIMIT`` of them), later ones go to a thread so other accounts' I/O is not held up.
    """

    SLOW_RECORD = 0.005
    SLOW_LIMIT = 3

    def __init__(self, state: DeliveryState) -> None:
        self._state = state
        self._pending: str | None = None
        self._slow = 0

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def start(self, uid: str) -> None:
        assert self._pending is None, "the previous record must be finished first"
        self._pending = uid

    def finish_now(self) -> None:
        """Write the pending record now, without yielding to the event loop, when it is cheap.

        A deliverer calls this right after sending a command, so the write overlaps the
        MTA's work on it; on a slow disk (thread mode) it does nothing and ``wait`` does it.
        """
        if self._pending is not None and self._slow < self.SLOW_LIMIT:
            uid, self._pending = self._pending, None
            began = time.perf_counter()
            self._state.record_delivered([uid])
            self._slow += time.perf_counter() - began > self.SLOW_RECORD
            failpoints.hit("recorded")

    async def __call__(self) -> None:
        await self.wait()

    async def wait(self) -> None:
        """Until the pending record is durable; raises what recording raised."""
        uid, self._pending = self._pending, None
        if uid is None:
            return
        if self._slow >= self.SLOW_LIMIT:
            await asyncio.to_thread(self._state.record_delivered, [uid])
        else:
            began = time.perf_counter()
            self._state.record_delivered([uid])
            self._slow += time.perf_counter() - began > self.SLOW_RECORD
        failpoints.hit("recorded")

    async def abandon(self) -> None:
        """On the way out after an error: the pending message was delivered, so record it if
        the store lets us; the error already on its way out is the one to report."""
        if self._pending is not None:
            with contextlib.suppress(Exception):
                await self.wait()


async def _next_message(
    messages: AsyncIterator[tuple[MessageInfo, Message | bytes]], recording: _Recording
) -> tuple[MessageInfo, Message] | None:
    """The next message, its header read; None at the end. A pending record waits at most
    RECORD_GRACE seconds for it: a slow or stalled next message must not leave the previous one
    delivered and unrecorded for as long as it takes."""
    if not recording.pending:
        item = await anext(messages, None)
    else:
        arriving = asyncio.ensure_future(anext(messages, None))
        try:
            await asyncio.wait({arriving}, timeout=RECORD_GRACE)
            if not arriving.done():
                await recording.wait()
            item = await arriving
        finally:
            arriving.cancel()
    if item is None:
        return None
    info, message = item
    return info, as_message(message)


async def _oversized(
    label: str,
    info: MessageInfo,
    size: int,
    result: PollResult,
    memory: PollMemory,
    settings: PollSettings,
) -> None:
    """A message found over `limit` by the octets read, although the listing said otherwise:
    neither delivered nor deleted, and not fetched again by this process."""
    memory.read_sizes[(label, info.uid)] = size
    result.oversized += 1
    memory.oversized_warned.pop((label, info.uid), None)
    memory.warn_oversized(
        label,
        info,
        settings.warnings,
        f"skipping message {label}:{info.number} ({size} octets read, "
        f"{info.size} listed): over the size limit, left on the server",
    )


def _count(label: str, listing: Sequence[MessageInfo], selection: Selection) -> PollResult:
    return PollResult(
        label=label,
        on_server=len(listing),
        octets=sum(m.size for m in listing),
        seen=selection.seen,
        oversized=len(selection.oversized),
        deferred=selection.deferred,
    )


def _announce(result: PollResult, source: MailSource) -> None:
    user, _, server = source.label.partition("@")
    if not result.on_server:
        log.info("poll.nomail", text=f"No mail for {user} at {server}")
        return
    noun = "message" if result.on_server == 1 else "messages"
    seen = f" ({result.seen} seen)" if result.seen else ""
    log.info(
        "poll.count",
        text=f"{result.on_server} {noun}{seen} for {user} at {server} ({result.octets} octets).",
        messages=result.on_server,
        seen=result.seen,
        octets=result.octets,
    )


class _Progress:
    """fetchmail's per-message progress line."""

    def __init__(self, result: PollResult, total: int) -> None:
        self._total = total
        self._result = result

    def message(
        self, label: str, info: MessageInfo, flushed: bool, outcome: DeliveryResult
    ) -> None:
        state = "flushed" if flushed else "not flushed"
        if not outcome.delivered and not outcome.may_delete:
            state = f"not flushed ({outcome.reason})"
        log.info(
            "message.read",
            text=f"reading message {label}:{info.number} of {self._total} ({info.size} octets) "
            f"{state}",
            number=info.number,
            octets=info.size,
            delivered=outcome.delivered,
        )
