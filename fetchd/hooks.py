"""preconnect and postconnect: shell commands run around a poll, as fetchmail runs them.

fetchmail hands the command to the shell and treats a non-zero exit as a configuration error
(PS_SYNTAX): the account is skipped. We do the same, and say which command failed and how.
"""

from __future__ import annotations

import asyncio

import structlog

from fetchd.children import kill_and_reap
from fetchd.errors import HookError

log = structlog.get_logger("fetchd.hooks")


async def run_hook(kind: str, command: str, account: str, timeout: float) -> None:
    """Run ``command`` through /bin/sh; raise HookError unless it exits 0 within ``timeout``."""
    log.debug("hook.start", kind=kind, account=account)
    process = await asyncio.create_subprocess_shell(
        command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout):
            output, _ = await process.communicate()
    except TimeoutError:
        raise HookError(f"{kind} command for {account} did not finish in {timeout:g} s") from None
    finally:
        # Timed out, or cancelled by a stopping daemon. The shell's children hold our pipes:
        # the whole group goes, not just the shell.
        if process.returncode is None:
            await kill_and_reap(process)
    for line in output.decode("utf-8", "replace").splitlines():
        log.info("hook.output", kind=kind, account=account, text=f"{kind}: {line}")
    status = process.returncode
    if status is not None and status != 0:
        how = f"was killed by signal {-status}" if status < 0 else f"failed with status {status}"
        raise HookError(f"{kind} command for {account} {how}")
