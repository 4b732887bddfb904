"""Daemon mode around the supervisor: one daemon per user, detaching, the control socket, and
the command-line side of it (``--quit``, ``--poll``, ``--status``, waking a running daemon)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from fetchd import __version__, control, logconfig
from fetchd.config import Config, ParseEnvironment, load_rcfile
from fetchd.config.check import check_config
from fetchd.config.model import Server
from fetchd.errors import ConfigError, ExitCode
from fetchd.options import Options
from fetchd.overrides import apply_overrides, select_entries
from fetchd.runtime import DaemonLock, PidFile, ensure_private_dir, runtime_dir
from fetchd.sdnotify import Notifier
from fetchd.state import UIDStore
from fetchd.supervisor import STOP_DEADLINE_SECONDS, AccountStatus, Supervisor

log = structlog.get_logger("fetchd.daemon")


def socket_path() -> Path:
    return runtime_dir() / "control.sock"


def control_command(options: Options) -> int | None:
    """``--quit``, ``--poll``, ``--status``; None when the command line asks for none of them."""
    if options.quit:
        answer = control.request(socket_path(), "quit")
        if answer is None:
            print("fetchd: no other fetchd is running", file=sys.stderr)
            return int(ExitCode.LOCK)
        print(f"fetchd: fetchd daemon (pid {answer.get('pid', '?')}) is stopping")
        return 0
    if options.poll is not None:
        account = None if options.poll == "*" else options.poll
        answer = control.request(socket_path(), "poll", account)
        if answer is None:
            print("fetchd: no fetchd daemon is running", file=sys.stderr)
            return int(ExitCode.LOCK)
        if not answer.get("ok"):
            print(f"fetchd: {answer.get('error', 'refused')}", file=sys.stderr)
            return int(ExitCode.SYNTAX)
        print("fetchd: background fetchd awakened")
        return 0
    if options.status:
        answer = control.request(socket_path(), "status")
        if answer is None:
            print("fetchd: no fetchd daemon is running", file=sys.stderr)
            return int(ExitCode.LOCK)
        print(format_status(answer.get("accounts", [])), end="")
        return 0
    return None


def wake_running_daemon() -> bool:
    """fetchmail's behaviour when run while its daemon runs: wake it for a poll now."""
    if not DaemonLock(runtime_dir()).held_by_other():
        return False
    answer = control.request(socket_path(), "poll")
    if answer is None or not answer.get("ok"):
        return False
    print("fetchd: background fetchd awakened")
    return True


def _when(stamp: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(stamp)) if stamp else "-"


def format_status(accounts: list[dict[str, Any]]) -> str:
    header = (
        f"{'account':<32} {'state':<8} {'last poll':<9} {'result':<6} {'messages':>8} "
        f"{'octets':>12} {'next due':<9} error\n"
    )
    rows = [
        f"{str(a.get('account'))[:32]:<32} {a.get('state')!s:<8} "
        f"{_when(a.get('last_poll')):<9} {a.get('outcome', '-')!s:<6} "
        f"{a.get('messages', 0):>8} {a.get('octets', 0):>12} {_when(a.get('next_due')):<9} "
        f"{(a.get('error') or '')[:120]}\n"
        for a in accounts
    ]
    return header + "".join(rows)


def detach(logfile: str | None) -> None:
    """Go to the background as fetchmail does: double fork, new session, no terminal; output to
    the ``logfile`` when there is one (opened first, so that an error still reaches the user)."""
    null = os.open(os.devnull, os.O_RDWR)
    target = null
    if logfile:
        try:
            # Created private when missing: a log names accounts and servers.
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            target = os.open(logfile, flags, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot open logfile {logfile}: {exc.strerror}") from None
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    os.dup2(null, 0)
    os.dup2(target, 1)
    os.dup2(target, 2)


def run_daemon(
    config: Config,
    entries: list[Server],
    options: Options,
    env: ParseEnvironment,
    poll_one: Callable[..., Any],
    run_loop: Callable[[Callable[[], Any]], int],
    idle_wait: Callable[[Config, Server, Any], Any] | None = None,
    can_idle: Callable[[Server], bool] = lambda server: False,
) -> int:
    directory = ensure_private_dir(runtime_dir())
    lock = DaemonLock(directory)
    lock.acquire()  # DaemonRunningError (exit 8) if another daemon of ours runs
    named = options.pidfile or config.globals.pidfile
    pidfile = PidFile(Path(named).absolute()) if named else None  # before detach's chdir
    try:
        if not options.nodetach:
            detach(config.globals.logfile)
            lock.rewrite_pid()  # the lock's descriptor went with us through both forks
        logconfig.start_background_writer()  # after the forks: a thread does not survive them
        if pidfile is not None:
            pidfile.write(config.globals.poll_interval)
        return run_loop(
            lambda: _main(config, entries, options, env, directory, poll_one, idle_wait, can_idle)
        )
    finally:
        if pidfile is not None:
            pidfile.remove()
        lock.release()
        logconfig.flush()


def _report_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    error = context.get("exception")
    kind = type(error).__name__ if error is not None else "no exception"
    log.error("daemon.internal_error", text=f"internal error in the event loop: {kind}")


async def _main(
    config: Config,
    entries: list[Server],
    options: Options,
    env: ParseEnvironment,
    directory: Path,
    poll_one: Callable[..., Any],
    idle_wait: Callable[[Config, Server, Any], Any] | None,
    can_idle: Callable[[Server], bool],
) -> int:
    # An exception nothing awaits goes to our log (which cannot block or fail), not to the
    # logging module's blocking write to stderr; its text is left out (it may quote a secret).
    asyncio.get_running_loop().set_exception_handler(_report_loop_error)
    store = await asyncio.to_thread(UIDStore.open)
    notifier = Notifier()

    async def poll_account(config: Config, server: Server, user: Any, status: AccountStatus) -> int:
        code: int = await poll_one(config, server, user, options, store, status)
        return code

    def reload() -> tuple[Config, list[Server]]:
        fresh = apply_overrides(load_rcfile(options.rcfile, env=env), options)
        check_config(fresh)
        return fresh, select_entries(fresh, options.hosts, options, env)

    supervisor = Supervisor(
        config,
        entries,
        poll_account,
        reload,
        idle_wait=idle_wait,
        can_idle=can_idle,
        notifier=notifier,
        stop_deadline=STOP_DEADLINE_SECONDS,
    )
    server = control.ControlServer(directory / "control.sock", supervisor.handle)
    await server.start()
    supervisor.install_signal_handlers()
    log.info(
        "daemon.start",
        text=f"starting fetchd {__version__} daemon "
        f"(pid {os.getpid()}, polling every {config.globals.poll_interval} s)",
    )
    notifier.ready(f"{len(entries)} entries; polling every {config.globals.poll_interval} s")
    watchdog = asyncio.create_task(notifier.keep_watchdog_fed())
    try:
        return await supervisor.run()
    finally:
        watchdog.cancel()
        await server.stop()
        store.close()
        # The stop deadline stays armed until the process is gone: what follows (the loop's
        # teardown waits for its worker threads, the state store's among them) is bounded too.
