"""fetchmail's command line, parsed into frozen options that override the rc file.

Each flag that mirrors an rc-file keyword becomes an ``Override`` naming the same key the rc
file and ``--configdump`` use (``keep``, ``limit``, ``protocol``...), so one mapping serves the
parser, the dump and the command line. Flags that only steer this run (``-c``, ``-v``,
``--quit``...) are plain fields of ``Options``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NoReturn

from fetchd import __version__
from fetchd.errors import ConfigError

Level = Literal["globals", "server", "user"]


@dataclass(frozen=True, slots=True)
class Override:
    """One rc-file setting given on the command line, applied to every selected poll entry."""

    level: Level
    key: str  # the --configdump key
    value: object


@dataclass(frozen=True, slots=True)
class Options:
    """Everything the command line said."""

    rcfile: str | None = None
    hosts: tuple[str, ...] = ()  # poll entries to run (by name or via); empty = every active one
    overrides: tuple[Override, ...] = ()
    check: bool = False
    silent: bool = False
    verbose: int = 0
    version: bool = False
    nodetach: bool = False
    quit: bool = False
    configdump: Literal["python", "json"] | None = None
    demo: bool = False
    status: bool = False  # --status: the running daemon's accounts
    status_json: bool = False  # --status --json
    poll: str | None = None  # --poll [ACCOUNT]: "*" for every account
    pidfile: str | None = None
    daemon_default: int | None = None  # --daemon-default: the interval when the rc file has none
    systemd_unit: bool = False  # --systemd-unit: print the user unit and exit
    fleet: str | None = None  # --fleet DSN: accounts from PostfixAdmin's table (fetchd.fleet)
    fleet_server_connections: int = 0  # at most this many polls per server across the fleet
    metrics: str | None = None  # --metrics [HOST:]PORT: the daemon's Prometheus endpoint
    debug: bool = False  # tracebacks for internal errors (also with -v -v)
    # OAuth2: --oauth2-login ACCOUNT (user@pollname) and its settings, --oauth2-logout ACCOUNT.
    oauth2_login: str | None = None
    oauth2_logout: str | None = None
    oauth2_provider: str | None = None
    oauth2_client_id: str | None = None
    oauth2_client_secret: str | None = field(default=None, repr=False)
    oauth2_scope: str | None = None
    oauth2_flow: str = ""  # "device", "browser", or "" (the provider's best)

    def override(self, key: str) -> object | None:
        """The last value the command line gave for ``key``, or None."""
        for item in reversed(self.overrides):
            if item.key == key:
                return item.value
        return None


def _int(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _words(text: str) -> tuple[str, ...]:
    """fetchmail's comma-separated list arguments (-S, -r, --fetchdomains)."""
    return tuple(word for word in text.split(",") if word)


def _codes(text: str) -> tuple[int, ...]:
    return tuple(_int(word) for word in _words(text))


# (flags, level, key, value converter or constant, metavar, help). A converter of None means the
# flag takes no argument and stores the constant.
_Convert = Callable[[str], object]


@dataclass(frozen=True, slots=True)
class _Flag:
    flags: tuple[str, ...]
    level: Level
    key: str
    convert: _Convert | None
    constant: object = None
    metavar: str | None = None
    help: str = ""


def _arg(
    *flags: str, level: Level, key: str, convert: _Convert = str, metavar: str = "VALUE", help: str
) -> _Flag:
    return _Flag(flags, level, key, convert, None, metavar, help)


def _switch(*flags: str, level: Level, key: str, value: object = True, help: str) -> _Flag:
    return _Flag(flags, level, key, None, value, None, help)


