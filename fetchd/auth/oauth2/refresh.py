"""Getting a usable access token for a login: the stored one, or a refreshed one.

Before each login the token is refreshed when it expires within ``REFRESH_MARGIN``; after a login
the server rejected, ``rejected=`` asks for a new one unless another process already replaced
it. The whole read-refresh-save runs under the record's lock, so two processes never spend one
refresh token (see store.py). The request itself is endpoint.py's (RFC 6749 section 6).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from fetchd.auth.oauth2.endpoint import Client, TokenEndpointError, token_request
from fetchd.auth.oauth2.secret import Secret
from fetchd.auth.oauth2.store import TokenRecord, TokenStore
from fetchd.errors import OAuth2GrantError, OAuth2UnavailableError

REFRESH_MARGIN = 300.0  # seconds: refresh a token that expires sooner than this
DEFAULT_LIFETIME = 3600.0  # a provider that omits expires_in: assume an hour

Clock = Callable[[], float]


def login_command(account: str, record: TokenRecord) -> str:
    """The exact command that logs ``account`` in again with the record's provider and client."""
    return (
        f"fetchd --oauth2-login {account} --oauth2-provider {record.provider}"
        f" --oauth2-client-id {record.client_id}"
    )


async def access_token(
    store: TokenStore,
    record: TokenRecord,
    *,
    account: str,
    timeout: float,
    rejected: Secret | None = None,
    clock: Clock = time.time,
    margin: float = REFRESH_MARGIN,
) -> Secret:
    """An access token for ``record``'s (server, user), refreshed when needed (in a thread: the
    record lock is a blocking flock, and the wait is bounded by ``timeout``)."""
    return await asyncio.to_thread(
        access_token_blocking,
        store,
        record,
        account=account,
        timeout=timeout,
        rejected=rejected,
        clock=clock,
        margin=margin,
    )


def access_token_blocking(
    store: TokenStore,
    record: TokenRecord,
    *,
    account: str,
    timeout: float,
    rejected: Secret | None = None,
    clock: Clock = time.time,
    margin: float = REFRESH_MARGIN,
) -> Secret:
    """The synchronous body of ``access_token``."""
    with store.locked(record.server, record.user):
        # Re-read under the lock: another process may have refreshed (and rotated) meanwhile.
        current = store.load(record.server, record.user)
        if current is None:
            raise OAuth2GrantError(
                f"{account}: no stored OAuth2 token (removed); run {login_command(account, record)}"
            )
        usable = current.access_token is not None and current.valid_for(clock()) > margin
        if usable and current.access_token is not None and current.access_token != rejected:
            return current.access_token
        refreshed = _refresh(current, account=account, timeout=timeout, now=clock())
        store.save(refreshed)
        assert refreshed.access_token is not None
        return refreshed.access_token


def _refresh(record: TokenRecord, *, account: str, timeout: float, now: float) -> TokenRecord:
    client = Client(record.client_id, record.client_secret)
    scope = {"scope": record.scope} if record.scope else {}
    try:
        token = token_request(
            record.token_endpoint,
            "refresh_token",
            client,
            account=account,
            timeout=timeout,
            refresh_token=record.refresh_token.reveal(),
            **scope,
        )
    except TokenEndpointError as exc:
        if exc.permanent:
            raise OAuth2GrantError(
                f"{account}: the OAuth2 provider refused the stored refresh token"
                f" ({exc.error}); run {login_command(account, record)}"
            ) from None
        raise OAuth2UnavailableError(
            f"{account}: OAuth2 token refresh failed ({exc.error}, HTTP {exc.status})"
        ) from None
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise OAuth2UnavailableError(f"{account}: OAuth2 token response has no access token")
    rotated = token.get("refresh_token")
    return record.with_tokens(
        Secret(access),
        now + expires_in(token),
        Secret(rotated) if isinstance(rotated, str) and rotated else None,
    )


def expires_in(token: dict[str, object]) -> float:
    """The token's lifetime in seconds (an hour when the provider does not say)."""
    value = token.get("expires_in")
    try:
        return float(value) if isinstance(value, int | float | str) else DEFAULT_LIFETIME
    except ValueError:
        return DEFAULT_LIFETIME
