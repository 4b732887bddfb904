"""ESMTP AUTH to the MTA (RFC 4954), as fetchmail does it with ``esmtpname``/``esmtppassword``.

fetchmail authenticates only when the listener offers AUTH, with the first of CRAM-MD5, PLAIN
and LOGIN it offers; a listener that offers none is simply used, and says at MAIL whether it
needs a login. We do the same, with two rules of our own: a mechanism that fails is not followed
by a weaker one, and PLAIN or LOGIN (the password in clear) is used only on a connection that
does not leave this machine (loopback or a Unix socket).
"""

from __future__ import annotations

import base64
import binascii
import logging

import aiosmtplib
import structlog

from fetchd.auth import sasl
from fetchd.errors import AuthError, DeliveryError

log = structlog.get_logger("fetchd.smtp")

MECHANISMS = ("cram-md5", "plain", "login")  # fetchmail's order of preference
_AUTH_CONTINUE, _AUTH_OK = 334, 235
_MAX_STEPS = 5


def reply_lines(code: int, message: str, limit: int = 200) -> list[str]:
    """An SMTP reply as the ``-v`` dialogue shows it, as the server sent it: ``SMTP< 250 OK``,
    a multi-line reply as ``SMTP< 250-first`` ... ``SMTP< 250 last``. The server's text is
    capped and its control characters escaped, so it cannot rewrite the user's terminal."""
    lines = message.split("\n")[:50]
    return [
        f"SMTP< {code}{' ' if i == len(lines) - 1 else '-'}{_printable(line[:limit])}"
        for i, line in enumerate(lines)
    ]


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def choose_mechanism(offered: list[str], *, local: bool, listener: str) -> str | None:
    """The mechanism to use, None when the listener offers none we know.

    Raises DeliveryError when only clear-text mechanisms are offered on a connection that
    leaves this machine.
    """
    known = [name for name in MECHANISMS if name in {o.lower() for o in offered}]
    if not known:
        return None
    if known[0] != "cram-md5" and not local:
        raise DeliveryError(
            f"{listener}: ESMTP AUTH would send the esmtppassword in clear ({known[0].upper()}) "
            "to a host other than this one, and fetchd does not do that; offer CRAM-MD5 there, "
            "or deliver through a local MTA"
        )
    return known[0]


async def authenticate(
    smtp: aiosmtplib.SMTP, user: str, password: str, *, local: bool, listener: str
) -> None:
    """Log in to the listener after EHLO, if it offers AUTH; DeliveryError if it refuses."""
    chosen = choose_mechanism(smtp.server_auth_methods, local=local, listener=listener)
    if chosen is None:
        return
    mechanism = sasl.mechanism(chosen, user, password)
    command = [b"AUTH", chosen.upper().encode()]
    initial = mechanism.initial_response()
    if initial is not None:
        command.append(base64.b64encode(initial) or b"=")
    debug = log.is_enabled_for(logging.DEBUG)
    if debug:
        log.debug("smtp.send", text=f"SMTP> AUTH {chosen.upper()}" + (" *" if initial else ""))
    reply = await smtp.execute_command(*command)
    for _ in range(_MAX_STEPS):
        if reply.code != _AUTH_CONTINUE:
            break
        try:
            answer = mechanism.respond(base64.b64decode(reply.message, validate=True))
        except (binascii.Error, AuthError) as exc:
            await smtp.execute_command(b"*")  # RFC 4954: cancel the exchange
            raise DeliveryError(f"{listener}: ESMTP AUTH {chosen.upper()}: {exc}") from None
        if debug:
            log.debug("smtp.send", text="SMTP> *")
        reply = await smtp.execute_command(base64.b64encode(answer))
    if debug:
        for line in reply_lines(reply.code, reply.message):
            log.debug("smtp.recv", text=line)
    if reply.code != _AUTH_OK:
        raise DeliveryError(
            f"{listener}: ESMTP AUTH {chosen.upper()} as {user!r} refused: {reply.code} "
            f"{reply.message[:200]}"
        )