_GROUPS: dict[str, list[_Flag]] = {
    "selecting messages": [
        _switch(
            "-a",
            "--all",
            "--fetchall",
            level="user",
            key="fetchall",
            help="retrieve old and new messages",
        ),
        _switch(
            "-k", "--keep", level="user", key="keep", help="leave retrieved messages on the server"
        ),
        _switch(
            "-K",
            "--nokeep",
            level="user",
            key="keep",
            value=False,
            help="delete retrieved messages from the server",
        ),
        _switch(
            "-F",
            "--flush",
            level="user",
            key="flush",
            help="delete old (seen) messages from the server",
        ),
        _switch(
            "--limitflush",
            level="user",
            key="limitflush",
            help="delete oversized messages instead of leaving them",
        ),
        _arg(
            "-l",
            "--limit",
            level="user",
            key="limit",
            convert=_int,
            metavar="OCTETS",
            help="leave messages larger than this on the server",
        ),
        _arg(
            "-B",
            "--fetchlimit",
            level="user",
            key="fetchlimit",
            convert=_int,
            metavar="N",
            help="fetch at most N messages per poll",
        ),
        _arg(
            "--fetchsizelimit",
            level="user",
            key="fetchsizelimit",
            convert=_int,
            metavar="N",
            help="ask sizes of at most N messages at a time",
        ),
        _arg(
            "--fastuidl",
            level="user",
            key="fastuidl",
            convert=_int,
            metavar="N",
            help="binary search for new UIDs (accepted for compatibility)",
        ),
        _arg(
            "-e",
            "--expunge",
            level="user",
            key="expunge",
            convert=_int,
            metavar="N",
            help="commit deletions every N messages",
        ),
        _arg(
            "-r",
            "--folder",
            level="user",
            key="mailboxes",
            convert=_words,
            metavar="LIST",
            help="remote folder(s), comma-separated",
        ),
        _arg(
            "-w",
            "--warnings",
            level="user",
            key="warnings",
            convert=_int,
            metavar="SECONDS",
            help="interval between oversized-message warnings",
        ),
        _switch("--idle", level="user", key="idle", help="wait for new mail with IMAP IDLE"),
    ],
    "the server": [
        _arg(
            "-p",
            "--proto",
            "--protocol",
            level="server",
            key="protocol",
            convert=str.upper,
            metavar="PROTO",
            help="retrieval protocol: auto, pop3, imap, ...",
        ),
        _arg(
            "-P",
            "--service",
            "--port",
            level="server",
            key="service",
            metavar="PORT",
            help="TCP service name or port",
        ),
        _arg(
            "--auth",
            level="server",
            key="auth",
            metavar="TYPE",
            help="authentication: any, password, cram-md5, oauthbearer, xoauth2, ...",
        ),
        _arg(
            "-u",
            "--user",
            "--username",
            level="user",
            key="remote",
            metavar="NAME",
            help="login name on the server",
        ),
        _arg(
            "-t",
            "--timeout",
            level="server",
            key="timeout",
            convert=_int,
            metavar="SECONDS",
            help="server non-response timeout",
        ),
        _switch("-U", "--uidl", level="server", key="uidl", help="force the use of UIDLs (POP3)"),
        _arg(
            "-E",
            "--envelope",
            level="server",
            key="envelope",
            metavar="HEADER",
            help="envelope address header (multidrop)",
        ),
        _arg(
            "-Q",
            "--qvirtual",
            level="server",
            key="qvirtual",
            metavar="PREFIX",
            help="prefix to remove from local user ids (multidrop)",
        ),
        _arg(
            "--principal",
            level="server",
            key="principal",
            metavar="NAME",
            help="mail service principal",
        ),
        _switch(
            "--tracepolls",
            level="server",
            key="tracepolls",
            help="add poll-tracing information to the Received header",
        ),
        _arg(
            "-I",
            "--interface",
            level="server",
            key="interface",
            metavar="SPEC",
            help="require this interface to be up",
        ),
        _arg(
            "-M",
            "--monitor",
            level="server",
            key="monitor",
            metavar="IFACE",
            help="poll only after activity on this interface",
        ),
        _arg(
            "--plugin",
            level="server",
            key="plugin",
            metavar="COMMAND",
            help="external command to open the server connection",
        ),
        _arg(
            "--plugout",
            level="server",
            key="plugout",
            metavar="COMMAND",
            help="external command to open the SMTP connection",
        ),
        _arg(
            "--bad-header",
            level="server",
            key="badheader",
            metavar="reject|accept",
            help="policy for messages with bad headers",
        ),
    ],
    "TLS": [
        _switch("--ssl", level="user", key="ssl", help="implicit TLS from the first byte"),
        _arg(
            "--sslproto",
            level="user",
            key="sslproto",
            metavar="PROTO",
            help="minimum TLS version, or '' to turn TLS off",
        ),
        _switch(
            "--sslcertck",
            level="user",
            key="sslcertck",
            help="verify the server certificate (the default)",
        ),
        _switch(
            "--nosslcertck",
            level="user",
            key="sslcertck",
            value=False,
            help="do not verify the server certificate (insecure)",
        ),
        _arg(
            "--sslcertfile",
            level="user",
            key="sslcertfile",
            metavar="FILE",
            help="trusted CA certificates file",
        ),
        _arg(
            "--sslcertpath",
            level="user",
            key="sslcertpath",
            metavar="DIR",
            help="trusted CA certificates directory",
        ),
        _arg(
            "--sslfingerprint",
            level="user",
            key="sslfingerprint",
            metavar="HASH",
            help="SHA-256 fingerprint the server certificate must have",
        ),
        _arg(
            "--sslcommonname",
            level="user",
            key="sslcommonname",
            metavar="NAME",
            help="expect this name in the server certificate",
        ),
        _arg("--sslkey", level="user", key="sslkey", metavar="FILE", help="client private key"),
        _arg("--sslcert", level="user", key="sslcert", metavar="FILE", help="client certificate"),
    ],
    "delivery": [
        _arg(
            "-S",
            "--smtphost",
            level="user",
            key="smtphunt",
            convert=_words,
            metavar="HOSTS",
            help="SMTP host(s) to deliver to, comma-separated (host, host/port or /socket)",
        ),
        _arg(
            "-D",
            "--smtpaddress",
            level="user",
            key="smtpaddress",
            metavar="DOMAIN",
            help="domain appended to local recipients",
        ),
        _arg(
            "--smtpname",
            level="user",
            key="smtpname",
            metavar="ADDRESS",
            help="full recipient address (user@domain)",
        ),
        _arg(
            "--fetchdomains",
            level="user",
            key="fetchdomains",
            convert=_words,
            metavar="LIST",
            help="domains to fetch mail for (multidrop)",
        ),
        _arg(
            "-m",
            "--mda",
            level="user",
            key="mda",
            metavar="COMMAND",
            help="deliver through this command instead of SMTP",
        ),
        _switch("--lmtp", level="user", key="lmtp", help="deliver with LMTP (RFC 2033)"),
        _arg("--bsmtp", level="user", key="bsmtp", metavar="FILE", help="write batch SMTP here"),
        _arg(
            "-b",
            "--batchlimit",
            level="user",
            key="batchlimit",
            convert=_int,
            metavar="N",
            help="messages per SMTP connection",
        ),
        _arg(
            "-Z",
            "--antispam",
            level="user",
            key="antispam",
            convert=_codes,
            metavar="CODES",
            help="SMTP codes that mean spam, comma-separated",
        ),
        _switch(
            "-n",
            "--norewrite",
            level="user",
            key="rewrite",
            value=False,
            help="do not rewrite header addresses",
        ),
        _arg(
            "--postmaster",
            level="globals",
            key="postmaster",
            metavar="NAME",
            help="recipient of last resort",
        ),
        _switch(
            "--nobounce",
            level="globals",
            key="bouncemail",
            value=False,
            help="send bounces to the postmaster, not the sender",
        ),
        _switch(
            "--softbounce",
            level="globals",
            key="softbounce",
            help="keep permanently undeliverable messages on the server (the default)",
        ),
        _switch(
            "--nosoftbounce",
            level="globals",
            key="softbounce",
            value=False,
            help="delete permanently undeliverable messages",
        ),
        _switch(
            "--invisible", level="globals", key="invisible", help="do not write a Received header"
        ),
    ],
    "running": [
        _arg(
            "-d",
            "--daemon",
            level="globals",
            key="poll_interval",
            convert=_int,
            metavar="SECONDS",
            help="run as a daemon, polling every SECONDS",
        ),
        _arg(
            "-L",
            "--logfile",
            level="globals",
            key="logfile",
            metavar="FILE",
            help="log to this file",
        ),
        _switch("--syslog", level="globals", key="syslog", help="log to syslog (facility mail)"),
        _switch(
            "--nosyslog", level="globals", key="syslog", value=False, help="do not log to syslog"
        ),
        _arg(
            "-i",
            "--idfile",
            level="globals",
            key="idfile",
            metavar="FILE",
            help="fetchmail's UID file, imported on first run",
        ),
        _switch("--showdots", level="globals", key="showdots", help="show progress dots"),
    ],
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"command line: {message} (see fetchd --help)")


