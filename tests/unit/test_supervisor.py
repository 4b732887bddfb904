"""Stopping tasks that swallow a cancellation, as Python 3.11's wait_for can."""

from __future__ import annotations

import asyncio

from fetchd.supervisor import cancel_and_wait


async def test_a_task_that_swallows_one_cancellation_is_still_stopped() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # what wait_for does when the reply and the cancel coincide

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait({task}), 5)
    assert task.cancelled() and swallowed == 1


async def test_finished_tasks_are_left_alone() -> None:
    done = asyncio.create_task(asyncio.sleep(0, result="ok"))
    await done
    await cancel_and_wait({done})
    assert done.result() == "ok"
