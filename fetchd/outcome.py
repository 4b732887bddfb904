"""fetchmail's exit status for a run over several accounts: pure."""

from __future__ import annotations

from collections.abc import Iterable

from fetchd.errors import ExitCode


def combine_exit_codes(codes: Iterable[int]) -> int:
    """0 if any account delivered mail; otherwise the status of the last account polled.

    This is fetchmail's rule (fetchmail(1), EXIT CODES). No account at all is "no mail".
    """
    last = ExitCode.NOMAIL.value
    for code in codes:
        if code == ExitCode.MAIL:
            return ExitCode.MAIL.value
        last = code
    return last