def _build_parser() -> _Parser:
    parser = _Parser(
        prog="fetchd",
        usage="fetchd [options] [server ...]",
        description="Retrieve mail from POP3 and IMAP servers and hand it to the local MTA or an "
        "MDA. Reads fetchmail's run control file (~/.fetchmailrc) and takes fetchmail's flags, "
        "which override it.",
        add_help=False,
    )
    general = parser.add_argument_group("general")
    general.add_argument("-?", "-h", "--help", action="help", help="show this help and exit")
    general.add_argument(
        "-V",
        "--version",
        action="store_true",
        help="show the version and every account's settings; fetch nothing",
    )
    general.add_argument(
        "-f",
        "--fetchmailrc",
        dest="rcfile",
        metavar="FILE",
        help="run control file ('-' reads standard input)",
    )
    general.add_argument(
        "-c", "--check", action="store_true", help="count waiting messages; fetch nothing"
    )
    general.add_argument("-s", "--silent", action="store_true", help="work silently")
    general.add_argument(
        "-v", "--verbose", action="count", default=0, help="work noisily (repeat for more)"
    )
    general.add_argument(
        "-N", "--nodetach", action="store_true", help="stay in the foreground in daemon mode"
    )
    general.add_argument("-q", "--quit", action="store_true", help="stop the running daemon")
    general.add_argument(
        "--configdump",
        action="store_const",
        const="python",
        help="print the configuration as fetchmailconf reads it; "
        "--configdump=json prints it as JSON",
    )
    general.add_argument(
        "--configdump=json",
        dest="configdump",
        action="store_const",
        const="json",
        help=argparse.SUPPRESS,
    )
    general.add_argument(
        "--pidfile", metavar="FILE", help="the daemon writes its pid (and interval) there"
    )
    general.add_argument(
        "--status", action="store_true", help="show the running daemon's accounts and exit"
    )
    general.add_argument(
        "--json", action="store_true", help="with --status: print it as JSON, for scripts"
    )
    general.add_argument(
        "--poll",
        nargs="?",
        const="*",
        metavar="ACCOUNT",
        help="make the running daemon poll now (every account, or one)",
    )
    general.add_argument(
        "--demo", action="store_true", help="poll a built-in demo server into a built-in SMTP sink"
    )
    general.add_argument(
        "--daemon-default",
        type=_int,
        metavar="SECONDS",
        help="run as a daemon polling every SECONDS, unless the rc file says `set daemon N` "
        "(-d overrides the rc file; this does not)",
    )
    general.add_argument(
        "--systemd-unit",
        action="store_true",
        help="print a systemd user unit that runs this fetchd, and exit",
    )
    general.add_argument("--debug", action="store_true", help="tracebacks for internal errors")
    general.add_argument(
        "--fleet",
        metavar="DSN",
        help="daemon over PostfixAdmin's fetchmail table in this PostgreSQL (a postgresql:// "
        "URL without a password: libpq reads ~/.pgpass)",
    )
    general.add_argument(
        "--fleet-server-connections",
        metavar="N",
        type=_int,
        default=0,
        help="with --fleet: at most N polls of one server at a time across all workers",
    )
    general.add_argument(
        "--metrics",
        metavar="[HOST:]PORT",
        help="daemon: serve Prometheus metrics at HOST:PORT (default host 127.0.0.1; another "
        "address only if named here); needs the metrics extra",
    )
    general.add_argument(
        "hosts", nargs="*", metavar="server", help="poll only these entries of the rc file"
    )
    _add_oauth2_options(parser)

    for title, flags in _GROUPS.items():
        group = parser.add_argument_group(title)
        for flag in flags:
            dest = "override:" + "|".join(flag.flags)
            if flag.convert is None:
                group.add_argument(
                    *flag.flags,
                    dest=dest,
                    action="store_const",
                    const=flag.constant,
                    help=flag.help,
                )
            else:
                group.add_argument(
                    *flag.flags, dest=dest, type=flag.convert, metavar=flag.metavar, help=flag.help
                )
    return parser


