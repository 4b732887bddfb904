"""Crash points for the crash-safety tests: kill -9 ourselves at a named step of a poll.

``FETCHD_FAILPOINTS="recorded:57"`` makes the 57th pass through the ``recorded`` point send
SIGKILL to this process, which is what a power cut or an OOM kill looks like to the mail server,
the MTA and the UID store. Unset (always, outside tests), ``hit`` is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_ARMED: dict[str, int] = {}
for _spec in filter(None, os.environ.get("FETCHD_FAILPOINTS", "").split(",")):
    _name, _, _count = _spec.partition(":")
    _ARMED[_name.strip()] = int(_count or 1)


def hit(name: str) -> None:
    """Pass the named point; die here if the tests armed it for this pass."""
    if name not in _ARMED:
        return
    _ARMED[name] -= 1
    if _ARMED[name] <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
