"""The OAuth2 token store: one private file per (server, user) in ``<state dir>/oauth2``.

Refresh tokens rotate: the provider may invalidate the old one the moment it issues a new one, so
losing the new one locks the user out. A record is therefore written to a temporary file in the
same directory, fsynced, renamed over the old one, and the directory fsynced: after a crash the
file holds either the old record or the new one, never a torn one.

Two processes (the daemon and a one-off run) must not spend one refresh token twice. Each record
has a lock file beside it; whoever refreshes holds an exclusive ``flock`` on it from reading the
record to writing the new one, and the other, once it gets the lock, re-reads the record and
finds a fresh access token to reuse. The lock file is never deleted (see fetchd.state.lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fetchd.auth.oauth2.secret import Secret
from fetchd.errors import StateError
from fetchd.state.paths import PRIVATE_FILE_MODE, default_state_dir, make_private_dir

OAUTH2_DIRNAME = "oauth2"
RECORD_FORMAT = 1

_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._@-]")
_READABLE_LENGTH = 60


@dataclass(frozen=True)
class TokenRecord:
    """What fetchd keeps to log in to one (server, user) with OAuth2; secrets never render."""

    server: str
    user: str
    provider: str
    token_endpoint: str
    client_id: str
    client_secret: Secret | None
    scope: str
    refresh_token: Secret
    access_token: Secret | None = None
    expires_at: float = 0.0  # seconds since the epoch; 0 means unknown (refresh before use)

    def valid_for(self, now: float) -> float:
        """Seconds the access token is still valid at ``now`` (negative or 0 when it is not)."""
        if self.access_token is None:
            return 0.0
        return self.expires_at - now

    def with_tokens(
        self, access_token: Secret, expires_at: float, refresh_token: Secret | None
    ) -> TokenRecord:
        """This record after a refresh; a provider that did not rotate keeps the old one."""
        return replace(
            self,
            access_token=access_token,
            expires_at=expires_at,
            refresh_token=refresh_token or self.refresh_token,
        )


def record_filename(server: str, user: str) -> str:
    """The file name (without suffix) of a record: readable, filesystem-safe, unique per key."""
    digest = hashlib.sha256(f"{server}\0{user}".encode()).hexdigest()
    readable = _UNSAFE_CHARACTERS.sub("_", f"{user}@{server}")
    return f"{readable[:_READABLE_LENGTH]}-{digest[:16]}"


class TokenStore:
    """The records of ``<state_dir>/oauth2``; every method re-reads the disk (another process
    may have refreshed since)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def default(cls, state_dir: Path | None = None) -> TokenStore:
        """The store in the XDG state directory (or in ``state_dir``)."""
        return cls((state_dir or default_state_dir()) / OAUTH2_DIRNAME)

    def path_of(self, server: str, user: str) -> Path:
        """The record file of (server, user)."""
        return self.directory / (record_filename(server, user) + ".json")

    def load(self, server: str, user: str) -> TokenRecord | None:
        """The record of (server, user), or None when there is none."""
        path = self.path_of(server, user)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read OAuth2 token record {path}: {exc}") from exc
        try:
            return _record_from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            # Name the file, never its content: the content is secret.
            raise StateError(
                f"OAuth2 token record {path} is damaged ({type(exc).__name__});"
                f" log in again with fetchd --oauth2-login"
            ) from None

    def save(self, record: TokenRecord) -> None:
        """Write the record durably and atomically (write, fsync, rename, fsync the directory)."""
        make_private_dir(self.directory)
        path = self.path_of(record.server, record.user)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        data = json.dumps(_record_to_json(record), indent=1).encode()
        try:
            fd = os.open(
                temporary,
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                PRIVATE_FILE_MODE,
            )
            try:
                os.fchmod(fd, PRIVATE_FILE_MODE)  # whatever the umask
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, path)
            _fsync_directory(self.directory)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise StateError(f"cannot write OAuth2 token record {path}: {exc}") from exc

    def delete(self, server: str, user: str) -> bool:
        """Remove the record of (server, user); whether there was one."""
        path = self.path_of(server, user)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StateError(f"cannot remove OAuth2 token record {path}: {exc}") from exc
        _fsync_directory(self.directory)
        return True

    def records(self) -> list[TokenRecord]:
        """Every readable record, for ``-V``; damaged ones are skipped here and reported at use."""
        found: list[TokenRecord] = []
        if not self.directory.is_dir():
            return found
        for path in sorted(self.directory.glob("*.json")):
            try:
                found.append(_record_from_json(json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return found

    @contextlib.contextmanager
    def locked(self, server: str, user: str) -> Iterator[None]:
        """Hold the record's refresh lock (blocking): read, refresh and save inside it."""
        make_private_dir(self.directory)
        path = self.directory / (record_filename(server, user) + ".lock")
        try:
            fd = os.open(
                path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, PRIVATE_FILE_MODE
            )
        except OSError as exc:
            raise StateError(f"cannot open OAuth2 lock file {path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # drops the flock


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reveal(secret: Secret | None) -> str | None:
    return None if secret is None else secret.reveal()


def _record_to_json(record: TokenRecord) -> dict[str, Any]:
    return {
        "format": RECORD_FORMAT,
        "server": record.server,
        "user": record.user,
        "provider": record.provider,
        "token_endpoint": record.token_endpoint,
        "client_id": record.client_id,
        "client_secret": _reveal(record.client_secret),
        "scope": record.scope,
        "refresh_token": record.refresh_token.reveal(),
        "access_token": _reveal(record.access_token),
        "expires_at": record.expires_at,
    }


def _optional_secret(value: object) -> Secret | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("secret field is not a string")
    return Secret(value)


def _text(data: dict[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    return value


def _record_from_json(data: object) -> TokenRecord:
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
        raise ValueError("unknown record format")
    expires_at = data.get("expires_at", 0.0)
    if not isinstance(expires_at, int | float):
        raise TypeError("expires_at is not a number")
    return TokenRecord(
        server=_text(data, "server"),
        user=_text(data, "user"),
        provider=_text(data, "provider"),
        token_endpoint=_text(data, "token_endpoint"),
        client_id=_text(data, "client_id"),
        client_secret=_optional_secret(data.get("client_secret")),
        scope=_text(data, "scope"),
        refresh_token=Secret(_text(data, "refresh_token")),
        access_token=_optional_secret(data.get("access_token")),
        expires_at=float(expires_at),
    )
