"""The fetchd command as a user runs it: a fresh process with its own home and state."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path


async def run_fetchd(
    home: Path, rc: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> tuple[int, str]:
    """``fetchd -f RC ARGS`` with HOME and XDG_STATE_HOME under ``home``; its exit status and
    its output (stdout and stderr together)."""
    environment = {
        "HOME": str(home),
        "XDG_STATE_HOME": str(home / "state"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **(env or {}),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fetchd", "-f", str(rc), *args,
        env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode()
