"""systemd's notification protocol (sd_notify(3)) in a few lines, without a dependency.

Under ``Type=notify`` systemd passes a datagram socket in ``$NOTIFY_SOCKET`` (a path, or an
abstract name starting with ``@``) and, with ``WatchdogSec=``, the interval in
``$WATCHDOG_USEC``. Outside systemd every call here does nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

import structlog

log = structlog.get_logger("fetchd.daemon")

MAX_STATUS_LENGTH = 200


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self._address = address if address.startswith(("/", "\0")) else None
        self._watchdog = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, **fields: str) -> None:
        """One datagram of KEY=value lines; a lost notification is logged, never fatal."""
        if self._address is None:
            return
        lines = (
            f"{key}={' '.join(value.split())[:MAX_STATUS_LENGTH]}" for key, value in fields.items()
        )
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            log.debug("sdnotify.failed", error=str(exc))

    def ready(self, status: str) -> None:
        self.send(READY="1", STATUS=status, MAINPID=str(os.getpid()))

    def status(self, status: str) -> None:
        self.send(STATUS=status)

    def stopping(self) -> None:
        self.send(STOPPING="1", STATUS="stopping")

    def reloading(self) -> None:
        # systemd 253+ wants the monotonic time with RELOADING=1 to order it against READY=1.
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send(RELOADING="1", MONOTONIC_USEC=str(now))

    async def keep_watchdog_fed(self) -> None:
        """Ping at half the watchdog interval. The pings come from the event loop itself, so a
        loop that is stuck (a busy loop, a blocking call) stops them and systemd restarts us."""
        if self._address is None or self._watchdog is None:
            return
        while True:
            self.send(WATCHDOG="1")
            await asyncio.sleep(self._watchdog / 2)


def _watchdog_interval(env: os._Environ[str] | dict[str, str]) -> float | None:
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (systemd sets it for the main one)
    return int(usec) / 1_000_000
