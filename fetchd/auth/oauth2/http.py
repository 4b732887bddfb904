"""The one rule for talking HTTP to an OAuth2 provider: HTTPS, or plain HTTP to loopback only.

A token endpoint receives refresh tokens and client secrets; plain HTTP would show them to the
network. Loopback is allowed because the RFC 8252 redirect and the tests' server live there.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from fetchd.errors import ConfigError


def check_endpoint(url: str) -> str:
    """``url`` if it is HTTPS, or HTTP to a loopback address; else ConfigError naming it."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and _is_loopback(parts.hostname or ""):
        return url
    raise ConfigError(
        f"OAuth2 endpoint {parts.scheme}://{parts.hostname}{parts.path} refused:"
        " HTTPS is required (plain HTTP only to a loopback address)"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