def _add_oauth2_options(parser: _Parser) -> None:
    oauth2 = parser.add_argument_group("OAuth2 (auth xoauth2 or oauthbearer)")
    oauth2.add_argument(
        "--oauth2-login",
        metavar="ACCOUNT",
        help="log ACCOUNT (user@pollname) in once and keep its tokens; then exit",
    )
    oauth2.add_argument(
        "--oauth2-logout", metavar="ACCOUNT", help="forget ACCOUNT's stored OAuth2 tokens"
    )
    oauth2.add_argument(
        "--oauth2-provider", metavar="PROVIDER", help="google, microsoft, or an issuer URL"
    )
    oauth2.add_argument("--oauth2-client-id", metavar="ID", help="your client registration")
    oauth2.add_argument(
        "--oauth2-client-secret",
        metavar="SECRET",
        help="its secret, if any; - reads it from standard input, out of the process list",
    )
    oauth2.add_argument("--oauth2-scope", metavar="SCOPE", help="instead of the provider's")
    oauth2.add_argument(
        "--oauth2-flow",
        choices=("device", "browser"),
        default="",
        help="device code, or a browser and a loopback redirect (default: device if offered)",
    )


_ALL_FLAGS = {
    "override:" + "|".join(flag.flags): flag for flags in _GROUPS.values() for flag in flags
}


