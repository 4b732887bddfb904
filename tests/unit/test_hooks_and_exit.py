"""preconnect/postconnect commands and fetchmail's combined exit status."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from fetchd.errors import ExitCode, HookError
from fetchd.hooks import run_hook
from fetchd.outcome import combine_exit_codes


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ([], 1),
        ([1, 1], 1),
        ([3, 0, 2], 0),
        ([1, 2], 2),
        ([2, 1], 1),
        ([10], 10),
    ],
)
def test_combined_exit_status(codes, expected):
    """Any account with mail wins; otherwise the last account's status, as in fetchmail."""
    assert combine_exit_codes(codes) == expected


async def test_hook_success_runs_through_the_shell(tmp_path):
    """A hook runs through /bin/sh, so shell syntax in the rc file works."""
    marker = tmp_path / "ran"
    await run_hook("preconnect", f"true && echo yes > {marker}", "joe@example", timeout=10)
    assert marker.read_text() == "yes\n"


async def test_hook_failure_is_a_syntax_class_error():
    """A failing hook raises HookError (exit 5) naming the command kind, account and status."""
    with pytest.raises(HookError, match=r"preconnect command for joe@example failed with status 3"):
        await run_hook("preconnect", "exit 3", "joe@example", timeout=10)
    assert HookError.exit_code == ExitCode.SYNTAX


async def test_hook_timeout_kills_it(started_shells: list[asyncio.subprocess.Process]) -> None:
    """A hook that hangs is killed at the deadline and reported: the shell and the command it
    started are gone, not left running behind the error."""
    with pytest.raises(HookError, match="did not finish"):
        await run_hook("postconnect", "sleep 30 & sleep 30; wait", "joe@example", timeout=0.5)
    [shell] = started_shells
    assert shell.returncode == -signal.SIGKILL  # killed and reaped by run_hook
    # Nothing of its process group is left (SIGKILL reaches the sleeps asynchronously).
    deadline = asyncio.get_running_loop().time() + 5
    while group_members(shell.pid) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    assert group_members(shell.pid) == []


async def test_a_cancelled_hook_is_killed_and_waited_for(
    tmp_path: Path, started_shells: list[asyncio.subprocess.Process]
) -> None:
    """A daemon stopping during a preconnect command: the command's whole process group is
    killed (here the shell's background child too) and the shell is waited for."""
    child_pid = tmp_path / "child"
    hook = asyncio.create_task(
        run_hook("preconnect", f"sleep 30 & echo $! > {child_pid}; wait", "joe@example", 60)
    )
    while not child_pid.exists() or not child_pid.read_text().strip():
        await asyncio.sleep(0.05)
    hook.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(hook, 10)
    [shell] = started_shells
    assert shell.returncode == -signal.SIGKILL
    # The background sleep went with its group. SIGKILL reaches it asynchronously, so it may
    # still be on its way out when the shell has been reaped: give it a few seconds.
    assert await ends_within(int(child_pid.read_text()), seconds=5)


async def ends_within(pid: int, seconds: float) -> bool:
    """Whether ``pid`` stops running within ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while running(pid):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def running(pid: int) -> bool:
    """Whether ``pid`` is alive (a killed orphan may linger as a zombie until init reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (zombies count as gone)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members
