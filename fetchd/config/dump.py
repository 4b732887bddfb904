"""``--configdump``: the configuration in fetchmail 6.4's own format (what fetchmailconf reads),
as JSON, and as ``-V``'s plain sentences: pure.

The Python-syntax dump is byte-for-byte what ``fetchmail --configdump`` prints for the same file,
tabs and trailing commas included, with one knowing difference: fetchmail garbles characters
outside ASCII (a signed-char bug in its escaping); we print them as they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from fetchd.config.model import Config, LocalName, RCGlobals, Server, User

_FEATURES = "('pop3','imap','gssapi','sdps','etrn','odmr','ssl',)"
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\b": "\\b", "\r": "\\r"}


def _visible(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\0x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def _string(value: str | None) -> str:
    return "None" if value is None else f'"{_visible(value)}"'


def _flag(value: bool) -> str:
    return "TRUE" if value else "FALSE"


def _list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_string(v) for v in values) + "]"


def _localnames(names: Iterable[LocalName], wildcard: bool) -> str:
    items = [
        f"({_string(name[0])}, {_string(name[1])})" if isinstance(name, tuple) else _string(name)
        for name in names
    ]
    if wildcard:
        items.append("'*'")
    return "[" + ", ".join(items) + "]"


def configdump(config: Config) -> str:
    """fetchmail's ``--configdump`` output for this configuration."""
    g = config.globals
    lines = [
        "TRUE=1; FALSE=0",
        "",
        "os_type = 'linux'",
        f"feature_options = {_FEATURES}",
        "# Start of configuration initializer",
        "fetchmailrc = {",
        f"    'poll_interval':{g.poll_interval},",
        f'    "logfile":{_string(g.logfile)},',
        f'    "idfile":{_string(g.idfile)},',
        f'    "postmaster":{_string(g.postmaster)},',
        f"    'bouncemail':{_flag(g.bouncemail)},",
        f"    'spambounce':{_flag(g.spambounce)},",
        f"    'softbounce':{_flag(g.softbounce)},",
        f'    "properties":{_string(g.properties)},',
        f"    'invisible':{_flag(g.invisible)},",
        f"    'showdots':{_flag(g.showdots)},",
        f"    'syslog':{_flag(g.syslog)},",
    ]
    if not config.servers:
        return "\n".join([*lines, "    'servers': []", "}", "# End of initializer", ""])
    lines += ["    # List of server entries begins here", "    'servers': ["]
    for index, server in enumerate(config.servers):
        if index:
            lines.append("\t,")
        lines.extend(_server(server))
    lines += ["    ]", "}", "# End of initializer", ""]
    return "\n".join(lines)


def _server(s: Server) -> list[str]:
    p = "\t    "
    lines = [
        f"\t# Entry for site `{s.pollname}' begins:",
        "\t{",
        f'{p}"pollname":{_string(s.pollname)},',
        f"{p}'active':{_flag(s.active)},",
        f'{p}"via":{_string(s.via)},',
        f'{p}"protocol":{_string(s.protocol)},',
        f'{p}"service":{_string(s.service)},',
        f"{p}'timeout':{s.timeout},",
        f"{p}'interval':{s.interval},",
        f'{p}"envelope":{_string(s.envelope)},',
        f"{p}'envskip':{s.envskip},",
        f'{p}"qvirtual":{_string(s.qvirtual)},',
        # fetchmail 6.4's dump has no name for `external` and leaves the line out.
        *([f'{p}"auth":{_string(s.auth)},'] if s.auth != "external" else []),
        f"{p}'dns':{_flag(s.dns)},",
        f"{p}'uidl':{_flag(s.uidl)},",
        f'{p}"aka":{_list(s.aka)},',
        f'{p}"localdomains":{_list(s.localdomains)},',
        f'{p}"interface":{_string(s.interface)},',
        f'{p}"monitor":{_string(s.monitor)},',
        f'{p}"plugin":{_string(s.plugin)},',
        f'{p}"plugout":{_string(s.plugout)},',
        f'{p}"principal":{_string(s.principal)},',
        f'{p}"esmtpname":{_string(s.esmtpname)},',
        *(
            [f'{p}"esmtppassword":{_string(s.esmtppassword)},']
            if s.esmtppassword is not None
            else []
        ),
        f"{p}'tracepolls':{_flag(s.tracepolls)},",
        f"{p}'badheader': {_flag(s.badheader)},",
        f"{p}'users': [",
    ]
    for user in s.users:
        # fetchmail writes each user's closing "," and the next opening brace on one line.
        first, *rest = _user(user)
        if lines[-1] == "\t\t,":
            lines[-1] += first
        else:
            lines.append(first)
        lines.extend(rest)
    if lines[-1] == "\t\t,":
        lines[-1] += "\t    ]"
    else:
        lines.append("\t    ]")
    lines.append("\t}")
    return lines


