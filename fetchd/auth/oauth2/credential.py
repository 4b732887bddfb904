"""Which accounts log in with a stored OAuth2 token, and the token to send.

An account uses the token store when its rc entry says ``auth xoauth2`` or ``auth oauthbearer``
and ``fetchd --oauth2-login`` left a record for (poll name, remote user); such an account is never
prompted for a password. Without a record it takes the token from the password sources as before.
"""

from __future__ import annotations

from pathlib import Path

from fetchd.auth.oauth2.refresh import access_token
from fetchd.auth.oauth2.secret import Secret
from fetchd.auth.oauth2.store import TokenRecord, TokenStore
from fetchd.config.model import Server, User

OAUTH2_MECHANISMS = frozenset({"xoauth2", "oauthbearer"})


def stored_record(
    server: Server, user: User, *, state_dir: Path | None = None
) -> TokenRecord | None:
    """The token-store record this account logs in with, or None (it uses a password)."""
    if server.auth.lower() not in OAUTH2_MECHANISMS:
        return None
    return TokenStore.default(state_dir).load(server.pollname, user.remote)


async def token_for_login(
    server: Server,
    record: TokenRecord,
    label: str,
    *,
    rejected: str | None = None,
    state_dir: Path | None = None,
) -> str:
    """The access token to send now (refreshed when near expiry, or when ``rejected`` is the one
    the server just refused); the caller sends it on the wire and nowhere else."""
    token = await access_token(
        TokenStore.default(state_dir),
        record,
        account=label,
        timeout=server.deadline,
        rejected=Secret(rejected) if rejected is not None else None,
    )
    return token.reveal()
