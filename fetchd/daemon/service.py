"""Daemon mode around the supervisor: one daemon per user, detaching, the control socket, and
the command-line side of it (``--quit``, ``--poll``, ``--status``, waking a running daemon)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from fetchd import __version__, logconfig
from fetchd.config import Config, ParseEnvironment, load_rcfile
from fetchd.config.check import check_config
from fetchd.config.model import Server
from fetchd.config.overrides import apply_overrides, select_entries
from fetchd.daemon import control
from fetchd.daemon.runtime import (
    DaemonLock,
    PidFile,
    ensure_private_dir,
    running_fetchmail,
    runtime_dir,
)
from fetchd.daemon.sdnotify import Notifier
from fetchd.daemon.supervisor import STOP_DEADLINE_SECONDS, AccountStatus, Supervisor
from fetchd.errors import ConfigError, DaemonRunningError, ExitCode
from fetchd.options import Options, Override
from fetchd.state import UIDStore

log = structlog.get_logger("fetchd.daemon")


def worker_name() -> str:
    """This daemon among others (fleet workers, metrics): host name and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


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
        if options.status_json:
            print(json.dumps(status_document(answer), indent=2))
        else:
            print(format_status(answer), end="")
        return 0
    return None


def _plain(options: Options) -> bool:
    """A bare ``fetchd`` (verbosity flags aside): what wakes a running daemon."""
    return not (
        options.hosts
        or options.overrides
        or options.check
        or options.rcfile
        or options.pidfile
        or options.nodetach
        or options.daemon_default  # the systemd unit starting a daemon, not waking one
    )


def command_while_daemon_runs(options: Options) -> int | None:
    """fetchmail's rules for a command given while its daemon runs: a plain one wakes the
    daemon for a poll now; one with options (which would start a second poll) is refused with
    exit 8. None when no daemon runs. ``-V``, ``--configdump`` and the control commands are
    not asked here: they work whether a daemon runs or not."""
    lock = DaemonLock(runtime_dir())
    if not lock.held_by_other():
        return None
    if _plain(options):
        answer = control.request(socket_path(), "poll")
        if answer is not None and answer.get("ok"):
            print("fetchd: background fetchd awakened")
            return 0
        error = (answer or {}).get("error", "no answer on its control socket")
        print(f"fetchd: the background fetchd (pid {lock.holder()}): {error}", file=sys.stderr)
        return int(ExitCode.LOCK)
    print(
        f"fetchd: another fetchd daemon is running (pid {lock.holder()}): can't accept options "
        "while a background fetchd is running; use --poll, --quit or --status",
        file=sys.stderr,
    )
    return int(ExitCode.LOCK)


OUTCOMES = {
    ExitCode.MAIL: "mail",
    ExitCode.NOMAIL: "no mail",
    ExitCode.SOCKET: "socket error",
    ExitCode.AUTH: "auth failed",
    ExitCode.PROTOCOL: "protocol error",
    ExitCode.SYNTAX: "syntax error",
    ExitCode.RCPERMS: "rc file permissions",
    ExitCode.SERVER: "server error",
    ExitCode.LOCK: "locked out",
    ExitCode.LOCKBUSY: "mailbox busy",
    ExitCode.SMTP: "SMTP error",
    ExitCode.DNS: "DNS error",
    ExitCode.BSMTP: "BSMTP error",
    ExitCode.FETCHLIMIT: "fetch limit",
    ExitCode.SERVERBUSY: "server busy",
    ExitCode.UNDEFINED: "error",
}


def outcome_word(code: object) -> str | None:
    """fetchmail's exit code of a poll as words (``auth failed``); None before any poll."""
    if not isinstance(code, int) or isinstance(code, bool):
        return None
    try:
        return OUTCOMES[ExitCode(code)]
    except (ValueError, KeyError):
        return "error"


