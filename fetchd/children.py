"""Ending the commands we start (MDAs, preconnect and postconnect).

A child is started in its own session, so that killing its process group also ends whatever the
shell started. It must then be waited for: an unwaited child keeps asyncio's transport open, and
a stopping daemon must not leave zombies or pipes behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

REAP_SECONDS = 5.0  # SIGKILL cannot be ignored; this only bounds a kernel that is very slow


async def kill_and_reap(process: asyncio.subprocess.Process) -> None:
    """SIGKILL ``process``'s group and wait for it to end.

    The wait goes on through further cancellations (a stopping daemon cancels its polls again
    until they end), and a cancellation that arrived meanwhile is raised once the child is gone.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    ended = asyncio.ensure_future(process.wait())
    deadline = asyncio.get_running_loop().time() + REAP_SECONDS
    cancelled = False
    while not ended.done():
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            ended.cancel()
            break
        try:
            await asyncio.wait({ended}, timeout=remaining)  # never cancels ``ended`` itself
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
