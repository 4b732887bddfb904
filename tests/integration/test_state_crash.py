"""kill -9 against the UID store and the account lock, with real child processes.

A child records batches of UIDs and reports each batch on a pipe the moment ``record_delivered``
returns, then goes straight on to the next batch; the test SIGKILLs it after a chosen report, so
the kill also lands in the middle of the following transaction. Whatever was reported must be in
the store after the kill; whatever was not is all there or all absent.
"""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fetchd.errors import LockError
from fetchd.state import AccountLock, UIDStore

READ_TIMEOUT_SECONDS = 20.0

RECORDER = textwrap.dedent(
    """
    import sys
    from fetchd.state import UIDStore

    path, batch_size = sys.argv[1], int(sys.argv[2])
    store = UIDStore.open(path)
    account = store.account("pop.example.org", "bob")
    batch = 0
    while True:
        batch += 1
        account.record_delivered(f"{batch}-{i}" for i in range(batch_size))
        sys.stdout.write(f"{batch}\\n")
        sys.stdout.flush()
    """
)

LOCK_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from fetchd.errors import LockError
    from fetchd.state import AccountLock

    lock = AccountLock.for_account("pop.example.org", "bob", state_dir=Path(sys.argv[1]))
    try:
        lock.acquire()
    except LockError as error:
        print(f"busy: {error}", flush=True)
        sys.exit(9)
    print("locked", flush=True)
    time.sleep(60)
    """
)


def _spawn(script: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _read_line(child: subprocess.Popen[bytes]) -> str:
    """The child's next report; fails the test instead of hanging if the child stalls or dies."""
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], READ_TIMEOUT_SECONDS)
    assert ready, "child sent no report in time"
    line = child.stdout.readline()
    assert line, f"child died: {child.stderr.read().decode() if child.stderr else ''}"
    return line.decode().strip()


def _kill(child: subprocess.Popen[bytes]) -> None:
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=READ_TIMEOUT_SECONDS) == -signal.SIGKILL
    for stream in (child.stdout, child.stderr):
        if stream is not None:
            stream.close()


@pytest.mark.parametrize("batch_size", [1, 100])
@pytest.mark.parametrize("kill_after", [1, 7, 40])
def test_every_reported_record_survives_sigkill(
    tmp_path: Path, batch_size: int, kill_after: int
) -> None:
    """UIDs whose record_delivered returned are all there after kill -9; no batch is half there."""
    path = tmp_path / "uids.sqlite3"
    child = _spawn(RECORDER, str(path), str(batch_size))
    try:
        reported = 0
        while reported < kill_after:
            reported = int(_read_line(child))
    finally:
        _kill(child)

    with UIDStore.open(path) as store:  # quick_check passes, or this raises
        delivered = store.account("pop.example.org", "bob").delivered()
    batches: dict[int, set[str]] = {}
    for uid in delivered:
        batches.setdefault(int(uid.split("-")[0]), set()).add(uid)
    for batch in range(1, kill_after + 1):
        assert batches.get(batch) == {f"{batch}-{i}" for i in range(batch_size)}
    for batch, uids in batches.items():
        assert len(uids) == batch_size, f"batch {batch} is half recorded"
    assert sorted(batches) == list(range(1, max(batches) + 1))


def test_lock_held_by_another_process_is_busy_until_it_is_killed(tmp_path: Path) -> None:
    """A second fetchd gets LockError naming the account; after kill -9 of the holder it is free."""
    holder = _spawn(LOCK_HOLDER, str(tmp_path))
    try:
        assert _read_line(holder) == "locked"
        lock = AccountLock.for_account("pop.example.org", "bob", state_dir=tmp_path)
        with pytest.raises(LockError, match=rf"bob@pop\.example\.org .*pid {holder.pid}"):
            lock.acquire()
    finally:
        _kill(holder)
    lock.acquire()
    assert lock.locked
    lock.release()


def test_process_that_finds_the_lock_held_reports_busy(tmp_path: Path) -> None:
    """While this process holds the lock, a child process trying it exits with the busy error."""
    with AccountLock.for_account("pop.example.org", "bob", state_dir=tmp_path):
        child = _spawn(LOCK_HOLDER, str(tmp_path))
        try:
            line = _read_line(child)
            assert child.wait(timeout=READ_TIMEOUT_SECONDS) == 9
        finally:
            if child.poll() is None:
                _kill(child)
            for stream in (child.stdout, child.stderr):
                if stream is not None:
                    stream.close()
    assert line.startswith("busy: account bob@pop.example.org")
