"""One lock per account, so two fetchd processes never poll the same mailbox at once.

A lock is ``flock(LOCK_EX | LOCK_NB)`` on a small 0600 file in ``<state dir>/locks``. The kernel
drops an flock when the last descriptor of its open file goes away, so a holder killed with
SIGKILL frees the lock at once: there is no stale lock file to break by hand. The descriptor is
close-on-exec, so a preconnect command (or anything else we spawn) cannot inherit and keep it.
Lock files are never deleted: unlinking a file that another process is about to lock is the
classic race that lets two holders in.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from pathlib import Path
from types import TracebackType

from fetchd.errors import LockError, StateError
from fetchd.state.key import INBOX, AccountKey
from fetchd.state.paths import PRIVATE_FILE_MODE, default_state_dir, make_private_dir

LOCKS_DIRNAME = "locks"

# A lock file name keeps a readable part for people listing the directory, and a digest of the
# exact key so that names differing only in characters we replace still get different files.
_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._@-]")
_READABLE_LENGTH = 60


def lock_filename(key: AccountKey) -> str:
    """The lock file name of an account: readable, filesystem-safe and unique per key."""
    digest = hashlib.sha256("\0".join((key.server, key.user, key.folder)).encode()).hexdigest()
    readable = _UNSAFE_CHARACTERS.sub("_", f"{key.user}@{key.server}")
    if key.folder != INBOX:
        readable += "_" + _UNSAFE_CHARACTERS.sub("_", key.folder)
    return f"{readable[:_READABLE_LENGTH]}-{digest[:16]}.lock"


class AccountLock:
    """An exclusive, non-blocking lock on one account; a context manager.

    ``acquire`` raises LockError at once when another process (or another AccountLock object in
    this one) holds the lock. ``release`` (or leaving the ``with`` block) frees it; so does the
    death of the process, however it dies.
    """

    def __init__(self, path: Path, account: str) -> None:
        self.path = path
        self.account = account
        self._fd: int | None = None

    @classmethod
    def for_account(
        cls, server: str, user: str, folder: str = INBOX, *, state_dir: Path | None = None
    ) -> AccountLock:
        """The lock of one account, in ``<state_dir>/locks`` (default: the XDG state dir)."""
        key = AccountKey.of(server, user, folder)
        directory = (state_dir or default_state_dir()) / LOCKS_DIRNAME
        return cls(directory / lock_filename(key), str(key))

    @property
    def locked(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock without waiting; LockError names the account if someone else has it."""
        if self._fd is not None:
            raise RuntimeError(f"lock for {self.account} is already held by this object")
        fd = self._open_lock_file()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_of(fd)
            os.close(fd)
            raise LockError(
                f"account {self.account} is being polled by another fetchd{holder};"
                f" lock file {self.path}"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StateError(f"cannot lock {self.path} for account {self.account}: {exc}") from exc
        # Our pid in the file only helps the error message of the next would-be holder: on a
        # full disk (ENOSPC) the flock still holds, so the lock is taken without it.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Free the lock; releasing a lock not held does nothing."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor drops the flock

    close = release

    def __enter__(self) -> AccountLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def _open_lock_file(self) -> int:
        try:
            make_private_dir(self.path.parent)
            # O_NOFOLLOW: a symlink planted in place of the lock file must not redirect our open.
            return os.open(
                self.path,
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                PRIVATE_FILE_MODE,
            )
        except OSError as exc:
            raise StateError(
                f"cannot open lock file {self.path} for account {self.account}: {exc}"
            ) from exc


def _holder_of(fd: int) -> str:
    """' (pid N)' from the lock file, or '' when it does not say."""
    try:
        content = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {content})" if content.isdigit() else ""
