"""Which messages one poll retrieves, deletes unread, or leaves: pure rules, no I/O.

fetchmail's selection, on top of the durable UID store:
- a message already recorded as delivered is never delivered again (unless ``fetchall``): it is
  deleted when ``keep`` is off or ``flush`` is on, and left alone otherwise. This is also how a
  crash is recovered: delivered-and-recorded messages whose DELE never reached the server are
  simply deleted on the next poll;
- a message over ``limit`` octets stays on the server (``limitflush`` deletes it instead); so
  does one that an earlier poll found larger than the listing said (``read_sizes``), and that
  one is never flushed: only what the server claims is trusted to delete unread;
- at most ``fetchlimit`` messages are retrieved per poll (0 = no limit).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from fetchd.source import MessageInfo


@dataclass(frozen=True, slots=True)
class SelectionPolicy:
    """The rc options that decide selection (names as in the rc file / configdump)."""

    keep: bool = False
    fetchall: bool = False
    flush: bool = False
    limit: int = 0  # octets; 0 = no limit
    limitflush: bool = False
    fetchlimit: int = 0  # messages per poll; 0 = no limit


@dataclass(frozen=True, slots=True)
class Selection:
    """The outcome of selection for one mailbox listing."""

    fetch: tuple[MessageInfo, ...]  # retrieve and deliver, in this order
    delete_unread: tuple[
        MessageInfo, ...
    ]  # delete without retrieving (already delivered; limitflush)
    oversized: tuple[MessageInfo, ...]  # over `limit`, left on the server
    seen: int  # messages on the server already recorded as delivered
    deferred: int  # new messages left for a later poll because of fetchlimit

    @property
    def new(self) -> int:
        """Messages on the server not yet delivered (fetched now or later, or oversized)."""
        return len(self.fetch) + self.deferred + len(self.oversized)


def select_messages(
    listing: Sequence[MessageInfo],
    delivered: Collection[str],
    policy: SelectionPolicy,
    read_sizes: Mapping[str, int] | None = None,
) -> Selection:
    """Apply fetchmail's selection rules to one listing; ``read_sizes``: octets actually read
    of some UIDs by an earlier poll."""
    read_sizes = read_sizes or {}
    fetch: list[MessageInfo] = []
    delete_unread: list[MessageInfo] = []
    oversized: list[MessageInfo] = []
    seen = deferred = 0
    for info in listing:
        already = info.uid in delivered
        seen += already
        if already and not policy.fetchall:
            if not policy.keep or policy.flush:
                delete_unread.append(info)
            continue
        if policy.limit and info.size > policy.limit:
            (delete_unread if policy.limitflush else oversized).append(info)
            continue
        if policy.limit and read_sizes.get(info.uid, 0) > policy.limit:
            oversized.append(info)
            continue
        if policy.fetchlimit and len(fetch) >= policy.fetchlimit:
            deferred += 1
            continue
        fetch.append(info)
    return Selection(tuple(fetch), tuple(delete_unread), tuple(oversized), seen, deferred)