def _user(u: User) -> list[str]:
    p = "\t\t    "
    return [
        "\t\t{",
        f'{p}"remote":{_string(u.remote)},',
        f'{p}"password":{_string(u.password)},',
        # fetchmail 7's keywords: shown only when set, so a 6.4 dump is unchanged.
        *([f'{p}"passwordfile":{_string(u.passwordfile)},'] if u.passwordfile else []),
        *([f"{p}'passwordfd':{u.passwordfd},"] if u.passwordfd is not None else []),
        f"{p}'localnames':{_localnames(u.localnames, u.wildcard)},",
        *(
            f"{p}'{name}':{_flag(getattr(u, name))},"
            for name in (
                "fetchall",
                "keep",
                "flush",
                "limitflush",
                "rewrite",
                "stripcr",
                "forcecr",
                "pass8bits",
                "dropstatus",
                "dropdelivered",
                "mimedecode",
                "idle",
            )
        ),
        f'{p}"mda":{_string(u.mda)},',
        f'{p}"bsmtp":{_string(u.bsmtp)},',
        f"{p}'lmtp':{_flag(u.lmtp)},",
        f'{p}"preconnect":{_string(u.preconnect)},',
        f'{p}"postconnect":{_string(u.postconnect)},',
        *(
            f"{p}'{name}':{getattr(u, name)},"
            for name in (
                "limit",
                "warnings",
                "fetchlimit",
                "fetchsizelimit",
                "fastuidl",
                "batchlimit",
            )
        ),
        f"{p}'ssl':{_flag(u.ssl)},",
        f'{p}"sslkey":{_string(u.sslkey)},',
        f'{p}"sslcert":{_string(u.sslcert)},',
        f'{p}"sslproto":{_string(u.sslproto)},',
        f"{p}'sslcertck':{_flag(u.sslcertck)},",
        f'{p}"sslcertfile":{_string(u.sslcertfile)},',
        f'{p}"sslcertpath":{_string(u.sslcertpath)},',
        f'{p}"sslcommonname":{_string(u.sslcommonname)},',
        f'{p}"sslfingerprint":{_string(u.sslfingerprint)},',
        f"{p}'expunge':{u.expunge},",
        f'{p}"properties":{_string(u.properties)},',
        f'{p}"smtphunt":{_list(u.smtphunt)},',
        f'{p}"fetchdomains":{_list(u.fetchdomains)},',
        f'{p}"smtpaddress":{_string(u.smtpaddress)},',
        f'{p}"smtpname":{_string(u.smtpname)},',
        f"{p}'antispam':'{' '.join(str(code) for code in u.antispam)}',",
        f'{p}"mailboxes":{_list(u.mailboxes)},',
        "\t\t}",
        "\t\t,",
    ]


# --- JSON ----------------------------------------------------------------------------------------

_GLOBAL_KEYS = (
    "poll_interval",
    "logfile",
    "idfile",
    "postmaster",
    "bouncemail",
    "spambounce",
    "softbounce",
    "properties",
    "invisible",
    "showdots",
    "syslog",
)
_SERVER_KEYS = (
    "pollname",
    "active",
    "via",
    "protocol",
    "service",
    "timeout",
    "interval",
    "envelope",
    "envskip",
    "qvirtual",
    "auth",
    "dns",
    "uidl",
    "aka",
    "localdomains",
    "interface",
    "monitor",
    "plugin",
    "plugout",
    "principal",
    "esmtpname",
    "tracepolls",
    "badheader",
)
_USER_KEYS = (
    "remote",
    "password",
    "localnames",
    "fetchall",
    "keep",
    "flush",
    "limitflush",
    "rewrite",
    "stripcr",
    "forcecr",
    "pass8bits",
    "dropstatus",
    "dropdelivered",
    "mimedecode",
    "idle",
    "mda",
    "bsmtp",
    "lmtp",
    "preconnect",
    "postconnect",
    "limit",
    "warnings",
    "fetchlimit",
    "fetchsizelimit",
    "fastuidl",
    "batchlimit",
    "ssl",
    "sslkey",
    "sslcert",
    "sslproto",
    "sslcertck",
    "sslcertfile",
    "sslcertpath",
    "sslcommonname",
    "sslfingerprint",
    "expunge",
    "properties",
    "smtphunt",
    "fetchdomains",
    "smtpaddress",
    "smtpname",
    "antispam",
    "mailboxes",
)


def as_dict(config: Config) -> dict[str, Any]:
    """The dump's data as plain JSON-able values, with the same keys."""

    def pick(obj: RCGlobals | Server | User, keys: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in keys:
            value = getattr(obj, key)
            if key == "localnames":
                assert isinstance(obj, User)
                value = [list(v) if isinstance(v, tuple) else v for v in value]
                if obj.wildcard:
                    value.append("*")
            elif key == "antispam":
                value = " ".join(str(code) for code in value)
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out

    data = pick(config.globals, _GLOBAL_KEYS)
    data["servers"] = [
        {**pick(s, _SERVER_KEYS), "users": [pick(u, _USER_KEYS) for u in s.users]}
        for s in config.servers
    ]
    return data


def configdump_json(config: Config) -> str:
    return json.dumps(as_dict(config), indent=2, ensure_ascii=False) + "\n"
