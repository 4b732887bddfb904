"""One account's poll, built from its settings: the source opener (POP3, IMAP or auto, through
a plugin if any), TLS settings, the server's true name, the deliverer (BSMTP, Maildir, MDA or
SMTP/LMTP) with its multidrop routing, and the poll's own settings.

It reads the server and user entries and the rc file's globals, nothing else of the rc model
and nothing of the command line, so accounts from another source (a database) build the same
pipeline.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from fetchd.config.check import connect_port
from fetchd.config.model import LocalName, RCGlobals, Server, User
from fetchd.delivery.bsmtp import BSMTPDeliverer, BSMTPSettings
from fetchd.delivery.headers import Trace, tracepolls_note
from fetchd.delivery.maildir import MaildirDeliverer, MaildirSettings, maildir_path
from fetchd.delivery.mda import MDADeliverer, MDASettings
from fetchd.delivery.multidrop import MultidropRules
from fetchd.delivery.routing import RoutingDeliverer
from fetchd.delivery.smtp import SMTPDeliverer, SMTPSettings
from fetchd.errors import ConfigError, DNSError, SocketError
from fetchd.net.hostname import calling_user
from fetchd.net.plugin import Connector, PluginLinks
from fetchd.net.tls import TLSSettings
from fetchd.poll import PollMemory, PollResult, PollSettings, poll_account
from fetchd.selection import SelectionPolicy
from fetchd.source import MailSource
from fetchd.state import AccountState, UIDStore

if TYPE_CHECKING:  # the IMAP modules (and aioimaplib) are imported when an account needs them
    from fetchd.imap.source import IMAPSource

log = structlog.get_logger("fetchd")


def protocol_of(server: Server) -> str:
    if server.protocol in ("POP3", "APOP"):
        return "POP3"
    if server.protocol in ("IMAP", "auto"):
        return "IMAP" if server.protocol == "IMAP" else "auto"
    raise ConfigError(f"protocol {server.protocol} is not supported by fetchd")


def tls_settings(user: User, server: Server) -> TLSSettings:
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


async def poll_folder(
    globals_: RCGlobals,
    server: Server,
    user: User,
    password: str,
    protocol: str,
    folder: str,
    check_only: bool,
    store: UIDStore,
    true_name: tuple[str, str | None],
    memory: PollMemory,
) -> PollResult:
    """``true_name``: the server's true name and address (``server_true_name``); ``memory``:
    what earlier polls of this run remember (warnings already given)."""
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
    open_source = _source_opener(
        server, user, password, protocol, folder, state, plugin, truename=true_name[0]
    )
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
    deliverer = deliverer_for(globals_, server, user, trace, plugout)
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
        check_only=check_only,
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
        return await poll_account(open_source, routed, state, settings, memory)
    finally:
        try:
            await routed.aclose()
        finally:
            for links in (plugin, plugout):
                if links is not None:
                    await links.aclose()


async def server_true_name(server: Server) -> tuple[str, str | None]:
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


def deliverer_for(
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
            esmtp_name=server.esmtpname or calling_user(),
            esmtp_password=server.esmtppassword,
            multidrop=user.multidrop,
            account_sender=user.remote,
        ),
        plugout=plugout,
    )


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


async def open_imap_folder(
    server: Server,
    user: User,
    password: str,
    label: str,
    folder: str,
    plugin: PluginLinks | None,
    *,
    recorded: Callable[[], Collection[str]] | None = None,
    truename: str | None = None,
) -> IMAPSource:
    from fetchd.imap.connect import open_imap

    return await open_imap(
        host=server.host,
        port=connect_port(server.service),
        user=user.remote,
        password=password,
        label=label,
        tls=tls_settings(user, server),
        timeout=float(server.deadline),
        auth=server.auth,
        folder=folder,
        fetchall=user.fetchall,
        recorded=recorded,
        size_chunk=user.fetchsizelimit,
        connector=_plugin_connector(plugin, server, user, "IMAP"),
        gssapi_target=gssapi_target(server, "IMAP", truename),
    )


def gssapi_target(server: Server, protocol: str, truename: str | None) -> str:
    """The Kerberos service principal of ``server`` (fetchd.auth.kerberos.service_principal);
    "" where no Kerberos is tried (``auth`` neither any, gssapi nor kerberos_v5)."""
    from fetchd.auth.kerberos import KERBEROS_AUTH, service_principal

    if server.auth not in KERBEROS_AUTH and server.auth != "any":
        return ""
    return service_principal(protocol, truename or server.host, server.principal)


def _source_opener(
    server: Server,
    user: User,
    password: str,
    protocol: str,
    folder: str,
    state: AccountState,
    plugin: PluginLinks | None = None,
    *,
    truename: str | None = None,
) -> Callable[[], Awaitable[MailSource]]:
    label = f"{user.remote}@{server.pollname}" + (f"/{folder}" if folder != "INBOX" else "")

    async def open_pop3_source() -> MailSource:
        from fetchd.pop3.source import POP3Account, open_pop3

        return await open_pop3(
            POP3Account(
                host=server.host,
                port=connect_port(server.service),
                user=user.remote,
                password=password,
                label=label,
                tls=tls_settings(user, server),
                timeout=float(server.deadline),
                auth=server.auth,
                apop=server.protocol == "APOP",
                gssapi_target=gssapi_target(server, "POP3", truename),
            ),
            connector=_plugin_connector(plugin, server, user, "POP3"),
        )

    async def open_imap_source() -> MailSource:
        source = await open_imap_folder(
            server,
            user,
            password,
            label,
            folder,
            plugin,
            recorded=state.delivered,
            truename=truename,
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
