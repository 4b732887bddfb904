"""SASL mechanisms for POP3 AUTH and IMAP AUTHENTICATE: pure, bytes in and out.

Each has ``name``, ``initial_response()`` (None when the mechanism waits for a challenge) and
``respond(challenge)``; the protocol clients do the base64 framing.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

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


Mechanism = Plain | Login | CramMD5 | XOAuth2 | OAuthBearer


def mechanism(name: str, user: str, secret: str) -> Mechanism:
    """The mechanism called ``name`` (fetchmail's auth value or a SASL name)."""
    table: dict[str, type[Mechanism]] = {
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