def status_document(answer: dict[str, Any]) -> dict[str, Any]:
    """``--status --json``: the daemon and its accounts, each outcome also as words."""
    accounts = [
        {**a, "outcome_text": outcome_word(a.get("outcome"))} for a in answer.get("accounts", [])
    ]
    return {"daemon": answer.get("daemon", {}), "accounts": accounts}


def _when(stamp: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(stamp)) if stamp else "-"


def _duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"


def _result(code: object) -> str:
    word = outcome_word(code)
    return "-" if word is None else f"{word} ({code})"


def format_status(answer: dict[str, Any]) -> str:
    daemon = answer.get("daemon", {})
    lines = [
        f"fetchd {daemon.get('version', '?')} daemon, pid {daemon.get('pid', '?')}, "
        f"up {_duration(float(daemon.get('uptime') or 0))}, rc file {daemon.get('rcfile', '?')}"
        + (f", {daemon['tasks']} tasks" if isinstance(daemon.get("tasks"), int) else "")
        + "\n"
    ]
    if daemon.get("metrics"):
        lines.append(f"metrics: http://{daemon['metrics']}/metrics\n")
    fleet = daemon.get("fleet")
    if isinstance(fleet, dict):  # fetchd --fleet: where its accounts come from
        lines.append(
            f"fleet: accounts from {fleet.get('database')}: {fleet.get('rows', 0)} rows, "
            f"{fleet.get('rows_refused', 0)} refused"
            + (f"; database: {fleet['database_error']}" if fleet.get("database_error") else "")
            + "\n"
        )
        lines += _fleet_view(fleet)
    if daemon.get("reload_failed_at"):
        lines.append(
            f"reload failed at {_when(daemon['reload_failed_at'])}: {daemon.get('reload_error')}"
            "; still running the previous configuration\n"
        )
    lines.append(
        f"{'account':<32} {'state':<8} {'last poll':<9} {'result':<20} {'messages':>8} "
        f"{'octets':>12} {'next due':<9} error\n"
    )
    lines += [
        f"{str(a.get('account'))[:32]:<32} {a.get('state')!s:<8} "
        f"{_when(a.get('last_poll')):<9} {_result(a.get('outcome')):<20} "
        f"{a.get('messages', 0):>8} {a.get('octets', 0):>12} {_when(a.get('next_due')):<9} "
        f"{(a.get('error') or '')[:120]}\n"
        for a in answer.get("accounts", [])
    ]
    return "".join(lines)


def _fleet_view(fleet: dict[str, Any]) -> list[str]:
    """The whole fleet (every worker's rows): counts, then the running rows under their
    worker and the failing rows."""
    if fleet.get("view_error"):
        return [f"fleet-wide: not read: {fleet['view_error']}\n"]
    view = fleet.get("view")
    if not isinstance(view, dict):
        return []
    lines = [
        f"fleet-wide: {view.get('accounts', 0)} accounts, {view.get('due', 0)} due, "
        f"{view.get('running', 0)} running, {view.get('failing', 0)} failing\n"
    ]
    listed = [item for item in view.get("listed") or [] if isinstance(item, dict)]
    workers: dict[str, list[dict[str, Any]]] = {}
    for item in listed:
        if item.get("running"):
            workers.setdefault(str(item.get("worker")), []).append(item)
    for worker, items in sorted(workers.items()):
        lines.append(f"  worker {worker}: running {len(items)}\n")
        lines += [
            f"    row {i.get('row')} {str(i.get('account'))[:60]} since {_when(i.get('since'))}\n"
            for i in items
        ]
    lines += [
        f"  failing: row {i.get('row')} {str(i.get('account'))[:60]}: "
        f"{_result(i.get('outcome'))} {(i.get('text') or '')[:120]}\n"
        for i in listed
        if not i.get("running")
    ]
    return lines


