"""The checks fetchmail makes on a parsed configuration before it does anything (load_params).

A file that parses can still be refused by fetchmail, with exit status 5, for what it says:
a service that is no port number, LMTP to the SMTP port, RPOP to an unprivileged port,
Kerberos IV. fetchd refuses the same
files, naming the file and the entry, so an rc file works under both or under neither.
"""

from __future__ import annotations

import re
import socket

from fetchd.config.model import Config, Server
from fetchd.errors import ConfigError

SMTP_PORT = 25
_NUMBER = re.compile(r"\s*([+-]?)([0-9]+)\s*")


def numeric_port(service: str) -> int | None:
    """``service`` read as fetchmail's strtoul reads it, or None when it is not a number.
    A negative number wraps around in strtoul, so it is out of range (-1)."""
    match = _NUMBER.fullmatch(service)
    if match is None:
        return None
    value = int(match.group(2))
    return -1 if match.group(1) == "-" and value else value


def servport(service: str) -> int | None:
    """fetchmail's servport: a decimal port, else a service name looked up for TCP; None when
    it names no port in 1..65535."""
    port = numeric_port(service)
    if port is None:
        try:
            found = socket.getaddrinfo(None, service, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            return None
        port = int(found[0][4][1])
    return port if 0 < port <= 65535 else None


def connect_port(service: str | None) -> int | None:
    """The port a poll connects to as fetchmail picks it: ``service``/``port`` through servport
    (so " 110", "+110" and "pop3s" name a port, as in fetchmail), 1109 for `proto kpop`, and
    None for the protocol's default."""
    if service is None:
        return None
    return 1109 if service == "kpop" else servport(service)


def check_config(config: Config) -> None:
    """Raise ConfigError (exit 5) for what fetchmail refuses in a configuration that parsed."""
    for server in config.servers:
        _check_server(config.filename, server)


def _check_server(filename: str, server: Server) -> None:
    where = f"{filename}: poll {server.pollname!r}"
    if server.auth == "kerberos_v4":
        raise ConfigError(
            f"{where}: auth kerberos_v4 (Kerberos IV) is not supported; fetchmail refuses it too"
        )
    # `proto kpop` sets the service to "kpop", which fetchmail takes without a lookup.
    if server.service not in (None, "kpop") and servport(server.service) is None:
        raise ConfigError(
            f"{where}: service/port {server.service!r} is not a port number (1-65535) or a "
            "known service name"
        )
    if server.protocol == "RPOP" and server.service is not None:
        # `proto kpop` (here or in the defaults entry) left the service "kpop", port 1109.
        port = connect_port(server.service)
        if port is not None and port >= 1024:
            raise ConfigError(f"{where}: RPOP requires a privileged port (below 1024)")
    for user in server.users:
        if not user.lmtp:
            continue
        for host in user.smtphunt:
            if _lmtp_port_is_smtp(host):
                raise ConfigError(
                    f"{where}, user {user.remote!r}: LMTP cannot use the SMTP port: give "
                    f"smtphost {host!r} an LMTP port (host/port) or a socket path"
                )


def _lmtp_port_is_smtp(host: str) -> bool:
    # fetchmail's rule: an LMTP target needs an explicit "/port" (or is a socket path, whose
    # last part is no port), and that port must not be SMTP's.
    if "/" not in host:
        return True
    port = host.rsplit("/", 1)[1]
    return port == str(SMTP_PORT) or servport(port) == SMTP_PORT
