"""Token-endpoint requests (RFC 6749 section 3.2), shared by refreshing and the login flows.

Authlib's sans-I/O helpers build the form body (``prepare_token_request``); httpx sends it with a
deadline. We do not use Authlib's httpx client class: it wraps httpx in a deprecated shim, and
the few lines here keep the error mapping (which codes mean "log in again") in one place.
Both are imported at the first request, not with this module: every poll imports it, few use
OAuth2, and the two cost 3.6 MB of the 40 MB a poll may take (issue 13).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fetchd.auth.oauth2.http import check_endpoint
from fetchd.auth.oauth2.secret import Secret
from fetchd.errors import OAuth2UnavailableError

# Error codes after which the same request can never succeed: the grant or client is bad.
PERMANENT_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})


@dataclass(frozen=True)
class TokenEndpointError(Exception):
    """The endpoint answered with an OAuth2 error code (never its description: it may echo)."""

    error: str
    status: int

    @property
    def permanent(self) -> bool:
        return self.error in PERMANENT_ERRORS


@dataclass(frozen=True)
class Client:
    """The user's own client registration."""

    client_id: str
    client_secret: Secret | None = None

    def form(self) -> dict[str, str]:
        """Client authentication in the body (``client_secret_post``, or a public client)."""
        fields = {"client_id": self.client_id}
        if self.client_secret:
            fields["client_secret"] = self.client_secret.reveal()
        return fields


def token_request(
    url: str,
    grant_type: str,
    client: Client,
    *,
    account: str,
    timeout: float,
    **parameters: str,
) -> dict[str, Any]:
    """POST a grant to the token endpoint; its JSON answer, or TokenEndpointError /
    OAuth2UnavailableError (network, 5xx, not JSON) naming ``account`` and no secret."""
    import httpx
    from authlib.oauth2.rfc6749.parameters import prepare_token_request

    body = prepare_token_request(grant_type, **parameters, **client.form())
    try:
        response = httpx.post(
            check_endpoint(url),
            content=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            timeout=timeout,
            trust_env=False,
        )
    except httpx.HTTPError as exc:
        raise OAuth2UnavailableError(
            f"{account}: OAuth2 token endpoint unreachable ({type(exc).__name__})"
        ) from None
    if response.status_code >= 500:
        raise OAuth2UnavailableError(
            f"{account}: OAuth2 token endpoint answered HTTP {response.status_code}"
        )
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise OAuth2UnavailableError(
            f"{account}: OAuth2 token endpoint answered HTTP {response.status_code}, not JSON"
        )
    error = answer.get("error")
    if error is not None or response.status_code != 200:
        raise TokenEndpointError(str(error or "http_error"), response.status_code)
    return answer
