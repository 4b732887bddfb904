"""Daemon mode: one task per poll entry, woken by its interval, a signal or the control socket.

- An entry polls every ``poll_interval`` seconds, or every K-th cycle with ``interval K``.
- A failing account backs off (2, 4, 8 cycles, with jitter) and its error is logged when it
  changes, not at every poll; the other entries carry on.
- At most MAX_CONNECTIONS accounts poll at once.
- Stopping (SIGTERM, SIGINT, ``--quit``) starts no new poll and abandons polls in flight: a poll
  that is cancelled drops its server session without committing, so nothing it did not deliver
  and record is deleted (the delivery invariant, fetchd.poll). A second signal exits at once, and
  so does a stop that has not ended within ``stop_deadline`` seconds (a thread's timer, so that
  it fires even if the event loop is stuck). The stop is requested first, before anything that
  could fail or block (a log line, sd_notify) is tried.
- SIGHUP, ``reload`` or a change of the rc file re-read it; a file that cannot be read or
  parsed keeps the running configuration, logs why at error level and shows it in ``--status``
  (with the time); an account the new file drops leaves ``--status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from fetchd import __version__, logconfig
from fetchd.config.model import Config, Server
from fetchd.daemon.sdnotify import Notifier
from fetchd.errors import ExitCode, FetchdError

if TYPE_CHECKING:  # prometheus-client, which it needs, is imported only with --metrics
    from fetchd.daemon.metrics import PollMetrics

log = structlog.get_logger("fetchd.daemon")

MAX_CONNECTIONS = 8
MAX_BACKOFF_CYCLES = 8
RC_CHECK_SECONDS = 5.0
CANCEL_RETRY_SECONDS = 0.2
IDLE_HEALTHY_SECONDS = 60.0  # an IDLE that failed after this long is re-opened at once
STOP_DEADLINE_SECONDS = 10.0  # the daemon's: a graceful stop longer than this is forced


@dataclass
class AccountStatus:
    """What ``fetchd --status`` shows of one account."""

    account: str
    state: str = "waiting"
    last_poll: float | None = None
    outcome: int | None = None
    messages: int = 0
    octets: int = 0
    next_due: float | None = None
    error: str | None = None
    stage: str | None = None  # where the last poll stopped, if it failed ("polling", "dns"...)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Entry:
    server: Server
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    failures: int = 0


async def cancel_and_wait(tasks: set[asyncio.Task[Any]]) -> None:
    """Cancel the tasks and wait for them, cancelling again those that are still running.

    Python 3.11's ``asyncio.wait_for`` (aiosmtplib awaits every SMTP reply with it) swallows a
    cancellation that arrives just as the awaited reply does; the poll then carries on. So one
    ``cancel()`` is not enough to stop it: repeat until the task has really ended.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_RETRY_SECONDS)


def outcome_label(code: int) -> str:
    """fetchmail's exit code as a metrics label: ``mail``, ``nomail``, ``auth``..."""
    try:
        return ExitCode(code).name.lower()
    except ValueError:
        return "undefined"


PollOne = Callable[[Config, Server, Any, AccountStatus], Any]  # -> awaitable exit code


