"""A row's claim when its worker's database session is killed from PostgreSQL's side
(``pg_terminate_backend``) while the worker lives on: the poll's check before any delete fails,
the watcher marks the claim lost, and another worker takes the row only after the grace."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from fetchd.errors import ClaimLostError
from fetchd.fleet.pgstate import (
    CURRENT_CLAIM,
    FLEET_LOCK_SPACE,
    TAKEOVER_GRACE_SECONDS,
    PGUIDStore,
    RowClaims,
)


def terminate_holder(dsn: str, row_id: int) -> int:
    """End, from PostgreSQL's side, the session holding the row's advisory lock."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        [(pid,)] = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid::bigint = %s AND objid::bigint = %s",
            [FLEET_LOCK_SPACE, row_id],
        ).fetchall()
        # With a timeout it returns once the backend is gone (PostgreSQL 14+), not when the
        # signal is sent: the lock is then released for sure.
        conn.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
    return int(pid)


async def test_a_claim_whose_session_was_killed_is_lost_and_taken_over_after_the_grace(
    postfix_db: str,
) -> None:
    """While its session lives the claim is confirmed; once PostgreSQL ended it the
    confirmation before a delete raises ClaimLostError, the watcher marks the claim lost
    within a few seconds, and a second worker gets the row only after the grace."""
    store = await asyncio.to_thread(PGUIDStore.connect, postfix_db)
    counted: list[int] = []  # what --metrics counts as fetchd_lease_takeovers_total
    one = RowClaims(postfix_db, "one")
    two = RowClaims(postfix_db, "two", on_takeover=lambda: counted.append(1))
    try:
        state = await asyncio.to_thread(store.account, "pop.example", "u1")
        claim = await one.claim(7, 0, "f")
        assert claim is not None
        assert await two.claim(7, 0, "f") is None  # held: the other worker is refused
        token = CURRENT_CLAIM.set(claim)
        try:
            await asyncio.to_thread(state.confirm_claim)  # held: no error
            await asyncio.to_thread(terminate_holder, postfix_db, 7)
            with pytest.raises(ClaimLostError, match="row 7"):
                await asyncio.to_thread(state.confirm_claim)
        finally:
            CURRENT_CLAIM.reset(token)
        async with asyncio.timeout(5):
            await claim.lost.wait()
        began = time.monotonic()
        while (taken := await two.claim(7, 0, "f")) is None:
            assert time.monotonic() - began < TAKEOVER_GRACE_SECONDS + 5, "never taken over"
            await asyncio.sleep(0.2)
        waited = time.monotonic() - began
        assert waited >= TAKEOVER_GRACE_SECONDS - 0.5, f"taken over after {waited:.1f} s only"
        assert two.takeovers == 1 and counted == [1]
        await two.release(taken)
        again = await one.claim(7, 0, "f")  # released cleanly: no grace, and no takeover
        assert again is not None and one.takeovers == 0
        # Claimed on a new connection (the old one's session was ended): the claim names the
        # new session, so the check before a delete finds it held.
        assert again.pid != claim.pid
        token = CURRENT_CLAIM.set(again)
        try:
            await asyncio.to_thread(state.confirm_claim)
        finally:
            CURRENT_CLAIM.reset(token)
        await one.release(again)
    finally:
        await one.close()
        await two.close()
        store.close()
