"""A one-shot run: each selected account polled once, in turn, as fetchmail does; the exit
status combines the accounts' outcomes by fetchmail's rule."""

from __future__ import annotations

import asyncio

from fetchd.account import RunMemory, poll_user
from fetchd.config import Config
from fetchd.config.model import Server
from fetchd.options import Options
from fetchd.outcome import combine_exit_codes
from fetchd.state import UIDStore


async def poll_entries(
    config: Config, entries: list[Server], options: Options, memory: RunMemory
) -> int:
    """Poll each selected entry once, in turn (daemon mode is fetchd.daemon.service's)."""
    store = await asyncio.to_thread(UIDStore.open)
    try:
        codes = []
        for server in entries:
            for user in server.users:
                codes.append(await poll_user(config, server, user, options, store, memory=memory))
        return combine_exit_codes(codes)
    finally:
        store.close()
