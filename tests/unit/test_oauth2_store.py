"""The OAuth2 token store and refresh, against the tests' authorization server on loopback."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fetchd.auth.oauth2.http import check_endpoint
from fetchd.auth.oauth2.refresh import access_token_blocking, login_command
from fetchd.auth.oauth2.secret import Secret
from fetchd.auth.oauth2.store import TokenRecord, TokenStore
from fetchd.errors import (
    ConfigError,
    ExitCode,
    OAuth2GrantError,
    OAuth2UnavailableError,
    StateError,
)
from tests.support.oauth2_server import CLIENT_ID, CLIENT_SECRET, AuthorizationServer, running

ACCOUNT = "alice@mail.test"


def _record(server: AuthorizationServer, *, expires_at: float = 0.0) -> TokenRecord:
    return TokenRecord(
        server="mail.test",
        user="alice",
        provider=server.base_url,
        token_endpoint=server.token_endpoint,
        client_id=CLIENT_ID,
        client_secret=Secret(CLIENT_SECRET),
        scope="mail",
        refresh_token=Secret(server.new_refresh_token()),
        access_token=Secret("at-old") if expires_at else None,
        expires_at=expires_at,
    )


def test_secret_never_renders() -> None:
    """A Secret shows '*' in repr, str and f-strings, and so does a record holding secrets."""
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret) + str(secret) + f"{secret} {secret!r}"
    assert secret.reveal() == "hunter2"
    record = TokenRecord("s", "u", "google", "https://x/t", "id", secret, "", Secret("rt-x"))
    assert "hunter2" not in repr(record) and "rt-x" not in repr(record)


def test_saved_record_round_trips_private_and_atomic(tmp_path: Path) -> None:
    """A saved record reads back equal, is 0600 in a 0700 directory, and leaves no temp file."""
    store = TokenStore(tmp_path / "state" / "oauth2")
    record = TokenRecord(
        "mail.test", "alice", "google", "https://x/t", "id", None, "s", Secret("rt-1"),
        Secret("at-1"), 123.5,
    )  # fmt: skip
    store.save(record)
    assert store.load("mail.test", "alice") == record
    path = store.path_of("mail.test", "alice")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    assert sorted(p.name for p in store.directory.iterdir()) == [path.name]
    assert store.load("mail.test", "bob") is None
    assert store.records() == [record]
    assert store.delete("mail.test", "alice") and not store.delete("mail.test", "alice")
    assert store.load("mail.test", "alice") is None


def test_failed_write_keeps_the_old_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the rename fails, the old record (and its refresh token) is still there, intact."""
    store = TokenStore(tmp_path)
    old = TokenRecord("s", "u", "p", "https://x/t", "id", None, "", Secret("rt-old"))
    store.save(old)

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(StateError, match="cannot write"):
        store.save(old.with_tokens(Secret("at"), 1.0, Secret("rt-new")))
    monkeypatch.undo()
    assert store.load("s", "u") == old
    assert [p.name for p in tmp_path.iterdir()] == [store.path_of("s", "u").name]


def test_damaged_record_is_named_without_its_content(tmp_path: Path) -> None:
    """A damaged record is a StateError naming the file and the fix, not quoting the file."""
    store = TokenStore(tmp_path)
    store.path_of("s", "u").write_text('{"format": 1, "refresh_token": "rt-leak"')
    with pytest.raises(StateError, match="oauth2-login") as caught:
        store.load("s", "u")
    assert "rt-leak" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://oauth2.googleapis.com/token", True),
        ("http://127.0.0.1:8080/token", True),
        ("http://[::1]:8080/token", True),
        ("http://localhost/token", True),
        ("http://login.example.com/token", False),
        ("ftp://127.0.0.1/token", False),
    ],
)
def test_http_only_to_loopback(url: str, allowed: bool) -> None:
    """Token endpoints must be HTTPS, or plain HTTP to a loopback address."""
    if allowed:
        assert check_endpoint(url) == url
    else:
        with pytest.raises(ConfigError, match="HTTPS is required"):
            check_endpoint(url)


