"""Selection rules: what one poll fetches, deletes unread, or leaves on the server."""

from __future__ import annotations

import pytest

from fetchd.selection import SelectionPolicy, select_messages
from fetchd.source import MessageInfo


def listing(*sizes: int) -> list[MessageInfo]:
    return [MessageInfo(n, f"uid{n}", size) for n, size in enumerate(sizes, start=1)]


def numbers(infos: tuple[MessageInfo, ...]) -> list[int]:
    return [m.number for m in infos]


MAILBOX = listing(100, 200, 300, 400)
DELIVERED = {"uid1", "uid3"}


@pytest.mark.parametrize(
    ("policy", "fetch", "delete_unread", "oversized"),
    [
        (SelectionPolicy(), [2, 4], [1, 3], []),
        (SelectionPolicy(keep=True), [2, 4], [], []),
        (SelectionPolicy(keep=True, flush=True), [2, 4], [1, 3], []),
        (SelectionPolicy(fetchall=True), [1, 2, 3, 4], [], []),
        (SelectionPolicy(keep=True, fetchall=True), [1, 2, 3, 4], [], []),
        (SelectionPolicy(keep=True, limit=250), [2], [], [4]),
        (SelectionPolicy(keep=True, limit=250, limitflush=True), [2], [4], []),
        (SelectionPolicy(keep=True, fetchlimit=1), [2], [], []),
        (SelectionPolicy(fetchall=True, fetchlimit=3), [1, 2, 3], [], []),
    ],
)
def test_rules(policy, fetch, delete_unread, oversized):
    """Each rc option selects exactly the messages fetchmail would."""
    sel = select_messages(MAILBOX, DELIVERED, policy)
    assert numbers(sel.fetch) == fetch
    assert numbers(sel.delete_unread) == delete_unread
    assert numbers(sel.oversized) == oversized
    assert sel.seen == 2


def test_recorded_message_is_never_fetched_again():
    """After a crash, a recorded message is deleted unread (keep off), never delivered twice."""
    sel = select_messages(MAILBOX, {"uid1", "uid2", "uid3", "uid4"}, SelectionPolicy())
    assert sel.fetch == ()
    assert numbers(sel.delete_unread) == [1, 2, 3, 4]


def test_fetchlimit_counts_deferred():
    """Messages beyond fetchlimit are counted as deferred, still new."""
    sel = select_messages(MAILBOX, set(), SelectionPolicy(fetchlimit=2))
    assert numbers(sel.fetch) == [1, 2]
    assert sel.deferred == 2
    assert sel.new == 4


def test_a_size_read_before_over_limit_is_oversized_and_never_flushed() -> None:
    """A message an earlier poll read larger than ``limit`` stays, even under limitflush."""
    policy = SelectionPolicy(limit=250, limitflush=True)
    selection = select_messages(listing(100, 200), set(), policy, {"uid2": 251})
    assert numbers(selection.fetch) == [1]
    assert numbers(selection.oversized) == [2]
    assert selection.delete_unread == ()
