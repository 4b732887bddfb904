"""The .fetchmailrc grammar (fetchmail 6.4's rcfile_y.y), by recursive descent: pure.

Parsing gives raw entries in which every setting is "unset" until the file says it; ``resolve``
then does what fetchmail's load_params does: merge a leading ``defaults`` entry into every other
entry (only settings the entry leaves unset; lists too), then apply fetchmail's defaults. One user
description is one entry, carrying its server's options, as in fetchmail.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from fetchd.config.lexer import Kind, Token, tokenize
from fetchd.config.model import Config, KeywordUse, LocalName, RCGlobals, Server, User
from fetchd.errors import RCSyntaxError

# --- the keyword tables: one place for parser, tests and the unsupported-keyword warnings -------

# Server options: keyword -> (field, kind). kinds: "string", "number", "flag", "list"
SERVER_OPTIONS: dict[str, tuple[str, str]] = {
    "via": ("via", "string"),
    "protocol": ("protocol", "proto"),
    "service": ("service", "service"),
    "port": ("service", "port"),
    "interval": ("interval", "number"),
    "authenticate": ("auth", "auth"),
    "timeout": ("timeout", "number"),
    "envelope": ("envelope", "envelope"),
    "qvirtual": ("qvirtual", "string"),
    "aka": ("aka", "list"),
    "localdomains": ("localdomains", "list"),
    "interface": ("interface", "string"),
    "monitor": ("monitor", "string"),
    "plugin": ("plugin", "string"),
    "plugout": ("plugout", "string"),
    "principal": ("principal", "string"),
    "esmtpname": ("esmtpname", "string"),
    "esmtppassword": ("esmtppassword", "string"),
    "dns": ("dns", "flag"),
    "checkalias": ("checkalias", "flag"),
    "uidl": ("uidl", "flag"),
    "tracepolls": ("tracepolls", "flag"),
    "bad-header": ("badheader", "badheader"),
}
SERVER_NEGATABLE = frozenset({"dns", "checkalias", "uidl", "tracepolls", "envelope"})

USER_OPTIONS: dict[str, tuple[str, str]] = {
    "password": ("password", "string"),
    "folder": ("mailboxes", "list"),
    "smtphost": ("smtphunt", "list"),
    "fetchdomains": ("fetchdomains", "list"),
    "smtpaddress": ("smtpaddress", "string"),
    "smtpname": ("smtpname", "string"),
    "antispam": ("antispam", "numbers"),
    "mda": ("mda", "string"),
    "bsmtp": ("bsmtp", "path"),
    # fetchmail 7's; unknown to fetchmail 6.4, which cannot be their oracle.
    "passwordfile": ("passwordfile", "path"),
    "passwordfd": ("passwordfd", "count"),
    "lmtp": ("lmtp", "flag"),
    "preconnect": ("preconnect", "string"),
    "postconnect": ("postconnect", "string"),
    "keep": ("keep", "flag"),
    "flush": ("flush", "flag"),
    "limitflush": ("limitflush", "flag"),
    "fetchall": ("fetchall", "flag"),
    "rewrite": ("rewrite", "flag"),
    "forcecr": ("forcecr", "flag"),
    "stripcr": ("stripcr", "flag"),
    "pass8bits": ("pass8bits", "flag"),
    "dropstatus": ("dropstatus", "flag"),
    "dropdelivered": ("dropdelivered", "flag"),
    "mimedecode": ("mimedecode", "flag"),
    "idle": ("idle", "flag"),
    "ssl": ("ssl", "flag"),
    "sslkey": ("sslkey", "path"),
    "sslcert": ("sslcert", "path"),
    "sslproto": ("sslproto", "string"),
    "sslcertck": ("sslcertck", "flag"),
    "sslcertfile": ("sslcertfile", "path"),
    "sslcertpath": ("sslcertpath", "path"),
    "sslcommonname": ("sslcommonname", "string"),
    "sslfingerprint": ("sslfingerprint", "string"),
    "limit": ("limit", "count"),
    "warnings": ("warnings", "count"),
    "fetchlimit": ("fetchlimit", "count"),
    "fetchsizelimit": ("fetchsizelimit", "count"),
    "fastuidl": ("fastuidl", "count"),
    "batchlimit": ("batchlimit", "count"),
    "expunge": ("expunge", "count"),
    "properties": ("properties", "string"),
}
USER_NEGATABLE = frozenset(
    [
        "keep",
        "flush",
        "limitflush",
        "fetchall",
        "rewrite",
        "forcecr",
        "stripcr",
        "pass8bits",
        "dropstatus",
        "dropdelivered",
        "mimedecode",
        "idle",
        "ssl",
        "sslcertck",
    ]
)

# `set` statements: keyword -> (field, kind); flags accept `set no KEYWORD`.
GLOBAL_OPTIONS: dict[str, tuple[str, str]] = {
    "logfile": ("logfile", "path"),
    "idfile": ("idfile", "path"),
    "pidfile": ("pidfile", "path"),
    "daemon": ("poll_interval", "number"),
    "postmaster": ("postmaster", "string"),
    "bouncemail": ("bouncemail", "flag"),
    "spambounce": ("spambounce", "flag"),
    "softbounce": ("softbounce", "flag"),
    "properties": ("properties", "string"),
    "syslog": ("syslog", "flag"),
    "invisible": ("invisible", "flag"),
    "showdots": ("showdots", "flag"),
}

# `proto` values: spelling (case-insensitive) -> (dump name, implied service)
PROTOCOLS: dict[str, tuple[str, str | None]] = {
    "auto": ("auto", None),
    "pop2": ("unknown?!?", None),
    "pop3": ("POP3", None),
    "imap": ("IMAP", None),
    "apop": ("APOP", None),
    "rpop": ("RPOP", None),
    "kpop": ("POP3", "kpop"),
    "sdps": ("POP3", None),
    "etrn": ("ETRN", None),
    "odmr": ("ODMR", None),
}
NO_PASSWORD_AUTH = frozenset({"gssapi", "kerberos_v4", "kerberos_v5", "ssh", "otp", "external"})


@dataclass(frozen=True, slots=True)
class ParseEnvironment:
    """What fetchmail takes from the process: the login name, home and rc-file directory."""

    login: str
    home: str
    fetchmailhome: str | None = None
    rcdir: str = "."
    hostname: str = ""  # this host's name: ETRN and ODMR ask for mail of this domain by default

    @classmethod
    def current(cls, rcfile: str | None) -> ParseEnvironment:
        import pwd

        entry = pwd.getpwuid(os.getuid())
        home = os.environ.get("HOME") or entry.pw_dir
        rcdir = (
            os.path.dirname(os.path.abspath(rcfile)) if rcfile and rcfile != "-" else os.getcwd()
        )
        return cls(
            entry.pw_name, home, os.environ.get("FETCHMAILHOME"), rcdir, socket.gethostname()
        )


# --- raw entries -----------------------------------------------------------------------------


@dataclass
class _RawUser:
    line: int
    options: dict[str, Any] = field(default_factory=dict)
    localnames: list[LocalName] = field(default_factory=list)
    wildcard: bool = False


@dataclass
class _RawEntry:
    pollname: str
    skip: bool
    line: int
    server: dict[str, Any] = field(default_factory=dict)
    user: _RawUser = field(default_factory=lambda: _RawUser(0))


class _Parser:
    def __init__(self, tokens: list[Token], filename: str, env: ParseEnvironment) -> None:
        self.tokens = tokens
        self.index = 0
        self.filename = filename
        self.env = env
        self.globals: dict[str, Any] = {}
        self.entries: list[_RawEntry] = []
        self.uses: list[KeywordUse] = []
        self._pollname = ""
        self._remote: str | None = None
        self._statement = 0  # index of the token that begins the current statement

    # token helpers
    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def peek(self, offset: int = 1) -> Token:
        return self.tokens[min(self.index + offset, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind is not Kind.END:
            self.index += 1
        return token

    def is_keyword(self, *names: str, token: Token | None = None) -> bool:
        token = token or self.token
        return token.kind is Kind.KEYWORD and token.value in names

    def error(self, expected: str, token: Token | None = None) -> RCSyntaxError:
        token = token or self.token
        found = "end of file" if token.kind is Kind.END else _shown(token)
        message = f"syntax error at {found}: expected {expected}"
        end = next(
            i
            for i in range(min(self.index + 1, len(self.tokens) - 1), -1, -1)
            if self.tokens[i] is token
        )
        quote = next(
            (t for t in reversed(self.tokens[self._statement : end + 1]) if t.unclosed), None
        )
        if quote is None:
            return RCSyntaxError(self.filename, token.line, token.column, message)
        return RCSyntaxError(
            self.filename,
            quote.line,
            quote.column,
            f"the quote {quote.text[0]} opened here is never closed, so {_shown(quote)} is "
            f"read as a bare word; then {message} (line {token.line}, column {token.column})",
            found_line=token.line,
        )

    def expect(self, kind: Kind, what: str) -> Token:
        if self.token.kind is not kind:
            raise self.error(what)
        return self.advance()

    def use(self, token: Token, level: str) -> None:
        remote = self._remote if level == "user" else None
        self.uses.append(KeywordUse(token.value, token.line, token.column, self._pollname, remote))

    # grammar
    def parse(self) -> None:
        while self.token.kind is not Kind.END:
            self._statement = self.index
            if self.is_keyword("set"):
                self.statement_set()
            elif self.is_keyword("poll", "skip", "defaults"):
                self.entry()
            else:
                raise self.error("'set', 'poll', 'skip' or 'defaults'")

    def statement_set(self) -> None:
        self.advance()
        negated = self.is_keyword("no")
        if negated:
            self.advance()
        token = self.token
        spec = GLOBAL_OPTIONS.get(token.value) if token.kind is Kind.KEYWORD else None
        if spec is None or (negated and spec[1] != "flag"):
            raise self.error("a global option (daemon, logfile, postmaster, ...)")
        self._pollname = ""
        self.use(token, "globals")
        self.advance()
        name, kind = spec
        if kind == "flag":
            self.globals[name] = not negated
            return
        if self.token.kind is Kind.MAP:  # fetchmail allows `set daemon = 300`
            self.advance()
        if kind == "number":
            self.globals[name] = self.expect(Kind.NUMBER, "a number").number
        else:
            value = self.expect(Kind.STRING, "a string").value
            self.globals[name] = self.path(value) if kind == "path" else value

    def entry(self) -> None:
        verb = self.advance()
        if verb.value == "defaults":
            pollname = "defaults"
        else:
            pollname = self.expect(Kind.STRING, "a server name").value
        self._pollname, self._remote = pollname, None
        template = _RawEntry(pollname, verb.value == "skip", verb.line)
        while self.server_option(template):
            pass
        if self.is_keyword("user"):
            while self.is_keyword("user"):
                user = _RawUser(self.token.line)
                self.user_description(user)
                while self.user_option(user):
                    pass
                self.entries.append(_entry_with(template, user))
        else:
            user = _RawUser(template.line)
            while self.user_option(user):
                pass
            self.entries.append(_entry_with(template, user))
        if self.is_server_option():
            # fetchmail reads the misplaced option and stops at its last word or, after a list
            # (aka, localdomains), at the word that ends the list; so do we, naming it.
            misplaced = self.token
            keyword = self.peek() if self.is_keyword("no") else self.token
            self.server_option(_RawEntry(pollname, False, 0))
            listed = SERVER_OPTIONS[keyword.value][1] == "list"
            raise self.error(
                f"the end of entry {pollname!r}: server option {keyword.text!r} at line "
                f"{misplaced.line}, column {misplaced.column} comes after user options; "
                "server options go before the first user",
                self.token if listed else self.tokens[self.index - 1],
            )
        if not (self.token.kind is Kind.END or self.is_keyword("set", "poll", "skip", "defaults")):
            raise self.error("a user option, 'user', 'poll', 'skip' or 'set'")

    def is_server_option(self) -> bool:
        token = self.token
        if self.is_keyword("no"):
            return self.is_keyword(*SERVER_NEGATABLE, token=self.peek())
        return token.kind is Kind.KEYWORD and token.value in SERVER_OPTIONS

    def server_option(self, entry: _RawEntry) -> bool:
        if not self.is_server_option():
            return False
        negated = self.is_keyword("no")
        if negated:
            self.advance()
        token = self.advance()
        self.use(token, "server")
        name, kind = SERVER_OPTIONS[token.value]
        options = entry.server
        if negated:
            options[name] = None if name == "envelope" else False
            if name == "envelope":  # the skip count stays: fetchmail's `no envelope` leaves it
                options["envelope_disabled"] = True
            return True
        if kind == "flag":
            options[name] = True
        elif kind == "string":
            options[name] = self.expect(Kind.STRING, "a string").value
        elif kind == "number":
            options[name] = self.expect(Kind.NUMBER, "a number").number
        elif kind == "list":
            options.setdefault(name, []).extend(self.strings("a name"))
        elif kind == "proto":
            word = self.expect(Kind.PROTOCOL, "a protocol (auto, pop3, imap, ...)")
            proto = PROTOCOLS[word.value]
            options["protocol"] = proto[0]
            if proto[1]:
                options["service"] = proto[1]
        elif kind == "port":  # `port` takes a number only: `port "995"` is a syntax error
            options["service"] = str(self.expect(Kind.NUMBER, "a port number").number)
        elif kind == "service":
            if self.token.kind is Kind.NUMBER:
                options["service"] = str(self.advance().number)
            else:
                options["service"] = self.expect(Kind.STRING, "a service name or port").value
        elif kind == "auth":
            word = self.expect(Kind.AUTHTYPE, "an authentication type (any, password, ...)")
            options["auth"] = word.value
        elif kind == "envelope":
            if self.token.kind is Kind.NUMBER:
                options["envskip"] = self.advance().number
            else:
                options["envskip"] = 0
            options["envelope"] = self.expect(Kind.STRING, "a header name").value
            options.pop("envelope_disabled", None)
        elif kind == "badheader":
            if not self.is_keyword("accept", "reject"):
                raise self.error("accept or reject")
            options["badheader"] = self.advance().value == "accept"
        return True

    def user_description(self, user: _RawUser) -> None:
        self.use(self.advance(), "user")
        first = self.expect(Kind.STRING, "a user name")
        if self.is_keyword("there"):
            self.advance()
            user.options["remote"] = first.value
        elif self.is_keyword("here") or self.token.kind in (Kind.STRING, Kind.MAP):
            self.mapping_list(user, first)
            if not self.is_keyword("here"):
                raise self.error("'here' after a list of local names")
            self.advance()
        else:
            user.options["remote"] = first.value
        self._remote = user.options.get("remote")

    def mapping_list(self, user: _RawUser, first: Token | None) -> int:
        count = 0
        while True:
            token = first if first is not None else self.token
            if token.kind is not Kind.STRING:
                return count
            if first is None:
                self.advance()
            first = None
            if self.token.kind is Kind.MAP:
                self.advance()
                local = self.expect(Kind.STRING, "a local name after '='").value
                user.localnames.append((token.value, local))
            elif token.value == "*":  # quoted or not, as in fetchmail's grammar
                user.wildcard = True
            else:
                user.localnames.append(token.value)
            count += 1

    def user_option(self, user: _RawUser) -> bool:
        token = self.token
        if self.is_keyword("is", "to"):
            self.use(self.advance(), "user")
            if (
                self.token.kind is Kind.STRING
                and self.is_keyword("there", token=self.peek())
                and token.value == "is"
            ):
                user.options["remote"] = self.advance().value
                self.advance()
                return True
            if self.mapping_list(user, None) == 0:
                raise self.error("a local name or '*'")
            if self.is_keyword("here"):
                self.advance()
            return True
        negated = self.is_keyword("no")
        if negated:
            if not self.is_keyword(*USER_NEGATABLE, token=self.peek()):
                if self.is_keyword(*SERVER_NEGATABLE, token=self.peek()):
                    return False
                raise self.error("a keyword that 'no' can negate", self.peek())
            self.advance()
            token = self.token
        if token.kind is not Kind.KEYWORD or token.value not in USER_OPTIONS:
            return False
        self.advance()
        self.use(token, "user")
        name, kind = USER_OPTIONS[token.value]
        options = user.options
        if kind == "flag":
            options[name] = not negated
        elif kind in ("string", "path"):
            value = self.expect(Kind.STRING, "a string").value
            options[name] = self.path(value) if kind == "path" else value
        elif kind == "count":
            number = self.expect(Kind.NUMBER, "a number").number
            options[name] = number
        elif kind == "list":
            options.setdefault(name, []).extend(self.strings("a name"))
        elif kind == "numbers":
            codes = [self.expect(Kind.NUMBER, "an SMTP reply code").number]
            while self.token.kind is Kind.NUMBER:
                codes.append(self.advance().number)
            options.setdefault(name, []).extend(codes)
        return True

    def strings(self, what: str) -> list[str]:
        """One or more strings. A list option given twice adds to its list, as in fetchmail."""
        words = [self.expect(Kind.STRING, what).value]
        while self.token.kind is Kind.STRING:
            words.append(self.advance().value)
        return words

    def path(self, value: str) -> str:
        """fetchmail's prependdir: a relative path is relative to the rc file's directory;
        "-" (standard output, for bsmtp) stays as it is."""
        if not value or value == "-" or value.startswith("/") or self.env.rcdir in ("", "."):
            return value
        return os.path.join(self.env.rcdir, value)


def _entry_with(template: _RawEntry, user: _RawUser) -> _RawEntry:
    return _RawEntry(template.pollname, template.skip, template.line, dict(template.server), user)


def _shown(token: Token) -> str:
    text = token.text if len(token.text) <= 40 else token.text[:37] + "..."
    return text.encode("unicode_escape").decode("ascii")


# --- resolution: defaults entry, fetchmail's defaults -------------------------------------------


def parse(text: str, filename: str, env: ParseEnvironment | None = None) -> Config:
    """Parse a whole rc file; raise RCSyntaxError (file, line, column) on the first error."""
    env = env or ParseEnvironment.current(filename)
    parser = _Parser(tokenize(text, filename), filename, env)
    parser.parse()
    entries = parser.entries
    _check_defaults_come_first(entries, filename)
    # Only a `defaults` entry has that name: `poll defaults` is a syntax error ("defaults" is a
    # keyword).
    if entries and entries[0].pollname == "defaults":
        defaults, entries = entries[0], entries[1:]
        for entry in entries:
            _merge(entry, defaults)
    globals_ = _resolve_globals(parser.globals, env)
    servers = _group(tuple(_resolve(entry, env) for entry in entries))
    return Config(filename, globals_, servers, tuple(parser.uses))


def _check_defaults_come_first(entries: list[_RawEntry], filename: str) -> None:
    polls = [index for index, entry in enumerate(entries) if entry.pollname != "defaults"]
    for entry in entries[polls[0] :] if polls else []:
        if entry.pollname == "defaults":
            raise RCSyntaxError(
                filename,
                entry.line,
                1,
                "a 'defaults' entry comes after a poll entry: fetchmail allows one, first",
            )


# Server settings fetchmail keeps as 0 when given these values: optmerge cannot tell them
# from "not given".
_UNSET_WHEN: dict[str, Any] = {
    "timeout": 0,
    "interval": 0,
    "envskip": 0,
    "auth": "any",
    "badheader": False,
}


def _has_envelope(server: dict[str, Any]) -> bool:
    return "envelope" in server or "envelope_disabled" in server


def _merge(entry: _RawEntry, defaults: _RawEntry) -> None:
    # fetchmail's optmerge: what the entry leaves unset. Where fetchmail stores a value as 0
    # (timeout 0, `auth any`, `bad-header reject`...), that is unset there, so the defaults
    # entry's value wins even over the same word in the entry. The aka list is not merged.
    for key, value in defaults.server.items():
        if key == "aka":
            continue
        if key in _UNSET_WHEN and entry.server.get(key, _UNSET_WHEN[key]) == _UNSET_WHEN[key]:
            entry.server[key] = value
        if key in ("envelope", "envelope_disabled") and _has_envelope(entry.server):
            continue  # the entry's own envelope (or its `no envelope`) stands
        entry.server.setdefault(key, value)
    # The defaults entry's `user NAME` is the remote name of every entry that names none.
    for key, value in defaults.user.options.items():
        entry.user.options.setdefault(key, value)
    if not entry.user.localnames and defaults.user.localnames:
        entry.user.localnames = list(defaults.user.localnames)
        entry.user.wildcard = entry.user.wildcard or defaults.user.wildcard
    entry.user.wildcard = entry.user.wildcard or defaults.user.wildcard


def _resolve_globals(raw: dict[str, Any], env: ParseEnvironment) -> RCGlobals:
    home = env.fetchmailhome or env.home
    values = dict(raw)
    if "poll_interval" in values:  # `set daemon -5`: fetchmail dumps 0; fetchd polls once
        values["poll_interval"] = max(values["poll_interval"], 0)
    values.setdefault("idfile", os.path.join(home, ".fetchids"))
    values.setdefault("postmaster", "postmaster" if env.login == "root" else env.login)
    known = {f.name for f in fields(RCGlobals)}
    return RCGlobals(**{k: v for k, v in values.items() if k in known})


def _count(value: int) -> int:
    return max(value, 0)  # fetchmail's NUM_VALUE_OUT: a negative count means "explicitly none"


def _timeout(value: int) -> int:
    """fetchmail's timeout: 0 and -1 mean its default, 300 s; any other negative is stored and
    dumped as 0 (fetchd still keeps a deadline for every wait: Server.deadline)."""
    if value in (0, -1):
        return 300
    return max(value, 0)


def _resolve(entry: _RawEntry, env: ParseEnvironment) -> Server:
    raw = entry.server
    options = entry.user.options
    user_values: dict[str, Any] = {}
    for name, kind in USER_OPTIONS.values():
        if name in options:
            value = options[name]
            if kind == "count":
                value = _count(value)
            elif kind in ("list", "numbers"):
                value = tuple(value)
            user_values[name] = value
    user_values["sslcertck_explicit"] = options.get("sslcertck") is True
    if raw.get("protocol") in ("ETRN", "ODMR") and "fetchdomains" not in user_values:
        user_values["fetchdomains"] = (env.hostname or socket.gethostname(),)
    if "stripcr" not in user_values:
        user_values["stripcr"] = options.get("mda") is not None
    # An explicit `user ""` stays empty, as in fetchmail; polling it is refused (fetchd.account).
    remote = options.get("remote", env.login)
    # fetchmail's placeholder where no password is ever sent (ETRN, Kerberos, GSSAPI, ...).
    # fetchmail sets it for the entries it will poll, so not for `skip` ones.
    no_password = raw.get("auth") in NO_PASSWORD_AUTH or raw.get("protocol") == "ETRN"
    if no_password and not entry.skip and user_values.get("password") is None:
        user_values["password"] = remote
    user = User(
        remote=remote,
        localnames=tuple(entry.user.localnames) or (env.login,),
        wildcard=entry.user.wildcard,
        line=entry.user.line or entry.line,
        **user_values,
    )
    server_values: dict[str, Any] = {}
    for name in (
        "via",
        "protocol",
        "service",
        "interval",
        "auth",
        "timeout",
        "qvirtual",
        "aka",
        "localdomains",
        "interface",
        "monitor",
        "plugin",
        "plugout",
        "principal",
        "esmtppassword",
        "dns",
        "checkalias",
        "uidl",
        "tracepolls",
        "badheader",
    ):
        if name in raw:
            value = raw[name]
            server_values[name] = tuple(value) if isinstance(value, list) else value
    if raw.get("envelope_disabled"):
        server_values["envelope"] = None
        server_values["envskip"] = raw.get("envskip", 0)
    elif "envelope" in raw:
        server_values["envelope"] = raw["envelope"]
        server_values["envskip"] = raw.get("envskip", 0)
    server_values["timeout"] = _timeout(raw.get("timeout", 0))
    for name in ("interval", "envskip"):  # fetchmail dumps a negative one as 0
        if name in server_values:
            server_values[name] = max(server_values[name], 0)
    return Server(
        pollname=entry.pollname,
        active=not entry.skip,
        esmtpname=raw.get("esmtpname", env.login),  # an explicit "" stays, as in fetchmail
        users=(user,),
        line=entry.line,
        **server_values,
    )


def _group(entries: tuple[Server, ...]) -> tuple[Server, ...]:
    """One Server per `poll` statement, with its users in order (fetchmail's dump groups so)."""
    grouped: list[Server] = []
    for server in entries:
        last = grouped[-1] if grouped else None
        if last is not None and last.line == server.line and last.pollname == server.pollname:
            grouped[-1] = _with_users(last, last.users + server.users)
        else:
            grouped.append(server)
    return tuple(grouped)


def _with_users(server: Server, users: tuple[User, ...]) -> Server:
    from dataclasses import replace

    return replace(server, users=users)


ParseFunction = Callable[[str, str], Config]