class Supervisor:
    def __init__(
        self,
        config: Config,
        entries: list[Server],
        poll_one: PollOne,
        reload: Callable[[], tuple[Config, list[Server]]],
        *,
        idle_wait: Callable[[Config, Server, Any], Coroutine[Any, Any, None]] | None = None,
        can_idle: Callable[[Server], bool] = lambda server: False,
        notifier: Notifier | None = None,
        stop_deadline: float | None = None,
        force_exit: Callable[[int], Any] | None = None,
        metrics: PollMetrics | None = None,
    ) -> None:
        self.config = config
        self.entries = [_Entry(server) for server in entries]
        self.status: dict[str, AccountStatus] = {}
        self._poll_one = poll_one
        self._reload = reload
        self._idle_wait = idle_wait
        self._can_idle = can_idle  # entries that wait in IMAP IDLE between polls
        self._stopping = asyncio.Event()
        self._restart = asyncio.Event()
        self._connections = asyncio.Semaphore(MAX_CONNECTIONS)
        self._signals = 0
        self._rc_mtime = self._mtime()
        self._notifier = notifier or Notifier({})
        self._stop_deadline = stop_deadline
        self._force_exit = force_exit or (lambda code: os._exit(code))
        self._deadline_timer: threading.Timer | None = None
        self.metrics = metrics  # --metrics: every poll counted there
        self.started = time.time()  # for display; the uptime counts on the monotonic clock
        self._started_monotonic = time.monotonic()
        self.reload_failed_at: float | None = None  # the last reload, if it failed
        self.reload_error: str | None = None

    # --- requests from signals and the control socket -----------------------------------

    def stop(self) -> None:
        self._signals += 1
        if self._signals > 1:
            try:
                log.warning("daemon.forced", text="second stop request: exiting at once")
                logconfig.flush(0.2)
            finally:
                self._force_exit(int(ExitCode.MAIL))
            return
        self._stopping.set()
        if self._stop_deadline is not None:
            self._deadline_timer = threading.Timer(self._stop_deadline, self._stop_overdue)
            self._deadline_timer.daemon = True
            self._deadline_timer.start()
        with contextlib.suppress(Exception):  # a report only: the stop is under way already
            log.info("daemon.stopping", text="stopping: no new polls; polls in flight abandoned")
            self._notifier.stopping()

    def _stop_overdue(self) -> None:
        try:
            log.warning(
                "daemon.stop_overdue",
                text=f"not stopped after {self._stop_deadline} s: exiting at once",
            )
            logconfig.flush(0.2)
        finally:
            self._force_exit(int(ExitCode.MAIL))

    def close(self) -> None:
        """The stop is complete: the deadline is no longer needed."""
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None

    def wake(self, account: str | None = None) -> bool:
        """Poll now: every entry, or the one named (poll name, or user@pollname)."""
        matched = False
        for entry in self.entries:
            names = {entry.server.pollname, entry.server.host}
            names |= {f"{u.remote}@{entry.server.pollname}" for u in entry.server.users}
            if account is None or account in names:
                entry.failures = 0
                entry.wake.set()
                matched = True
        return matched or account is None

    def request_reload(self) -> None:
        with contextlib.suppress(Exception):
            self._notifier.reloading()
        try:
            config, entries = self._reload()
        except Exception as exc:  # a reload must never take the daemon down
            kind = type(exc).__name__
            if isinstance(exc, FetchdError):
                reason = str(exc)
            elif isinstance(exc, OSError):
                reason = exc.strerror or kind
            else:
                reason = f"internal error ({kind})"
            self.reload_failed_at, self.reload_error = time.time(), reason
            log.error(
                "daemon.reload_failed",
                text=f"reload failed, keeping the running configuration: {reason}",
            )
            with contextlib.suppress(Exception):
                self._notifier.ready(self.summary())
            return
        self.reload_failed_at = self.reload_error = None
        self.config = config
        self.entries = [_Entry(server) for server in entries]
        # An account the new file no longer has leaves --status.
        kept = {f"{u.remote}@{s.pollname}" for s in entries for u in s.users}
        self.status = {key: value for key, value in self.status.items() if key in kept}
        self._rc_mtime = self._mtime()
        self._restart.set()
        log.info("daemon.reloaded", text=f"reloaded {config.filename}")
        with contextlib.suppress(Exception):
            self._notifier.ready(self.summary())

    def summary(self) -> str:
        """One line for systemd's STATUS= (``systemctl --user status fetchd``)."""
        polled = [s for s in self.status.values() if s.last_poll is not None]
        failing = sum(1 for s in polled if s.error)
        messages = sum(s.messages for s in self.status.values())
        text = f"{len(self.entries)} entries; {len(polled)} accounts polled"
        if polled:
            last = max(s.last_poll for s in polled if s.last_poll is not None)
            text += f", last at {time.strftime('%H:%M:%S', time.localtime(last))}"
        text += f"; {messages} messages fetched"
        return text + (f"; {failing} failing" if failing else "")

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """A control-socket request (already checked by fetchd.daemon.control)."""
        command = request["cmd"]
        if command == "quit":
            self.stop()
            return {"ok": True, "pid": os.getpid()}
        if command == "poll":
            if not self.wake(request.get("account")):
                return {"ok": False, "error": f"no account {request.get('account')!r}"}
            return {"ok": True}
        if command == "reload":
            self.request_reload()
            return {"ok": True}
        return {
            "ok": True,
            "daemon": self.describe(),
            "accounts": [s.as_dict() for s in self.status.values()],
        }

    def describe(self) -> dict[str, Any]:
        """The daemon itself, for ``--status``."""
        return {
            "pid": os.getpid(),
            "version": __version__,
            "rcfile": self.config.filename,
            "started": self.started,
            "uptime": round(time.monotonic() - self._started_monotonic, 1),
            "reload_failed_at": self.reload_failed_at,
            "reload_error": self.reload_error,
            "metrics": str(self.metrics.bound) if self.metrics and self.metrics.bound else None,
            # asyncio tasks alive in the daemon (one per entry, a few of its own, those a poll
            # starts): a count that keeps growing is a leak (contrib/soak/soak.py watches it).
            "tasks": len(asyncio.all_tasks()),
        }

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGUSR1, self.wake)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    # --- running ------------------------------------------------------------------------

    async def run(self) -> int:
        while not self._stopping.is_set():
            self._restart.clear()
            tasks = [asyncio.create_task(self._run_entry(entry)) for entry in self.entries]
            watcher = asyncio.create_task(self._watch_rc_file())
            stop = asyncio.create_task(self._stopping.wait())
            restart = asyncio.create_task(self._restart.wait())
            await asyncio.wait({stop, restart}, return_when=asyncio.FIRST_COMPLETED)
            await cancel_and_wait({*tasks, watcher, stop, restart})
        log.info("daemon.stopped", text="fetchd daemon stopped")
        return int(ExitCode.MAIL)

    async def _run_entry(self, entry: _Entry) -> None:
        server = entry.server
        cycle = 0
        while True:
            forced = entry.wake.is_set()
            entry.wake.clear()
            due = cycle % max(server.interval, 1) == 0
            backing_off = entry.failures and cycle % min(2**entry.failures, MAX_BACKOFF_CYCLES)
            if forced or (due and not backing_off):
                await self._poll_entry(entry)
            cycle += 1
            delay = self.config.globals.poll_interval * random.uniform(0.95, 1.05)
            for user in server.users:
                status = self._status(server, user)
                status.next_due = time.time() + delay
            if self._idle_wait is not None and self._can_idle(server):
                await self._idle_or_wake(entry)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await entry.wake.wait()

    async def _idle_or_wake(self, entry: _Entry) -> None:
        """IDLE until mail arrives (or a wake request).

        An IDLE that had been up for a while and then broke (the server restarted, or
        keepalive found the connection dead) is re-opened at once: the entry polls again and
        goes back into IDLE. One that fails soon after it began falls back to the interval,
        so a server that refuses IDLE is not hammered.
        """
        assert self._idle_wait is not None
        began = time.monotonic()
        idle = asyncio.create_task(
            self._idle_wait(self.config, entry.server, entry.server.users[0])
        )
        woken = asyncio.create_task(entry.wake.wait())
        try:
            await asyncio.wait({idle, woken}, return_when=asyncio.FIRST_COMPLETED)
            if idle.done() and idle.exception() is not None:
                if time.monotonic() - began >= IDLE_HEALTHY_SECONDS:
                    log.warning(
                        "idle.lost",
                        text=f"IDLE connection lost ({idle.exception()}); reconnecting",
                    )
                    return
                log.warning(
                    "idle.failed",
                    text=f"IDLE failed ({idle.exception()}); waiting for the next interval instead",
                )
                async with asyncio.timeout(self.config.globals.poll_interval):
                    await entry.wake.wait()
        except TimeoutError:
            pass
        finally:
            await cancel_and_wait({idle, woken})
            # An IDLE that failed just as this entry was cancelled (a reload as the server
            # went away): its error was seen by no one; collect it, or the loop reports it.
            if not idle.cancelled() and idle.exception() is not None:
                log.debug("idle.ended", error=type(idle.exception()).__name__)

    async def _poll_entry(self, entry: _Entry, *, slot_held: bool = False) -> None:
        """Poll the entry's users in turn, each in one of the MAX_CONNECTIONS slots (the
        caller's own, with ``slot_held``)."""
        failed = False
        for user in entry.server.users:
            status = self._status(entry.server, user)
            async with contextlib.nullcontext() if slot_held else self._connections:
                status.state = "polling"
                began, messages, octets = time.monotonic(), status.messages, status.octets
                if self.metrics is not None:
                    self.metrics.poll_started()
                code: int | None = None  # None: abandoned (cancelled) before its end
                try:
                    code = await self._poll_one(self.config, entry.server, user, status)
                except Exception as exc:  # one poll's bug must not end the entry
                    log.error(
                        "poll.internal_error",
                        text=f"internal error polling {status.account}: {type(exc).__name__}",
                    )
                    status.error = f"internal error: {type(exc).__name__}"
                    status.stage = "internal"
                    code = int(ExitCode.UNDEFINED)
                finally:
                    status.state = "waiting"
                    if self.metrics is not None:  # an abandoned poll is counted too
                        ok = code in (ExitCode.MAIL, ExitCode.NOMAIL)
                        self.metrics.poll_finished(
                            "abandoned" if code is None else outcome_label(code),
                            status.messages - messages,
                            status.octets - octets,
                            time.monotonic() - began,
                            None if ok else "abandoned" if code is None else status.stage,
                        )
            failed = failed or code not in (ExitCode.MAIL, ExitCode.NOMAIL)
        entry.failures = min(entry.failures + 1, 3) if failed else 0
        self._notifier.status(self.summary())

    def _status(self, server: Server, user: Any) -> AccountStatus:
        key = f"{user.remote}@{server.pollname}"
        if key not in self.status:
            self.status[key] = AccountStatus(key)
        return self.status[key]

    def _mtime(self) -> float | None:
        try:
            return os.stat(self.config.filename).st_mtime
        except OSError:
            return None

    async def _watch_rc_file(self) -> None:
        """fetchmail restarts itself when its rc file changes; we reload."""
        while True:
            await asyncio.sleep(RC_CHECK_SECONDS)
            mtime = self._mtime()
            if mtime is not None and mtime != self._rc_mtime:
                self._rc_mtime = mtime
                log.info("daemon.rc_changed", text=f"{self.config.filename} changed")
                self.request_reload()