def test_refresh_when_expiring_and_reuse_when_valid(tmp_path: Path) -> None:
    """An expired token is refreshed (the rotated refresh token saved); a valid one is reused."""
    store = TokenStore(tmp_path)
    with running(access_lifetime=600) as server:
        record = _record(server)
        store.save(record)
        first = access_token_blocking(store, record, account=ACCOUNT, timeout=5)
        saved = store.load("mail.test", "alice")
        assert saved is not None and saved.access_token == first
        assert saved.refresh_token != record.refresh_token  # rotated and kept
        assert saved.expires_at == pytest.approx(time.time() + 600, abs=5)
        again = access_token_blocking(store, record, account=ACCOUNT, timeout=5)
        assert again == first and server.refresh_count() == 1
        # Within the margin of expiry: refreshed again, with the rotated refresh token.
        third = access_token_blocking(store, record, account=ACCOUNT, timeout=5, margin=601)
        assert third != first and server.refresh_count() == 2


def test_rejected_token_is_refreshed_unless_already_replaced(tmp_path: Path) -> None:
    """A token the server rejected is refreshed; one another process already replaced is not."""
    store = TokenStore(tmp_path)
    with running(access_lifetime=600) as server:
        record = _record(server)
        store.save(record)
        first = access_token_blocking(store, record, account=ACCOUNT, timeout=5)
        second = access_token_blocking(store, record, account=ACCOUNT, timeout=5, rejected=first)
        assert second != first and server.refresh_count() == 2
        # A stale rejection (of a token no longer stored) reuses the stored one.
        third = access_token_blocking(store, record, account=ACCOUNT, timeout=5, rejected=first)
        assert third == second and server.refresh_count() == 2


def test_revoked_refresh_token_says_how_to_log_in_again(tmp_path: Path) -> None:
    """invalid_grant is an auth error (exit 3) naming the exact login command, without secrets."""
    store = TokenStore(tmp_path)
    with running() as server:
        record = _record(server)
        store.save(record)
        server.revoke_refresh_tokens()
        with pytest.raises(OAuth2GrantError) as caught:
            access_token_blocking(store, record, account=ACCOUNT, timeout=5)
    error = caught.value
    assert error.exit_code == ExitCode.AUTH and not error.transient
    assert login_command(ACCOUNT, record) in str(error)
    assert f"--oauth2-client-id {CLIENT_ID}" in str(error)
    assert not any(secret in str(error) for secret in server.issued)
    assert store.load("mail.test", "alice") == record  # nothing lost


def test_server_failure_is_transient(tmp_path: Path) -> None:
    """A 503 from the token endpoint is a transient error, and the record is unchanged."""
    store = TokenStore(tmp_path)
    with running() as server:
        record = _record(server)
        store.save(record)
        server.fail_next.append(503)
        with pytest.raises(OAuth2UnavailableError, match="HTTP 503") as caught:
            access_token_blocking(store, record, account=ACCOUNT, timeout=5)
        assert caught.value.transient
        assert store.load("mail.test", "alice") == record
        # The refresh token was not spent: the next try succeeds.
        assert access_token_blocking(store, record, account=ACCOUNT, timeout=5)


def test_unreachable_endpoint_is_transient(tmp_path: Path) -> None:
    """A token endpoint nobody listens on is a transient error naming no secret."""
    store = TokenStore(tmp_path)
    with running() as server:
        record = _record(server)
    store.save(record)  # the server is gone now
    with pytest.raises(OAuth2UnavailableError, match="unreachable"):
        access_token_blocking(store, record, account=ACCOUNT, timeout=2)


_REFRESHER = textwrap.dedent(
    """
    import hashlib, sys
    from pathlib import Path
    from fetchd.auth.oauth2.refresh import access_token_blocking
    from fetchd.auth.oauth2.store import TokenStore
    store = TokenStore(Path(sys.argv[1]))
    record = store.load("mail.test", "alice")
    token = access_token_blocking(store, record, account="alice@mail.test", timeout=10)
    print(hashlib.sha256(token.reveal().encode()).hexdigest())
    """
)


def test_two_processes_refreshing_at_once_spend_one_refresh_token(tmp_path: Path) -> None:
    """Two processes needing a refresh at once: one refreshes, the other reuses its result."""
    store = TokenStore(tmp_path)
    # A slow token endpoint: the second process arrives while the first is refreshing.
    with running(access_lifetime=600, token_delay=0.5) as server:
        store.save(_record(server))
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", _REFRESHER, str(tmp_path)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        results = [process.communicate(timeout=30) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], results
    assert results[0][0] == results[1][0]
    assert server.grants == ["refresh_token"]
