"""Kerberos 5 through GSS-API for SASL GSSAPI: the user's credential cache (``KRB5CCNAME`` or the
library's default), the service principal, and errors a user can act on.

The ``gssapi`` package (python-gssapi, over the system's MIT or Heimdal library) is an optional
extra, ``pip install fetchd[kerberos]``; it is imported only when an account needs Kerberos. The
calls that may reach the KDC (acquiring the service ticket: the context's first step) run in a
worker thread, so the event loop never waits on them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from fetchd.auth.sasl import GSSAPI, KERBEROS_AUTH, service_principal
from fetchd.errors import AuthError

__all__ = ["KERBEROS_AUTH", "StartError", "has_ticket", "service_principal", "start"]

# MIT krb5 com_err codes (krb5_err.et), as GSS-API's minor status carries them (unsigned).
_KRB5_BASE = 0x96C73A00
_PRINCIPAL_UNKNOWN = {_KRB5_BASE + 7}  # KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN
_TICKET_EXPIRED = {_KRB5_BASE + 32}  # KRB5KRB_AP_ERR_TKT_EXPIRED
_CLOCK_SKEW = {_KRB5_BASE + 37}  # KRB5KRB_AP_ERR_SKEW
_NO_CACHE = {_KRB5_BASE + 141, _KRB5_BASE + 195}  # KRB5_CC_NOTFOUND, KRB5_FCC_NOFILE


def _gssapi() -> ModuleType:
    try:
        import gssapi
    except ImportError as exc:
        raise AuthError(
            "Kerberos (auth gssapi / kerberos_v5) needs the optional extra: "
            f"pip install 'fetchd[kerberos]' ({exc.msg})"
        ) from None
    return gssapi


@dataclass
class _Context:
    """``gssapi.SecurityContext`` as ``fetchd.auth.sasl.SecurityContext``."""

    inner: Any
    target: str

    @property
    def complete(self) -> bool:
        return bool(self.inner.complete)

    def step(self, token: bytes) -> bytes | None:
        with _errors(self.target):
            out = self.inner.step(token)
        return None if out is None else bytes(out)

    def wrap(self, data: bytes) -> bytes:
        with _errors(self.target):
            return bytes(self.inner.wrap(data, False).message)

    def unwrap(self, data: bytes) -> bytes:
        with _errors(self.target):
            return bytes(self.inner.unwrap(data).message)


@contextlib.contextmanager
def _errors(target: str, kind: type[AuthError] = AuthError) -> Iterator[None]:
    """Turn a GSSError into an AuthError a user can act on (no traceback, no token)."""
    gssapi = _gssapi()
    try:
        yield
    except gssapi.exceptions.GSSError as exc:
        raise kind(str(gss_error(exc, target))) from None


def gss_error(exc: Any, target: str) -> AuthError:
    gssapi = _gssapi()
    minor = int(getattr(exc, "min_code", 0) or 0) & 0xFFFFFFFF
    if isinstance(exc, gssapi.exceptions.MissingCredentialsError) or minor in _NO_CACHE:
        return AuthError("Kerberos: no ticket in the credential cache; run kinit")
    if isinstance(exc, gssapi.exceptions.ExpiredCredentialsError) or minor in _TICKET_EXPIRED:
        return AuthError("Kerberos: the ticket has expired; run kinit again")
    if minor in _PRINCIPAL_UNKNOWN:
        return AuthError(
            f"Kerberos: the KDC does not know the service principal {target!r} "
            "(set `principal` in the rc file to the server's)"
        )
    if minor in _CLOCK_SKEW:
        return AuthError("Kerberos: clock skew too great between this host and the KDC or server")
    detail = " ".join(str(exc.gen_message()).split())[:300]
    return AuthError(f"Kerberos: GSS-API failure for {target!r}: {detail}")


def has_ticket() -> bool:
    """A usable (present, unexpired) initiator credential: ``auth any`` tries GSSAPI then.
    False also when the extra is not installed."""
    try:
        gssapi = _gssapi()
    except AuthError:
        return False
    try:
        return int(gssapi.Credentials(usage="initiate").lifetime or 0) > 0
    except gssapi.exceptions.GSSError:
        return False


class StartError(AuthError):
    """No first token: no ticket, an expired one, an unknown service. Nothing was sent, so
    ``auth any`` goes on with the next method."""


def _start(target: str, authzid: str) -> GSSAPI:
    gssapi = _gssapi()
    with _errors(target, StartError):
        kind = (
            gssapi.NameType.hostbased_service
            if "/" not in target
            else gssapi.NameType.kerberos_principal
        )
        name = gssapi.Name(target, kind)
        flags = (
            gssapi.RequirementFlag.mutual_authentication
            | gssapi.RequirementFlag.out_of_sequence_detection
        )
        inner = gssapi.SecurityContext(name=name, usage="initiate", flags=flags)
        first = inner.step()
    return GSSAPI(_Context(inner, target), bytes(first or b""), authzid)


async def start(target: str, authzid: str) -> GSSAPI:
    """A SASL GSSAPI mechanism for ``target`` with its first token made (in a thread: the
    library asks the KDC for the service ticket there)."""
    return await asyncio.to_thread(_start, target, authzid)
