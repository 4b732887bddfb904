"""``fetchd --fleet DSN``: the daemon, with its accounts from PostfixAdmin's ``fetchmail`` table.

Everything else is the ordinary daemon's: the rc file (``-f``) gives the globals (postmaster,
bounces, logging) and a ``defaults`` entry that applies to every row (smtphost, a port,
``sslproto``...), and its own ``poll`` entries are polled too; the command line's options
apply on top, to rows and entries alike. The daemon lock, control socket (``--status``,
``--poll ACCOUNT`` where ACCOUNT may be ``rowID``, ``--quit``), pid file, detaching and
signals work as for ``fetchd -d``. Fleet mode is always a daemon: its cycle is ``set daemon``
(or ``-d``), 60 s when neither says; a row's ``poll_time`` is in minutes, as PostfixAdmin has it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog

from fetchd import __version__, logconfig
from fetchd.account import RunMemory, poll_user
from fetchd.config import Config, ParseEnvironment, load_rcfile
from fetchd.config.check import check_config
from fetchd.config.fragments import Defaults, parse_defaults
from fetchd.config.model import Server
from fetchd.config.overrides import apply_overrides, select_entries
from fetchd.daemon import control
from fetchd.daemon.runtime import DaemonLock, PidFile, ensure_private_dir, runtime_dir
from fetchd.daemon.sdnotify import Notifier
from fetchd.daemon.service import absolute_paths, detach, worker_name
from fetchd.daemon.supervisor import STOP_DEADLINE_SECONDS, AccountStatus
from fetchd.errors import ConfigError, FleetRowError
from fetchd.fleet.database import FleetDatabase
from fetchd.fleet.dsn import check_dsn
from fetchd.fleet.rows import FleetAccount, accounts_from_rows
from fetchd.fleet.supervisor import FleetSupervisor
from fetchd.options import Options

log = structlog.get_logger("fetchd.fleet")

DEFAULT_CYCLE_SECONDS = 60

RunLoop = Callable[[Callable[[], Coroutine[Any, Any, int]]], int]


@dataclasses.dataclass
class _Settings:
    """What the rc file and command line say, read again at each reload."""

    config: Config
    rc_entries: list[Server]
    defaults: Defaults


def _read_settings(options: Options, env: ParseEnvironment, base: str) -> _Settings:
    rcfile = options.rcfile
    config = apply_overrides(load_rcfile(rcfile, env=env), options)
    config, _ = absolute_paths(config, options, base)
    check_config(config)
    if not config.globals.poll_interval:
        globals_ = dataclasses.replace(config.globals, poll_interval=DEFAULT_CYCLE_SECONDS)
        config = dataclasses.replace(config, globals=globals_)
    text = ""
    if config.filename and config.filename != "-" and os.path.exists(config.filename):
        text = Path(config.filename).read_text(errors="surrogateescape")
    defaults = parse_defaults(text, config.filename, env)
    entries = select_entries(config, options.hosts, options, env) if config.servers else []
    return _Settings(config, entries, defaults)


def _rows_to_accounts(
    settings: _Settings, options: Options, env: ParseEnvironment
) -> Callable[[list[dict[str, Any]]], tuple[list[FleetAccount], list[FleetRowError]]]:
    cycle = settings.config.globals.poll_interval

    def convert(rows: list[dict[str, Any]]) -> tuple[list[FleetAccount], list[FleetRowError]]:
        accounts, errors = accounts_from_rows(rows, settings.defaults, env, cycle)
        # The command line's options (-k, -a, ...) apply to rows as to the rc file's entries.
        servers = tuple(account.server for account in accounts)
        overridden = apply_overrides(dataclasses.replace(settings.config, servers=servers), options)
        accounts = [
            dataclasses.replace(account, server=server)
            for account, server in zip(accounts, overridden.servers, strict=True)
        ]
        return accounts, errors

    return convert


def run_fleet(options: Options, run_loop: RunLoop) -> int:
    dsn = check_dsn(options.fleet or "")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--fleet needs psycopg: install fetchd with its fleet extra "
            "(pip install 'fetchd[fleet]')"
        ) from None
    base = os.getcwd()
    env = ParseEnvironment.current(options.rcfile)
    settings = _read_settings(options, env, base)
    options = dataclasses.replace(options, rcfile=settings.config.filename or options.rcfile)
    directory = ensure_private_dir(runtime_dir())
    lock = DaemonLock(directory)
    lock.acquire()  # DaemonRunningError (exit 8) if another daemon of ours runs here
    named = options.pidfile or settings.config.globals.pidfile
    pidfile = PidFile(Path(named)) if named else None
    try:
        if not options.nodetach:
            detach(settings.config.globals.logfile)
            lock.rewrite_pid()
        logconfig.start_background_writer()
        if pidfile is not None:
            pidfile.write(settings.config.globals.poll_interval)
        return run_loop(lambda: _main(settings, options, env, base, dsn, directory))
    finally:
        if pidfile is not None:
            pidfile.remove()
        lock.release()
        logconfig.flush()


async def _main(
    settings: _Settings,
    options: Options,
    env: ParseEnvironment,
    base: str,
    dsn: str,
    directory: Path,
) -> int:
    # The UID store and the row claims live in the fleet's database: every worker sees what
    # any of them recorded, and only one polls a row at a time.
    from fetchd.fleet.pgstate import PGUIDStore, RowClaims

    metrics = None
    if options.metrics is not None:
        from fetchd.daemon.metrics import start_metrics

        metrics = start_metrics(options.metrics, worker_name())
    store = await asyncio.to_thread(PGUIDStore.connect, dsn)
    claims = RowClaims(dsn, worker=worker_name(), on_takeover=metrics.takeover if metrics else None)
    database = FleetDatabase(dsn)
    memory = RunMemory()
    notifier = Notifier()
    current = settings

    async def poll_account(config: Config, server: Server, user: Any, status: AccountStatus) -> int:
        return await poll_user(config, server, user, options, store, status, memory=memory)

    def reload() -> tuple[Config, list[Server]]:
        nonlocal current
        current = _read_settings(options, env, base)
        return current.config, current.rc_entries

    supervisor = FleetSupervisor(
        settings.config,
        settings.rc_entries,
        poll_account,
        reload,
        database,
        lambda: _rows_to_accounts(current, options, env),
        claims,
        options.fleet_server_connections,
        notifier=notifier,
        stop_deadline=STOP_DEADLINE_SECONDS,
        metrics=metrics,
    )
    server = control.ControlServer(directory / "control.sock", supervisor.handle)
    await server.start()
    supervisor.install_signal_handlers()
    cycle = settings.config.globals.poll_interval
    log.info(
        "daemon.start",
        text=f"starting fetchd {__version__} fleet daemon (pid {os.getpid()}, accounts from "
        f"{database.shown}, reading them every {cycle} s)",
    )
    notifier.ready(f"fleet: accounts from {database.shown}")
    watchdog = asyncio.create_task(notifier.keep_watchdog_fed())
    try:
        return await supervisor.run()
    finally:
        watchdog.cancel()
        await server.stop()
        await database.close()
        await claims.close()
        store.close()
        if metrics is not None:
            metrics.close()


__all__ = ["run_fleet"]
