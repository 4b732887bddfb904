"""Where a provider's endpoints are: built in for Google and Microsoft, else RFC 8414 metadata.

An issuer URL is asked for ``/.well-known/oauth-authorization-server`` (RFC 8414), falling back
to OpenID discovery (``/.well-known/openid-configuration``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from fetchd.auth.oauth2.http import check_endpoint
from fetchd.errors import ConfigError, OAuth2UnavailableError


@dataclass(frozen=True)
class Provider:
    """An authorization server's endpoints and the scope mail access needs there."""

    name: str  # as the user gave it: google, microsoft or the issuer URL
    token_endpoint: str
    authorization_endpoint: str | None
    device_endpoint: str | None
    scope: str


GOOGLE = Provider(
    name="google",
    token_endpoint="https://oauth2.googleapis.com/token",
    authorization_endpoint="https://accounts.google.com/o/oauth2/v2/auth",
    # Google's device flow does not grant the Gmail scope: the browser flow it is.
    device_endpoint=None,
    scope="https://mail.google.com/",
)
MICROSOFT = Provider(
    name="microsoft",
    token_endpoint="https://login.microsoftonline.com/common/oauth2/v2.0/token",
    authorization_endpoint="https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
    device_endpoint="https://login.microsoftonline.com/common/oauth2/v2.0/devicecode",
    # offline_access: without it Microsoft issues no refresh token.
    scope="offline_access https://outlook.office.com/IMAP.AccessAsUser.All"
    " https://outlook.office.com/POP.AccessAsUser.All",
)
BUILT_IN = {"google": GOOGLE, "microsoft": MICROSOFT}

_METADATA_PATHS = (
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
)


def resolve_provider(name: str, *, timeout: float, scope: str | None = None) -> Provider:
    """The provider called ``name`` (a built-in name or an issuer URL), with ``scope`` when the
    user gave one."""
    provider = BUILT_IN.get(name.lower()) or _discover(name, timeout)
    if scope:
        provider = Provider(
            provider.name,
            provider.token_endpoint,
            provider.authorization_endpoint,
            provider.device_endpoint,
            scope,
        )
    return provider


def _discover(issuer: str, timeout: float) -> Provider:
    if "://" not in issuer:
        raise ConfigError(
            f"--oauth2-provider {issuer!r}: give google, microsoft or the issuer's URL"
        )
    base = check_endpoint(issuer).rstrip("/")
    for path in _METADATA_PATHS:
        try:
            response = httpx.get(base + path, timeout=timeout, trust_env=False)
        except httpx.HTTPError as exc:
            raise OAuth2UnavailableError(
                f"{issuer}: cannot fetch OAuth2 metadata ({type(exc).__name__})"
            ) from None
        if response.status_code == 200:
            try:
                metadata = response.json()
            except ValueError:
                continue
            if isinstance(metadata, dict) and isinstance(metadata.get("token_endpoint"), str):
                return _from_metadata(issuer, metadata)
    raise ConfigError(f"{issuer}: no OAuth2 metadata (RFC 8414 or OpenID discovery) there")


def _from_metadata(issuer: str, metadata: dict[str, Any]) -> Provider:
    def endpoint(key: str) -> str | None:
        value = metadata.get(key)
        return check_endpoint(value) if isinstance(value, str) else None

    token = endpoint("token_endpoint")
    assert token is not None
    return Provider(
        name=issuer,
        token_endpoint=token,
        authorization_endpoint=endpoint("authorization_endpoint"),
        device_endpoint=endpoint("device_authorization_endpoint"),
        scope="",
    )
