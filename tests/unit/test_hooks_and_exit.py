"""preconnect/postconnect commands and fetchmail's combined exit status."""

from __future__ import annotations

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


async def test_hook_timeout_kills_it():
    """A hook that hangs is killed at the deadline and reported."""
    with pytest.raises(HookError, match="did not finish"):
        await run_hook("postconnect", "sleep 30", "joe@example", timeout=0.2)