def parse_args(argv: Sequence[str]) -> Options:
    """Parse fetchmail's command line; a bad one raises ConfigError (exit 5, as fetchmail)."""
    parser = _build_parser()
    namespace, rest = parser.parse_known_intermixed_args(list(argv))
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    values = vars(namespace)
    if values["json"] and not values["status"]:
        parser.error("--json goes with --status")
    # argparse keeps only the last of two flags with one dest, which is fetchmail's rule too, but
    # -k and -K share a key with different dests: order among those follows the command line.
    overrides = _ordered_overrides(argv, values)
    if values["oauth2_login"] and not (values["oauth2_provider"] and values["oauth2_client_id"]):
        parser.error("--oauth2-login needs --oauth2-provider and --oauth2-client-id")
    if values["fleet_server_connections"] and not 0 < values["fleet_server_connections"] <= 256:
        parser.error("--fleet-server-connections needs a number from 1 to 256")
    if values["metrics"] is not None:
        from fetchd.daemon.metrics import parse_metrics_address

        try:
            parse_metrics_address(values["metrics"])
        except ConfigError as exc:
            parser.error(str(exc))
    if values["daemon_default"] is not None and values["daemon_default"] <= 0:
        parser.error("--daemon-default needs a number of seconds above 0")
    return Options(
        rcfile=values["rcfile"],
        hosts=tuple(values["hosts"]),
        overrides=overrides,
        check=values["check"],
        silent=values["silent"],
        verbose=values["verbose"],
        version=values["version"],
        nodetach=values["nodetach"],
        quit=values["quit"],
        configdump=values["configdump"],
        demo=values["demo"],
        status=values["status"],
        status_json=values["json"],
        poll=values["poll"],
        pidfile=values["pidfile"],
        daemon_default=values["daemon_default"],
        systemd_unit=values["systemd_unit"],
        fleet=values["fleet"],
        fleet_server_connections=values["fleet_server_connections"],
        metrics=values["metrics"],
        debug=values["debug"],
        oauth2_login=values["oauth2_login"],
        oauth2_logout=values["oauth2_logout"],
        oauth2_provider=values["oauth2_provider"],
        oauth2_client_id=values["oauth2_client_id"],
        oauth2_client_secret=values["oauth2_client_secret"],
        oauth2_scope=values["oauth2_scope"],
        oauth2_flow=values["oauth2_flow"],
    )


def _ordered_overrides(argv: Sequence[str], values: dict[str, object]) -> tuple[Override, ...]:
    """Overrides in the order their flags last appear, so `-k -K` means nokeep."""
    position: dict[str, int] = {}
    for index, word in enumerate(argv):
        if word == "--":
            break
        for dest, flag in _ALL_FLAGS.items():
            if _spells(word, flag.flags):
                position[dest] = index
    chosen = [
        (
            position.get(dest, -1),
            Override(flag.level, flag.key, flag.constant if flag.convert is None else values[dest]),
        )
        for dest, flag in _ALL_FLAGS.items()
        if values.get(dest) is not None
    ]
    chosen.sort(key=lambda pair: pair[0])
    return tuple(item for _, item in chosen)


def _spells(word: str, flags: tuple[str, ...]) -> bool:
    for flag in flags:
        if flag.startswith("--"):
            if word == flag or word.startswith(flag + "="):
                return True
        elif word.startswith("-") and not word.startswith("--") and flag[1] in word[1:2]:
            return True
    return False


def help_text() -> str:
    return _build_parser().format_help()


def version_line() -> str:
    return f"This is fetchd release {__version__} (fetchmail-compatible mail retriever)."
