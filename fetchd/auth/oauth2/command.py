"""The OAuth2 parts of the command line: ``--oauth2-login``, ``--oauth2-logout`` and the token
lines of ``-V`` (which accounts use stored tokens and until when; never a token)."""

from __future__ import annotations

import getpass
import sys
import time

from fetchd.auth.oauth2.credential import OAUTH2_MECHANISMS
from fetchd.auth.oauth2.endpoint import Client
from fetchd.auth.oauth2.login import LoginRequest, log_in
from fetchd.auth.oauth2.provider import resolve_provider
from fetchd.auth.oauth2.secret import Secret
from fetchd.auth.oauth2.store import TokenStore
from fetchd.config import Config
from fetchd.config.model import Server, User
from fetchd.errors import ConfigError
from fetchd.options import Options


def find_account(config: Config, account: str) -> tuple[Server, User]:
    """The rc file's account ``user@pollname`` (the remote user may contain '@' itself)."""
    user_name, at, pollname = account.rpartition("@")
    if not at or not user_name:
        raise ConfigError(f"{account!r}: name an account as user@pollname, as --poll does")
    for server in config.servers:
        if server.pollname == pollname:
            for user in server.users:
                if user.remote == user_name:
                    return server, user
    raise ConfigError(f"{account}: no such account (user@pollname) in {config.filename}")


def oauth2_command(config: Config, options: Options) -> int | None:
    """Run --oauth2-login or --oauth2-logout if asked (their exit status), else None."""
    store = TokenStore.default()
    if options.oauth2_logout:
        server, user = find_account(config, options.oauth2_logout)
        removed = store.delete(server.pollname, user.remote)
        print(
            f"fetchd: {options.oauth2_logout}: stored OAuth2 tokens removed"
            if removed
            else f"fetchd: {options.oauth2_logout}: no stored OAuth2 tokens"
        )
        return 0
    if not options.oauth2_login:
        return None
    server, user = find_account(config, options.oauth2_login)
    if server.auth.lower() not in OAUTH2_MECHANISMS:
        raise ConfigError(
            f"{options.oauth2_login}: the rc file must say `auth xoauth2` or `auth oauthbearer`"
            " for this account to log in with OAuth2"
        )
    assert options.oauth2_provider and options.oauth2_client_id  # options.py checks
    provider = resolve_provider(
        options.oauth2_provider, timeout=server.deadline, scope=options.oauth2_scope
    )
    secret = _client_secret(options.oauth2_client_secret)
    request = LoginRequest(
        account=options.oauth2_login,
        server=server.pollname,
        user=user.remote,
        provider=provider,
        client=Client(options.oauth2_client_id, secret),
        flow=options.oauth2_flow,
        timeout=server.deadline,
    )
    record = log_in(request)
    store.save(record)
    print(f"fetchd: {options.oauth2_login}: logged in; tokens kept in {store.directory}")
    return 0


def _client_secret(given: str | None) -> Secret | None:
    """The client secret; ``-`` reads it from standard input (without echo on a terminal), so
    it never shows in the process list."""
    if given != "-":
        return Secret(given) if given else None
    if sys.stdin.isatty():
        text = getpass.getpass("OAuth2 client secret: ")
    else:
        text = sys.stdin.readline().rstrip("\r\n")
    if not text:
        raise ConfigError("--oauth2-client-secret -: no secret on standard input")
    return Secret(text)


def describe_tokens(config: Config, now: float | None = None) -> str:
    """``-V`` lines for the accounts that log in with stored tokens."""
    now = time.time() if now is None else now
    store = TokenStore.default()
    lines: list[str] = []
    for server in config.servers:
        if server.auth.lower() not in OAUTH2_MECHANISMS:
            continue
        for user in server.users:
            account = f"{user.remote}@{server.pollname}"
            record = store.load(server.pollname, user.remote)
            if record is None:
                lines.append(f"  {account}: no stored OAuth2 tokens (fetchd --oauth2-login)")
            elif record.access_token is None or record.expires_at <= now:
                lines.append(
                    f"  {account}: stored OAuth2 tokens ({record.provider});"
                    " the access token is refreshed at the next login"
                )
            else:
                until = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(record.expires_at))
                lines.append(
                    f"  {account}: stored OAuth2 tokens ({record.provider});"
                    f" access token valid until {until}"
                )
    return "".join(f"{line}\n" for line in lines)
