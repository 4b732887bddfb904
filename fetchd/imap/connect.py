"""Opening an IMAP folder for a poll: TLS as the rc file asks, login as ``auth`` asks, SELECT.

TLS follows the POP3 rules (``fetchd.net.tls``): ``ssl`` is implicit TLS; ``sslproto ''`` is clear
text; otherwise STARTTLS. A server without STARTTLS is refused when the rc file names any TLS
option, and is otherwise used in clear without a password (loopback included).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Collection

import structlog

from fetchd.auth import kerberos, sasl
from fetchd.errors import AuthError, CredentialsRejectedError
from fetchd.imap.client import IMAPClient, NoSTARTTLSError, Security
from fetchd.imap.source import IMAPSource
from fetchd.net.plugin import Connector
from fetchd.net.tls import Security as TLSSecurity
from fetchd.net.tls import (
    TLSSettings,
    check_peer,
    make_context,
    no_starttls_error,
    server_hostname,
)

log = structlog.get_logger("fetchd")


async def open_imap(
    *,
    host: str,
    port: int | None,
    user: str,
    password: str,
    label: str,
    tls: TLSSettings,
    timeout: float,
    auth: str,
    folder: str,
    fetchall: bool,
    recorded: Callable[[], Collection[str]] | None,
    size_chunk: int = 0,
    connector: Connector | None = None,
    gssapi_target: str = "",
) -> IMAPSource:
    """Connect (through ``connector``, a plugin, when given), log in and select ``folder``.
    ``gssapi_target``: the service principal for Kerberos (``auth gssapi``/``kerberos_v5``,
    and tried first by ``auth any`` when the server offers GSSAPI and a ticket is there)."""
    client = await _connect(host, port, tls, timeout, connector)
    try:
        if not client.preauthenticated:
            if auth in kerberos.KERBEROS_AUTH:
                mech = await kerberos.start(gssapi_target, user)
                await client.authenticate(mech, sends_secret=False)
            elif auth == "any" and await _gssapi_logged_in(client, gssapi_target, user, label):
                pass
            elif auth in ("any", "password"):
                await client.login(user, password)
            elif auth in ("cram-md5", "xoauth2", "oauthbearer"):
                mechanism = sasl.mechanism(auth, user, password)
                await client.authenticate(mechanism, sends_secret=auth != "cram-md5")
            elif auth == "ssh":
                raise AuthError(
                    "auth ssh: the server did not greet with PREAUTH, so the session is not "
                    "logged in, and with auth ssh fetchd sends no password"
                )
            else:
                raise AuthError(f"authentication {auth!r} is not supported by fetchd for IMAP")
        return await IMAPSource.open(
            client,
            folder,
            label=label,
            fetchall=fetchall,
            recorded=recorded,
            size_chunk=size_chunk,
        )
    except BaseException:
        client.close()
        raise


async def _gssapi_logged_in(client: IMAPClient, target: str, user: str, label: str) -> bool:
    """``auth any``: GSSAPI first when offered and a ticket is there (fetchmail's order). False
    (go on with the password) when there is none, or when the ticket or the server refuses it."""
    if not target or "AUTH=GSSAPI" not in client.capabilities:
        return False
    if not await asyncio.to_thread(kerberos.has_ticket):
        return False
    try:
        mech = await kerberos.start(target, user)
        await client.authenticate(mech, sends_secret=False)
    except (CredentialsRejectedError, kerberos.StartError) as exc:
        log.info("auth.gssapi_declined", account=label, reason=str(exc))
        return False
    return True


async def _connect(
    host: str, port: int | None, tls: TLSSettings, timeout: float, connector: Connector | None
) -> IMAPClient:
    wanted = tls.security()
    connect = functools.partial(
        IMAPClient.connect,
        host,
        timeout=timeout,
        connector=connector,
        server_hostname=server_hostname(tls, host),
        check_peer=functools.partial(check_peer, settings=tls, host=host),
    )
    if wanted is TLSSecurity.TLS:
        return await connect(port or 993, security=Security.TLS, ssl_context=make_context(tls))
    if wanted is TLSSecurity.PLAIN:
        return await connect(port or 143, security=Security.PLAIN, plaintext_password_allowed=True)
    try:
        return await connect(
            port or 143,
            security=Security.STARTTLS,
            ssl_context=make_context(tls),
            starttls_optional=starttls_optional(tls),
        )
    except NoSTARTTLSError:
        raise no_starttls_error(tls, host, "STARTTLS") from None


def starttls_optional(tls: TLSSettings) -> bool:
    """The decision when a server offers no STARTTLS, wherever it is (loopback included):
    refuse it when the rc file asked for TLS with any explicit option, else go on in clear,
    where no password is sent unless the entry says ``sslproto ''``."""
    return tls.required_by is None
