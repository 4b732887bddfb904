"""What one ``fetchd`` run does once its options are parsed: answer a control command, or read
the configuration, then dump it, describe it, or poll (once, or as a daemon).

Each account (one user of one poll entry) is polled in turn, as fetchmail does; an account's
failure is reported with its name and stage and the others carry on.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from fetchd import logconfig
from fetchd.account import RunMemory, can_idle, idle_until_mail, poll_user, warn_idle_refused
from fetchd.config import Config, ParseEnvironment, configdump, configdump_json, load_rcfile
from fetchd.config.check import check_config
from fetchd.config.describe import describe
from fetchd.config.model import Server
from fetchd.config.overrides import apply_overrides, select_entries
from fetchd.errors import ConfigError
from fetchd.oneshot import poll_entries
from fetchd.options import Options, version_line

log = structlog.get_logger("fetchd")


# Keywords fetchd reads but does not act on yet: one warning per keyword and run. Not here,
# because fetchd's behaviour is already what they ask for: `uidl` (POP3 UIDs are always
# tracked), `fastuidl` (a faster search for them: fetchd lists them with one UIDL) and
# `properties` (fetchmail ignores it too; it is for other programs reading the rc file).
IGNORED_KEYWORDS = frozenset(
    {
        "mimedecode",
        "fetchdomains",
        "showdots",
    }
)


def run(options: Options) -> int:
    logconfig.configure(verbosity=options.verbose, silent=options.silent)
    from fetchd.daemon.service import command_while_daemon_runs, control_command

    answered = control_command(options)
    if answered is None and options.fleet is not None:
        from fetchd.fleet.service import run_fleet

        return run_fleet(options, _run_loop)
    oauth2 = bool(options.oauth2_login or options.oauth2_logout)
    if answered is None and not (options.version or options.configdump or oauth2):
        answered = command_while_daemon_runs(options)  # wake it, or refuse (fetchmail's rules)
    if answered is not None:
        return answered
    env = ParseEnvironment.current(options.rcfile)
    config = apply_overrides(load_rcfile(options.rcfile, env=env), options)
    check_config(config)
    if options.configdump == "json":
        sys.stdout.write(configdump_json(config))
        return 0
    if options.configdump:
        sys.stdout.write(configdump(config))
        return 0
    if oauth2:
        from fetchd.auth.oauth2.command import oauth2_command

        return oauth2_command(config, options) or 0
    if options.version:
        from fetchd.auth.oauth2.command import describe_tokens

        print(version_line())
        print(describe(config), end="")
        tokens = describe_tokens(config)
        if tokens:
            print("OAuth2 token store:")
            print(tokens, end="")
        return 0
    entries = select_entries(config, options.hosts, options, env)
    if not entries:
        if config.filename != "-" and not os.path.exists(config.filename):
            raise ConfigError(
                f"no mailservers have been specified: the rc file {config.filename} does not exist"
            )
        raise ConfigError(f"no mailservers have been specified in {config.filename}")
    warn_ignored_keywords(config, entries)
    memory = RunMemory()  # this run's: a one-shot pass, or the daemon's whole life
    daemon = bool(config.globals.poll_interval and not options.check)
    detached = daemon and not options.nodetach
    to_syslog = config.globals.syslog and not (detached and config.globals.logfile)
    # A service with nowhere else to log would log into /dev/null; unless --nosyslog said so,
    # it logs to syslog.
    unlogged = detached and not config.globals.logfile and not config.globals.syslog
    if unlogged and options.override("syslog") is not False:
        print("fetchd: no logfile set: the daemon logs to syslog (facility mail)")
        to_syslog = True
    if to_syslog:
        # fetchmail: from here on, status and errors go to syslog; a logfile, where it applies
        # (a detached daemon), wins over syslog.
        logconfig.configure(
            verbosity=options.verbose, silent=options.silent, syslog=logconfig.syslog_address()
        )
    if daemon:
        from fetchd.daemon.service import run_daemon

        warn_idle_refused(entries)
        return run_daemon(
            config,
            entries,
            options,
            env,
            functools.partial(poll_user, memory=memory),
            _run_loop,
            idle_wait=functools.partial(idle_until_mail, memory=memory),
            can_idle=can_idle,
        )
    return _run_loop(lambda: poll_entries(config, entries, options, memory))


def _run_loop(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but optional at run time
        return asyncio.run(main())
    return uvloop.run(main())


def warn_ignored_keywords(config: Config, entries: list[Server]) -> None:
    names = {server.pollname for server in entries} | {""}
    warned: set[str] = set()
    for use in config.keyword_uses:
        known = use.keyword in IGNORED_KEYWORDS and use.pollname in names
        if known and use.keyword not in warned:
            warned.add(use.keyword)
            log.warning(
                "config.ignored",
                text=f"{config.filename}:{use.line}: '{use.keyword}' is read but not "
                "acted on yet by fetchd",
            )
