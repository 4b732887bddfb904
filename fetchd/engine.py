"""What one ``fetchd`` run does: read the configuration, then dump it, describe it, or poll.

Each account (one user of one poll entry) is polled in turn, as fetchmail does; an account's
failure is reported with its name and stage and the others carry on. The exit status combines
the accounts' outcomes by fetchmail's rule.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import pwd
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from fetchd import logconfig
from fetchd.config import Config, ParseEnvironment, configdump, configdump_json, load_rcfile
from fetchd.config.check import check_config
from fetchd.config.describe import describe
from fetchd.config.model import LocalName, RCGlobals, Server, User
from fetchd.config.overrides import apply_overrides, select_entries
from fetchd.config.parser import NO_PASSWORD_AUTH
from fetchd.daemon.supervisor import AccountStatus
from fetchd.delivery.bsmtp import BSMTPDeliverer, BSMTPSettings
from fetchd.delivery.headers import Trace, tracepolls_note
from fetchd.delivery.maildir import MaildirDeliverer, MaildirSettings, maildir_path
from fetchd.delivery.mda import MDADeliverer, MDASettings
from fetchd.delivery.multidrop import MultidropRules
from fetchd.delivery.routing import RoutingDeliverer
from fetchd.delivery.smtp import SMTPDeliverer, SMTPSettings
from fetchd.errors import (
    AuthError,
    ConfigError,
    DNSError,
    ExitCode,
    FetchdError,
    SocketError,
)
from fetchd.hooks import run_hook
from fetchd.net.interface import note_activity, skip_reason
from fetchd.net.plugin import Connector, PluginLinks
from fetchd.net.tls import TLSSettings
from fetchd.options import Options, version_line
from fetchd.outcome import combine_exit_codes
from fetchd.poll import PollResult, PollSettings, poll_account
from fetchd.selection import SelectionPolicy
from fetchd.source import MailSource
from fetchd.state import AccountLock, AccountState, UIDStore

if TYPE_CHECKING:  # the IMAP modules (and aioimaplib) are imported when an account needs them
    from fetchd.imap.source import IMAPSource

log = structlog.get_logger("fetchd")

# Keywords fetchd reads but does not act on yet: one warning per keyword and run. Not here,
# because fetchd's behaviour is already what they ask for: `uidl` (POP3 UIDs are always
# tracked), `fastuidl` (a faster search for them: fetchd lists them with one UIDL) and
# `properties` (fetchmail ignores it too; it is for other programs reading the rc file).
IGNORED_KEYWORDS = frozenset(
    {
        "principal",
        "mimedecode",
        "fetchdomains",
        "showdots",
    }
)


def run(options: Options) -> int:
    logconfig.configure(
        verbosity=options.verbose, silent=options.silent, fmt="console" if options.demo else None
    )
    if options.demo:
        from fetchd.demo.run import run_demo

        return run_demo(options)
    from fetchd.daemon.service import command_while_daemon_runs, control_command

    answered = control_command(options)
    if answered is None and not (options.version or options.configdump):
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
    if options.version:
        print(version_line())
        print(describe(config), end="")
        return 0
    entries = select_entries(config, options.hosts, options, env)
    if not entries:
        if config.filename != "-" and not os.path.exists(config.filename):
            raise ConfigError(
                f"no mailservers have been specified: the rc file {config.filename} does not exist"
            )
        raise ConfigError(f"no mailservers have been specified in {config.filename}")
    warn_ignored_keywords(config, entries)
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
            poll_user,
            _run_loop,
            idle_wait=_idle_until_mail,
            can_idle=can_idle,
        )
    return _run_loop(lambda: poll_entries(config, entries, options))


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


# IDLE is renewed before servers drop it (RFC 2177: 30 minutes).
IDLE_RENEW = 28 * 60.0


async def poll_entries(config: Config, entries: list[Server], options: Options) -> int:
    """Poll each selected entry once, in turn (daemon mode is fetchd.daemon.service's)."""
    store = await asyncio.to_thread(UIDStore.open)
    try:
        codes = []
        for server in entries:
            for user in server.users:
                codes.append(await poll_user(config, server, user, options, store))
        return combine_exit_codes(codes)
    finally:
        store.close()


def can_idle(server: Server) -> bool:
    """fetchmail IDLEs on an entry with one IMAP account and one folder; fetchd does so for
    every such entry, each on its own connection, while the other entries poll as usual."""
    return (
        server.protocol == "IMAP"
        and len(server.users) == 1
        and server.users[0].idle
        and len(server.users[0].mailboxes) <= 1
    )


def warn_idle_refused(entries: list[Server]) -> None:
    for server in entries:
        if any(user.idle for user in server.users) and not can_idle(server):
            log.warning(
                "idle.refused",
                text=f"{server.pollname}: idle works for an entry with one IMAP account and one "
                "folder, as in fetchmail; polling it at the daemon interval instead",
            )


async def _idle_until_mail(config: Config, server: Server, user: User) -> None:
    """Wait in IDLE until the folder changes; the caller then polls (a fresh search, so nothing
    that arrived between the poll and the IDLE is missed)."""
    label = f"{user.remote}@{server.pollname}"
    password = await _password(config, server, user)
    plugin = PluginLinks(server.plugin) if server.plugin else None
    try:
        await _idle_once(server, user, label, password, plugin)
    finally:
        if plugin is not None:
            await plugin.aclose()


async def _idle_once(
    server: Server, user: User, label: str, password: str, plugin: PluginLinks | None
) -> None:
    folder = (user.mailboxes or ("INBOX",))[0]
    source = await _open_imap(server, user, password, label, folder, plugin)
    try:
        log.info("idle.start", text=f"{label}: waiting for new mail (IDLE)")
        while not await source.client.idle(IDLE_RENEW):
            pass  # renewed: nothing arrived for 28 minutes
    finally:
        await source.abort()


async def poll_user(
    config: Config,
    server: Server,
    user: User,
    options: Options,
    store: UIDStore,
    status: AccountStatus | None = None,
) -> int:
    """One account's poll; every failure becomes one clear line and fetchmail's exit code.

    In daemon mode ``status`` is updated for ``--status``, and an error that repeats the
    previous poll's is logged at debug level only: once per change, not once per poll.
    """
    label = f"{user.remote}@{server.pollname}"
    with structlog.contextvars.bound_contextvars(account=label):
        return await _poll_user(config, server, user, options, store, status, label)


async def _poll_user(
    config: Config,
    server: Server,
    user: User,
    options: Options,
    store: UIDStore,
    status: AccountStatus | None,
    label: str,
) -> int:
    stage = "configuration"
    messages = octets = 0
    began = time.monotonic()
    try:
        if not user.remote:
            raise ConfigError(
                f'poll {server.pollname!r}: the user name is empty (`user ""`, line '
                f"{user.line}); write the name to log in as in the rc file"
            )
        protocol = _protocol(server)
        folders = user.mailboxes or ("INBOX",)
        if protocol == "POP3":
            folders = ("INBOX",)
        stage = "interface"
        skipped = skip_reason(server.pollname, server.interface, server.monitor)
        delivered = 0
        if skipped is not None:  # fetchmail's interface/monitor: not now, and not an error
            log.info("poll.skipped", text=skipped)
        else:
            try:
                lock = AccountLock.for_account(server.pollname, user.remote)
                stage = "locking"
                with lock:
                    if user.preconnect:
                        stage = "preconnect"
                        await run_hook("preconnect", user.preconnect, label, server.deadline)
                    stage = "password"
                    password = await _password(config, server, user)
                    stage = "dns"
                    true_name = await _true_name(server)  # once per poll, for every folder
                    for folder in folders:
                        stage = f"polling {folder}" if protocol == "IMAP" else "polling"
                        result = await _poll_folder(
                            config.globals,
                            server,
                            user,
                            password,
                            protocol,
                            folder,
                            options,
                            store,
                            true_name,
                        )
                        delivered += result.delivered
                        messages += result.delivered
                        octets += result.octets
                        if options.check and result.on_server - result.seen > 0:
                            delivered += 1
                    if user.postconnect:
                        stage = "postconnect"
                        await run_hook("postconnect", user.postconnect, label, server.deadline)
            finally:
                note_activity(server.monitor)  # our own traffic is not the link's activity
        code, error = int(ExitCode.MAIL if delivered else ExitCode.NOMAIL), None
    except FetchdError as exc:
        code, error = int(exc.exit_code), f"{stage}: {exc}"
        repeated = status is not None and status.error == error
        (log.debug if repeated else log.error)(
            "account.failed", stage=stage, text=f"{label}: {error}"
        )
    # For machines (journald, key=value); a person's terminal has the fetchmail-style lines.
    log.info(
        "poll.summary",
        outcome=code,
        delivered=messages,
        octets=octets,
        seconds=round(time.monotonic() - began, 3),
        error=error,
    )
    if status is not None:
        if status.error and not error:
            log.info("account.recovered", text=f"{label}: polling works again")
        status.last_poll, status.outcome, status.error = time.time(), code, error
        status.messages += messages
        status.octets += octets
    return code


def _protocol(server: Server) -> str:
    if server.protocol in ("POP3", "APOP"):
        return "POP3"
    if server.protocol in ("IMAP", "auto"):
        return "IMAP" if server.protocol == "IMAP" else "auto"
    raise ConfigError(f"protocol {server.protocol} is not supported by fetchd")


_asked_passwords: dict[tuple[str, str], str] = {}  # asked once per run, as fetchmail does


async def _password(config: Config, server: Server, user: User) -> str:
    if user.password is not None:
        return user.password
    if server.auth in NO_PASSWORD_AUTH:
        # A `skip` entry named on the command line: fetchmail's placeholder, as for the others
        # (the parser gives it only to the entries it will poll); it is never sent.
        return user.remote
    key = (server.pollname, user.remote)
    if key in _asked_passwords:
        return _asked_passwords[key]
    prompt = f"Enter password for {user.remote}@{server.pollname}: "
    if not sys.stdin.isatty():
        raise AuthError(
            f"no password for {user.remote}@{server.pollname} in {config.filename}, and no "
            "terminal to ask on"
        )
    _asked_passwords[key] = await asyncio.to_thread(getpass.getpass, prompt)
    return _asked_passwords[key]


def _tls(user: User, server: Server) -> TLSSettings:
    # `auth ssh` through a plugin: the command (ssh) started the server already logged in and
    # carries the session; no password is sent, and TLS is the rc file's choice, not required.
    tunnel = server.plugin is not None and server.auth == "ssh"
    return TLSSettings(
        ssl=user.ssl,
        sslproto="" if tunnel and user.sslproto is None and not user.ssl else user.sslproto,
        sslcertck=user.sslcertck,
        sslcertck_explicit=user.sslcertck_explicit,
        sslcertfile=user.sslcertfile,
        sslcertpath=user.sslcertpath,
        sslcommonname=user.sslcommonname,
        sslfingerprint=user.sslfingerprint,
        sslcert=user.sslcert,
        sslkey=user.sslkey,
    )


async def _poll_folder(
    globals_: RCGlobals,
    server: Server,
    user: User,
    password: str,
    protocol: str,
    folder: str,
    options: Options,
    store: UIDStore,
    true_name: tuple[str, str | None],
) -> PollResult:
    """``true_name``: the server's true name and address (``_true_name``)."""
    state = await asyncio.to_thread(store.account, server.pollname, user.remote, folder)
    if globals_.idfile and protocol in ("POP3", "auto") and Path(globals_.idfile).exists():
        await asyncio.to_thread(
            store.import_fetchids,
            globals_.idfile,
            server.pollname,
            user.remote,
            folder,
            fetchids_host=server.host,
        )
    plugin = PluginLinks(server.plugin) if server.plugin else None
    plugout = PluginLinks(server.plugout, "plugout") if server.plugout else None
    open_source = _source_opener(server, user, password, protocol, folder, state, plugin)
    protocol_name = "POP3" if protocol == "POP3" else "IMAP"
    truename, trueaddr = true_name
    trace = Trace(
        server=truename,
        server_ip=trueaddr,
        protocol=protocol_name,
        invisible=globals_.invisible,
        polling=tracepolls_note(
            server.pollname,
            user.remote,
            folder if user.mailboxes and protocol_name == "IMAP" else None,
        )
        if server.tracepolls
        else "",
    )
    deliverer = _deliverer(globals_, server, user, trace, plugout)
    settings = PollSettings(
        selection=SelectionPolicy(
            keep=user.keep,
            fetchall=user.fetchall,
            flush=user.flush,
            limit=user.limit,
            limitflush=user.limitflush,
            fetchlimit=user.fetchlimit,
        ),
        expunge=user.expunge,
        check_only=options.check,
        warnings=float(user.warnings),
    )
    routed = RoutingDeliverer(
        deliverer,
        account=f"{user.remote}@{server.pollname}",
        rules=_multidrop_rules(globals_, server, user, truename),
        dropstatus=user.dropstatus,
        dropdelivered=user.dropdelivered,
        rewrite_host=truename if user.rewrite else None,
        accept_bad_header=server.badheader,
        mda=bool(user.mda),
    )

    try:
        return await poll_account(open_source, routed, state, settings)
    finally:
        try:
            await routed.aclose()
        finally:
            for links in (plugin, plugout):
                if links is not None:
                    await links.aclose()


async def _true_name(server: Server) -> tuple[str, str | None]:
    """fetchmail's true name and address of the server, for the Received line, rewriting and
    multidrop: with ``dns`` (the default) its canonical name and first address as the resolver
    gives them; with ``no dns``, the name from the rc file and no address."""
    if not server.dns:
        return server.host, None
    loop = asyncio.get_running_loop()
    try:
        try:
            found = await loop.getaddrinfo(
                server.host,
                None,
                type=socket.SOCK_STREAM,
                flags=socket.AI_CANONNAME | socket.AI_ADDRCONFIG,
            )
        except socket.gaierror:
            # fetchmail asks with AI_ADDRCONFIG only; on a machine whose only address is
            # loopback that finds nothing for "localhost", which is still reachable.
            found = await loop.getaddrinfo(
                server.host, None, type=socket.SOCK_STREAM, flags=socket.AI_CANONNAME
            )
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise DNSError(
            f"couldn't find canonical DNS name of {server.pollname} ({server.host}): {reason}"
        ) from None
    _family, _type, _proto, canonical, address = found[0]
    return canonical or server.host, str(address[0])


def _deliverer(
    globals_: RCGlobals,
    server: Server,
    user: User,
    trace: Trace,
    plugout: PluginLinks | None,
) -> SMTPDeliverer | MDADeliverer | MaildirDeliverer | BSMTPDeliverer:
    """Where this account's mail goes: fetchmail's order, bsmtp, then mda, then SMTP/LMTP."""
    maildir = maildir_path(user.mda)
    if user.bsmtp:
        return BSMTPDeliverer(
            BSMTPSettings(
                path=user.bsmtp,
                recipients=tuple(_local(n) for n in user.localnames[:1]),
                smtpaddress=user.smtpaddress,
                trace=trace,
                multidrop=user.multidrop,
                pass8bits=user.pass8bits,
            )
        )
    if maildir is not None:
        return MaildirDeliverer(
            MaildirSettings(
                path=maildir,
                recipient=_local(user.localnames[0]) if user.localnames else user.remote,
                trace=trace,
            )
        )
    if user.mda:
        return MDADeliverer(
            MDASettings(
                command=user.mda,
                recipients=tuple(_local(n) for n in user.localnames[:1]),
                timeout=float(server.deadline),
                stripcr=user.stripcr and not user.forcecr,
                trace=trace,
            )
        )
    return SMTPDeliverer(
        SMTPSettings(
            smtphunt=user.smtphunt,
            recipients=tuple(_local(n) for n in user.localnames[:1]),
            smtpaddress=user.smtpaddress,
            smtpname=user.smtpname,
            antispam=user.antispam,
            softbounce=globals_.softbounce,
            bouncemail=globals_.bouncemail,
            spambounce=globals_.spambounce,
            postmaster=globals_.postmaster,
            batchlimit=user.batchlimit,
            timeout=float(server.deadline),
            lmtp=user.lmtp,
            pass8bits=user.pass8bits,
            trace=trace,
            helo_name=trace.server if globals_.invisible else None,  # as fetchmail
            esmtp_name=server.esmtpname or _calling_user(),
            esmtp_password=server.esmtppassword,
            multidrop=user.multidrop,
        ),
        plugout=plugout,
    )


def _calling_user() -> str:
    """fetchmail's default esmtpname: the user running it."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _local(name: LocalName) -> str:
    return name[1] if isinstance(name, tuple) else name


def _multidrop_rules(
    globals_: RCGlobals, server: Server, user: User, truename: str
) -> MultidropRules | None:
    if not user.multidrop:
        return None
    return MultidropRules(
        server_names=(truename,),
        aka=server.aka,
        localnames=user.localnames,
        wildcard=user.wildcard,
        envelope=server.envelope,
        envskip=server.envskip,
        qvirtual=server.qvirtual,
        localdomains=server.localdomains,
        postmaster=globals_.postmaster,
    )


def _plugin_connector(
    plugin: PluginLinks | None, server: Server, user: User, protocol: str
) -> Connector | None:
    """The connection through ``plugin``, with fetchmail's %h and %p: the server's name, and its
    port or service as the rc file gives it, else the protocol's service name."""
    if plugin is None:
        return None
    default = {"POP3": "pop3", "IMAP": "imap"}[protocol] + ("s" if user.ssl else "")
    return lambda: plugin.connect(server.host, server.service or default)


async def _open_imap(
    server: Server,
    user: User,
    password: str,
    label: str,
    folder: str,
    plugin: PluginLinks | None,
    *,
    recorded: Callable[[], Collection[str]] | None = None,
) -> IMAPSource:
    from fetchd.imap.connect import open_imap

    return await open_imap(
        host=server.host,
        port=server.port,
        user=user.remote,
        password=password,
        label=label,
        tls=_tls(user, server),
        timeout=float(server.deadline),
        auth=server.auth,
        folder=folder,
        fetchall=user.fetchall,
        recorded=recorded,
        size_chunk=user.fetchsizelimit,
        connector=_plugin_connector(plugin, server, user, "IMAP"),
    )


def _source_opener(
    server: Server,
    user: User,
    password: str,
    protocol: str,
    folder: str,
    state: AccountState,
    plugin: PluginLinks | None = None,
) -> Callable[[], Awaitable[MailSource]]:
    label = f"{user.remote}@{server.pollname}" + (f"/{folder}" if folder != "INBOX" else "")

    async def open_pop3_source() -> MailSource:
        from fetchd.pop3.source import POP3Account, open_pop3

        return await open_pop3(
            POP3Account(
                host=server.host,
                port=server.port,
                user=user.remote,
                password=password,
                label=label,
                tls=_tls(user, server),
                timeout=float(server.deadline),
                auth=server.auth,
                apop=server.protocol == "APOP",
            ),
            connector=_plugin_connector(plugin, server, user, "POP3"),
        )

    async def open_imap_source() -> MailSource:
        source = await _open_imap(
            server, user, password, label, folder, plugin, recorded=state.delivered
        )
        if await asyncio.to_thread(state.set_uidvalidity, source.uidvalidity):
            log.warning(
                "imap.uidvalidity",
                text=f"{label}: UIDVALIDITY changed; UIDs recorded before no longer apply",
            )
        return source

    async def open_auto_source() -> MailSource:
        try:
            return await open_imap_source()
        except SocketError:
            return await open_pop3_source()

    if protocol == "POP3":
        return open_pop3_source
    if protocol == "IMAP":
        return open_imap_source
    return open_auto_source