def absolute_paths(config: Config, options: Options, base: str) -> tuple[Config, Options]:
    """Every path of the command line and the rc file made absolute against ``base`` (the
    directory fetchd was started in): a detached daemon works in ``/``, and reloads later."""

    def absolute(path: str | None) -> str | None:
        return path if not path or path == "-" else os.path.normpath(os.path.join(base, path))

    overrides = tuple(
        Override(o.level, o.key, absolute(o.value))
        if o.key in ("logfile", "idfile") and isinstance(o.value, str)
        else o
        for o in options.overrides
    )
    options = dataclasses.replace(
        options,
        rcfile=absolute(options.rcfile or config.filename),
        pidfile=absolute(options.pidfile),
        overrides=overrides,
    )
    g = config.globals
    globals_ = dataclasses.replace(
        g, logfile=absolute(g.logfile), idfile=absolute(g.idfile), pidfile=absolute(g.pidfile)
    )
    return dataclasses.replace(config, filename=options.rcfile or "", globals=globals_), options


def refuse_if_fetchmail_runs() -> None:
    """Two retrievers polling one mailbox duplicate or lose mail: not while fetchmail runs."""
    found = running_fetchmail()
    if found is not None:
        pid, path = found
        raise DaemonRunningError(
            f"a fetchmail daemon is running for this user (pid {pid}, {path}); "
            "stop it with `fetchmail --quit` before starting the fetchd daemon"
        )


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
    refuse_if_fetchmail_runs()
    base = os.getcwd()  # before detach's chdir: paths stay valid for every reload
    config, options = absolute_paths(config, options, base)
    directory = ensure_private_dir(runtime_dir())
    lock = DaemonLock(directory)
    lock.acquire()  # DaemonRunningError (exit 8) if another daemon of ours runs
    named = options.pidfile or config.globals.pidfile
    pidfile = PidFile(Path(named)) if named else None
    try:
        if not options.nodetach:
            detach(config.globals.logfile)
            lock.rewrite_pid()  # the lock's descriptor went with us through both forks
        logconfig.start_background_writer()  # after the forks: a thread does not survive them
        if pidfile is not None:
            pidfile.write(config.globals.poll_interval)
        return run_loop(
            lambda: _main(
                config, entries, options, env, directory, poll_one, idle_wait, can_idle, base
            )
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
    base: str,
) -> int:
    # An exception nothing awaits goes to our log (which cannot block or fail), not to the
    # logging module's blocking write to stderr; its text is left out (it may quote a secret).
    asyncio.get_running_loop().set_exception_handler(_report_loop_error)
    store = await asyncio.to_thread(UIDStore.open)
    notifier = Notifier()
    metrics = None
    if options.metrics is not None:
        from fetchd.daemon.metrics import start_metrics

        metrics = start_metrics(options.metrics, worker_name())

    async def poll_account(config: Config, server: Server, user: Any, status: AccountStatus) -> int:
        code: int = await poll_one(config, server, user, options, store, status)
        return code

    def reload() -> tuple[Config, list[Server]]:
        rcfile = options.rcfile or config.filename
        if rcfile != "-" and not os.path.exists(rcfile):  # load_rcfile reads a missing one as empty
            raise ConfigError(f"cannot read {rcfile}: No such file or directory")
        fresh, _ = absolute_paths(load_rcfile(rcfile, env=env), options, base)
        fresh = apply_overrides(fresh, options)
        check_config(fresh)
        entries = select_entries(fresh, options.hosts, options, env)
        if not entries:
            raise ConfigError(f"no mailservers have been specified in {fresh.filename}")
        return fresh, entries

    supervisor = Supervisor(
        config,
        entries,
        poll_account,
        reload,
        idle_wait=idle_wait,
        can_idle=can_idle,
        notifier=notifier,
        stop_deadline=STOP_DEADLINE_SECONDS,
        metrics=metrics,
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
        if metrics is not None:
            metrics.close()
        # The stop deadline stays armed until the process is gone: what follows (the loop's
        # teardown waits for its worker threads, the state store's among them) is bounded too.
