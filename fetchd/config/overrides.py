"""Command-line overrides applied to the rc file's configuration, and the choice of poll entries.

fetchmail applies its flags to every poll entry it runs, on top of what the rc file says; a host
named on the command line that the rc file does not know becomes an entry of its own, built from
the flags alone. ``skip`` entries run only when named.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from fetchd.config.model import Config, Server, User
from fetchd.config.parser import ParseEnvironment, parse
from fetchd.errors import ConfigError
from fetchd.options import Options, Override


def apply_overrides(config: Config, options: Options) -> Config:
    """The configuration with the command line's settings on top.

    ``--daemon-default N`` comes last and only fills a gap: the interval is the command line's
    ``-d``, else the rc file's ``set daemon``, else N (what the systemd unit passes).
    """
    config = _with_overrides(config, options)
    if options.daemon_default is not None and not config.globals.poll_interval:
        globals_ = dataclasses.replace(config.globals, poll_interval=options.daemon_default)
        config = dataclasses.replace(config, globals=globals_)
    return config


def _with_overrides(config: Config, options: Options) -> Config:
    if not options.overrides:
        return config
    globals_ = _replace(config.globals, options.overrides, "globals")
    servers = tuple(_override_server(server, options.overrides) for server in config.servers)
    return dataclasses.replace(config, globals=globals_, servers=servers)


def _override_server(server: Server, overrides: Sequence[Override]) -> Server:
    users = tuple(_replace(user, overrides, "user") for user in server.users)
    replaced: Server = dataclasses.replace(_replace(server, overrides, "server"), users=users)
    return replaced


def _replace(target: Any, overrides: Sequence[Override], level: str) -> Any:
    changes: dict[str, object] = {}
    fields = {field.name for field in dataclasses.fields(target)}
    for item in overrides:
        if item.level != level:
            continue
        if item.key not in fields:  # a programming error: the flag table names a missing key
            raise ConfigError(f"command line: {item.key} cannot be set on a {level} entry")
        changes[item.key] = item.value
        if item.key == "sslcertck":  # `--sslcertck` asks for TLS as the rc file's word does
            changes["sslcertck_explicit"] = item.value is True
    if level == "server" and "service" in changes and changes["service"] is not None:
        changes.update(_port_of(str(changes["service"]), fields))
    return dataclasses.replace(target, **changes) if changes else target


def _port_of(service: str, fields: set[str]) -> dict[str, object]:
    return {"port": int(service)} if "port" in fields and service.isdigit() else {}


def select_entries(
    config: Config,
    hosts: Sequence[str],
    options: Options | None = None,
    env: ParseEnvironment | None = None,
) -> list[Server]:
    """The entries to poll: every active one, or those named (by poll name or ``via``).

    A name the rc file does not know becomes an entry of its own, made of fetchmail's defaults
    and the command line's options (``fetchd -p pop3 -u joe pop.example.org``), as fetchmail
    does it. ``skip`` entries run only when named.
    """
    if not hosts:
        return [server for server in config.servers if server.active]
    chosen: list[Server] = []
    for host in hosts:
        named = [s for s in config.servers if host in (s.pollname, s.via)]
        if not named:
            named = [_entry_from_command_line(host, options, env)]
        chosen.extend(s for s in named if s not in chosen)
    return chosen


def _entry_from_command_line(
    host: str, options: Options | None, env: ParseEnvironment | None
) -> Server:
    if not host or any(c in host for c in " \t\r\n\"'#=;:,"):
        raise ConfigError(f"command line: {host!r} is not a server name")
    entry = parse(f'poll "{host}"\n', "command line", env)
    if options is not None:
        entry = apply_overrides(entry, options)
    return entry.servers[0]


__all__ = ["User", "apply_overrides", "select_entries"]
