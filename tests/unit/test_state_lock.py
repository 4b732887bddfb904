"""Per-account locks within one process (across processes: integration/test_state_crash.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fetchd.errors import ExitCode, LockError, StateError
from fetchd.state import AccountKey, AccountLock
from fetchd.state.lock import lock_filename


def test_second_holder_of_one_account_gets_lock_error(tmp_path: Path) -> None:
    """While one lock object holds an account, another fails at once with the account named."""
    first = AccountLock.for_account("pop.example.org", "bob", state_dir=tmp_path)
    second = AccountLock.for_account("POP.example.org", "bob", state_dir=tmp_path)
    with first:
        with pytest.raises(LockError, match=r"bob@pop\.example\.org") as caught:
            second.acquire()
        assert caught.value.exit_code == ExitCode.LOCKBUSY
        assert f"pid {os.getpid()}" in str(caught.value)
        assert not second.locked
    second.acquire()
    assert second.locked
    second.release()


def test_different_accounts_lock_independently(tmp_path: Path) -> None:
    """Locks of other users, servers or folders do not block each other."""
    locks = [
        AccountLock.for_account("pop.example.org", "bob", state_dir=tmp_path),
        AccountLock.for_account("pop.example.org", "alice", state_dir=tmp_path),
        AccountLock.for_account("imap.example.org", "bob", state_dir=tmp_path),
        AccountLock.for_account("pop.example.org", "bob", "Archive", state_dir=tmp_path),
    ]
    for lock in locks:
        lock.acquire()
    assert all(lock.locked for lock in locks)
    assert len({lock.path for lock in locks}) == 4
    for lock in locks:
        lock.release()


def test_leaving_the_with_block_by_an_exception_releases(tmp_path: Path) -> None:
    """The context manager frees the lock however the block ends."""
    lock = AccountLock.for_account("pop.example.org", "bob", state_dir=tmp_path)
    with pytest.raises(RuntimeError, match="boom"), lock:
        raise RuntimeError("boom")
    assert not lock.locked
    with AccountLock.for_account("pop.example.org", "bob", state_dir=tmp_path) as again:
        assert again.locked


def test_lock_files_are_private(tmp_path: Path) -> None:
    """The locks directory is made 0700 and each lock file 0600, whatever the umask."""
    old_umask = os.umask(0)
    try:
        with AccountLock.for_account("pop.example.org", "bob", state_dir=tmp_path) as lock:
            assert stat.S_IMODE(lock.path.stat().st_mode) == 0o600
            assert stat.S_IMODE(lock.path.parent.stat().st_mode) == 0o700
    finally:
        os.umask(old_umask)


def test_a_symlink_in_place_of_the_lock_file_is_refused(tmp_path: Path) -> None:
    """A planted symlink cannot redirect the lock open to another file."""
    lock = AccountLock.for_account("pop.example.org", "bob", state_dir=tmp_path)
    lock.path.parent.mkdir(parents=True)
    target = tmp_path / "victim"
    target.write_text("keep me")
    lock.path.symlink_to(target)
    with pytest.raises(StateError, match="lock file"):
        lock.acquire()
    assert target.read_text() == "keep me"


def test_lock_names_are_safe_and_distinct() -> None:
    """Slashes and other odd characters never reach the file name; close keys stay apart."""
    names = {
        lock_filename(AccountKey.of("pop.example.org", "../../etc/passwd")),
        lock_filename(AccountKey.of("pop.example.org", "__..__etc_passwd")),
        lock_filename(AccountKey.of("pop.example.org", "bob", "a/b")),
        lock_filename(AccountKey.of("pop.example.org", "bob", "a_b")),
    }
    assert len(names) == 4
    for name in names:
        assert "/" not in name
        assert name.endswith(".lock")


def test_releasing_twice_and_acquiring_twice(tmp_path: Path) -> None:
    """Release of a free lock is harmless; acquiring a lock this object holds is a bug."""
    lock = AccountLock.for_account("pop.example.org", "bob", state_dir=tmp_path)
    lock.release()
    lock.acquire()
    with pytest.raises(RuntimeError):
        lock.acquire()
    lock.release()
    lock.release()
    assert not lock.locked
