"""The configuration, frozen and typed: what a .fetchmailrc plus the command line mean.

Field names are fetchmail's ``--configdump`` keys, so the rc file, the command line (``Override``
keys), the dump and the code all say ``keep``, ``limit``, ``smtphunt``. Values are resolved:
fetchmail's defaults are applied, the ``defaults`` entry merged, relative paths made absolute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LocalName = str | tuple[str, str]  # "name", or ("remote", "local") from `is remote=local`


@dataclass(frozen=True, slots=True)
class KeywordUse:
    """One keyword as written in the rc file, so the engine can warn about it by line."""

    keyword: str
    line: int
    column: int
    pollname: str
    remote: str | None  # None for server and global keywords


@dataclass(frozen=True, slots=True)
class RCGlobals:
    poll_interval: int = 0
    logfile: str | None = None
    idfile: str | None = None
    pidfile: str | None = None
    postmaster: str = ""
    bouncemail: bool = True
    spambounce: bool = False
    softbounce: bool = True
    properties: str | None = None
    invisible: bool = False
    showdots: bool = False
    syslog: bool = False


@dataclass(frozen=True, slots=True)
class User:
    remote: str
    password: str | None = field(default=None, repr=False)
    passwordfile: str | None = None  # fetchmail 7: its first line, read at each login
    passwordfd: int | None = None  # fetchmail 7: read once from this descriptor
    localnames: tuple[LocalName, ...] = ()
    wildcard: bool = False  # `is * here`: multidrop to any local name
    fetchall: bool = False
    keep: bool = False
    flush: bool = False
    limitflush: bool = False
    rewrite: bool = True
    stripcr: bool = False
    forcecr: bool = False
    pass8bits: bool = False
    dropstatus: bool = False
    dropdelivered: bool = False
    mimedecode: bool = False
    idle: bool = False
    mda: str | None = None
    bsmtp: str | None = None
    lmtp: bool = False
    preconnect: str | None = None
    postconnect: str | None = None
    limit: int = 0
    warnings: int = 3600
    fetchlimit: int = 0
    fetchsizelimit: int = 100
    fastuidl: int = 4
    batchlimit: int = 0
    ssl: bool = False
    sslkey: str | None = None
    sslcert: str | None = None
    sslproto: str | None = None
    sslcertck: bool = True
    sslcertck_explicit: bool = False  # `sslcertck` was written: TLS is then mandatory
    sslcertfile: str | None = None
    sslcertpath: str | None = None
    sslcommonname: str | None = None
    sslfingerprint: str | None = None
    expunge: int = 0
    properties: str | None = None
    smtphunt: tuple[str, ...] = ("localhost",)
    fetchdomains: tuple[str, ...] = ()
    smtpaddress: str | None = None
    smtpname: str | None = None
    antispam: tuple[int, ...] = ()
    mailboxes: tuple[str, ...] = ()
    line: int = 0  # where the user (or the entry) was described

    @property
    def multidrop(self) -> bool:
        """fetchmail's MULTIDROP(): several local names or a wildcard."""
        return self.wildcard or len(self.localnames) > 1


@dataclass(frozen=True, slots=True)
class Server:
    pollname: str
    active: bool = True  # False for `skip`
    via: str | None = None
    protocol: str = "auto"
    service: str | None = None
    timeout: int = 300  # as fetchmail stores it: 0 for a negative `timeout` (see deadline)
    interval: int = 0
    envelope: str | None = "Received"
    envskip: int = 0
    qvirtual: str | None = None
    auth: str = "any"
    dns: bool = True
    checkalias: bool = False
    uidl: bool = False
    aka: tuple[str, ...] = ()
    localdomains: tuple[str, ...] = ()
    interface: str | None = None
    monitor: str | None = None
    plugin: str | None = None
    plugout: str | None = None
    principal: str | None = None
    esmtpname: str | None = None
    esmtppassword: str | None = field(default=None, repr=False)
    tracepolls: bool = False
    badheader: bool = False  # True: accept messages with bad headers
    users: tuple[User, ...] = ()
    line: int = 0

    @property
    def host(self) -> str:
        """The name to connect to: ``via`` if given, else the poll name."""
        return self.via or self.pollname

    @property
    def deadline(self) -> int:
        """Seconds any network wait may take: ``timeout``, or the default 300 where a negative
        ``timeout`` is stored as 0 (fetchmail's way); fetchd keeps every wait bounded."""
        return self.timeout if self.timeout > 0 else 300


@dataclass(frozen=True, slots=True)
class Config:
    filename: str
    globals: RCGlobals = RCGlobals()
    servers: tuple[Server, ...] = ()
    keyword_uses: tuple[KeywordUse, ...] = ()
