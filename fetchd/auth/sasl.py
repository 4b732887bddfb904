"""SASL mechanisms for POP3 AUTH and IMAP AUTHENTICATE: pure, bytes in and out.

Each has ``name``, ``initial_response()`` (None when the mechanism waits for a challenge) and
``respond(challenge)``; the protocol clients do the base64 framing.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Protocol

from fetchd.errors import AuthError


@dataclass
class Plain:
    user: str
    password: str = field(repr=False)
    name: str = "PLAIN"

    def initial_response(self) -> bytes | None:
        return b"\0" + self.user.encode() + b"\0" + self.password.encode()

    def respond(self, challenge: bytes) -> bytes:
        raise AuthError("the server sent a challenge to AUTH PLAIN")


@dataclass
class Login:
    user: str
    password: str = field(repr=False)
    name: str = "LOGIN"
    _step: int = 0

    def initial_response(self) -> bytes | None:
        return None

    def respond(self, challenge: bytes) -> bytes:
        self._step += 1
        if self._step == 1:
            return self.user.encode()
        if self._step == 2:
            return self.password.encode()
        raise AuthError("AUTH LOGIN: the server asked for more than a user name and password")


@dataclass
class CramMD5:
    user: str
    password: str = field(repr=False)
    name: str = "CRAM-MD5"

    def initial_response(self) -> bytes | None:
        return None

    def respond(self, challenge: bytes) -> bytes:
        digest = hmac.new(self.password.encode(), challenge, hashlib.md5).hexdigest()
        return f"{self.user} {digest}".encode()


@dataclass
class XOAuth2:
    """Google's and Microsoft's XOAUTH2; the token is the rc file's password."""

    user: str
    token: str = field(repr=False)
    name: str = "XOAUTH2"

    def initial_response(self) -> bytes | None:
        return f"user={self.user}\x01auth=Bearer {self.token}\x01\x01".encode()

    def respond(self, challenge: bytes) -> bytes:
        return b""  # the error details come as a challenge; an empty answer ends the exchange


@dataclass
class OAuthBearer:
    """RFC 7628 OAUTHBEARER; the token is the rc file's password."""

    user: str
    token: str = field(repr=False)
    name: str = "OAUTHBEARER"

    def initial_response(self) -> bytes | None:
        return f"n,a={self.user},\x01auth=Bearer {self.token}\x01\x01".encode()

    def respond(self, challenge: bytes) -> bytes:
        return b"\x01"


class SecurityContext(Protocol):
    """The client side of a GSS-API security context (``fetchd.auth.kerberos`` adapts the
    ``gssapi`` package to it; tests pass a scripted one)."""

    @property
    def complete(self) -> bool: ...

    def step(self, token: bytes) -> bytes | None: ...

    def wrap(self, data: bytes) -> bytes: ...

    def unwrap(self, data: bytes) -> bytes: ...


KERBEROS_AUTH = frozenset({"gssapi", "kerberos_v5"})
SERVICES = {"IMAP": "imap", "POP3": "pop"}  # RFC 4752 / IANA GSS-API service names


def service_principal(protocol: str, truename: str, principal: str | None) -> str:
    """The service to ask a ticket for: the rc file's ``principal`` when given (``service@host``
    or a full ``service/host@REALM``), else ``imap@HOST`` / ``pop@HOST`` with the server's true
    name, as fetchmail does."""
    return principal or f"{SERVICES[protocol]}@{truename}"


# RFC 4752, section 3.1: the security layers a client may choose (bit mask, first octet).
LAYER_NONE = 0x01


@dataclass
class GSSAPI:
    """RFC 4752 SASL GSSAPI over an established-or-establishing ``context``.

    ``first_token`` is the context's first output (made by the caller, which is where the KDC is
    asked for a service ticket). While the context is incomplete each challenge is a GSS-API
    token for it. Once it is complete the server sends a wrapped 4-octet message (a mask of the
    security layers it supports and its maximum buffer size); fetchd chooses no security layer
    (the session is protected by TLS or not at all, as the rc file says) and answers with the
    wrapped choice, a zero buffer size and ``authzid``, the user to log in as (fetchmail sends
    the rc file's user name there too). No password is involved.
    """

    context: SecurityContext = field(repr=False)
    first_token: bytes = field(repr=False)
    authzid: str
    name: str = "GSSAPI"
    _layer_chosen: bool = False

    def initial_response(self) -> bytes | None:
        return self.first_token

    def respond(self, challenge: bytes) -> bytes:
        if self._layer_chosen:
            raise AuthError("SASL GSSAPI: the server sent a challenge after the layer was chosen")
        if not self.context.complete:
            return self.context.step(challenge) or b""
        if not challenge:  # the server's turn had no token for us (RFC 4752, section 3.1)
            return b""
        offer = self.context.unwrap(challenge)
        if len(offer) != 4:
            raise AuthError(
                f"SASL GSSAPI: the server's security layer message has {len(offer)} octets, not 4"
            )
        if not offer[0] & LAYER_NONE:
            raise AuthError(
                "SASL GSSAPI: the server requires a security layer (integrity or privacy); "
                "fetchd offers only none"
            )
        self._layer_chosen = True
        return self.context.wrap(bytes((LAYER_NONE, 0, 0, 0)) + self.authzid.encode())


Mechanism = Plain | Login | CramMD5 | XOAuth2 | OAuthBearer | GSSAPI


def mechanism(name: str, user: str, secret: str) -> Mechanism:
    """The mechanism called ``name`` (fetchmail's auth value or a SASL name)."""
    table: dict[str, type[Plain | Login | CramMD5 | XOAuth2 | OAuthBearer]] = {
        "plain": Plain,
        "login": Login,
        "cram-md5": CramMD5,
        "xoauth2": XOAuth2,
        "oauthbearer": OAuthBearer,
    }
    kind = table.get(name.lower())
    if kind is None:
        raise AuthError(f"authentication {name!r} is not supported by fetchd")
    return kind(user, secret)
