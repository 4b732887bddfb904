"""Where the running daemon lives: one per user, found without being told the rc file.

``$XDG_RUNTIME_DIR/fetchd/`` (or ``~/.fetchd/run`` when that is unset), private (0700), holds
``lock`` (flock: held by the running daemon for its whole life) and ``control.sock``. A lock file
left by a crashed daemon is not locked, so it is simply taken over; a socket file without a
daemon holding the lock is stale and replaced. Anything there that is not ours (a symlink, a
file of another user) is refused, never deleted.

With ``set pidfile`` or ``--pidfile``, the daemon also writes fetchmail's pid file there (its
pid, then its poll interval, a line each) for init scripts and monitors, and removes it at exit.
It is only a report: the lock above is what keeps a second daemon out.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path

from fetchd.errors import DaemonRunningError, FetchdError
from fetchd.state.paths import make_private_dir


def runtime_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_RUNTIME_DIR")
    if base:
        return Path(base) / "fetchd"
    return Path(env.get("HOME") or Path.home()) / ".fetchd" / "run"


def ensure_private_dir(path: Path) -> Path:
    # Every directory made on the way is 0700, ``~/.fetchd`` too, not only the last one.
    make_private_dir(path)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise FetchdError(f"{path} is not a directory of ours; not using it")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


class DaemonLock:
    """The one-daemon-per-user lock; ``acquire`` raises LockError (exit 8) if one runs."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:  # a symlink planted there (ELOOP), a full disk...
            raise FetchdError(f"cannot open the daemon lock {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DaemonRunningError(f"another fetchd daemon is running (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def rewrite_pid(self) -> None:
        """After detaching, the lock file names the process that holds it now."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def held_by_other(self) -> bool:
        """Whether a daemon holds the lock now (without taking it)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def holder(self) -> str:
        """The pid the lock file names (the running daemon's), or "?"."""
        try:
            text = self.path.read_text(errors="replace").strip()
        except OSError:
            return "?"
        return text if text.isdigit() else "?"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def fetchmail_pidfiles(environ: dict[str, str] | None = None) -> list[Path]:
    """Where a fetchmail daemon of this user writes its pid (fetchmail's lock.c)."""
    env = os.environ if environ is None else environ
    home = env.get("FETCHMAILHOME")
    if home:
        paths = [Path(home) / "fetchmail.pid"]
    else:
        paths = [Path(env.get("HOME") or Path.home()) / ".fetchmail.pid"]
    if os.geteuid() == 0:
        paths.append(Path("/var/run/fetchmail.pid"))
    return paths


def running_fetchmail(environ: dict[str, str] | None = None) -> tuple[int, Path] | None:
    """The pid and pid file of a live fetchmail daemon of this user, if one runs.

    A pid file whose process is gone, or is not named fetchmail (a pid reused since), is stale
    and does not count.
    """
    for path in fetchmail_pidfiles(environ):
        try:
            pid = int(path.read_text(errors="replace").split()[0])
        except (OSError, IndexError, ValueError):
            continue
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip() if pid > 0 else ""
        except OSError:
            continue
        if name == "fetchmail":
            return pid, path
    return None


class PidFile:
    """fetchmail's pid file at a path the user chose, written whole (a new file renamed into
    place, so a symlink planted there is replaced, not followed)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, interval: int) -> None:
        text = f"{os.getpid()}\n" + (f"{interval}\n" if interval else "")
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.new")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(temporary, flags, 0o644)
            try:
                os.write(fd, text.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise FetchdError(f"cannot write the pid file {self.path}: {exc.strerror}") from None

    def remove(self) -> None:
        """Remove the file if it still names this process (a later daemon may own it now)."""
        try:
            first = self.path.read_text().split("\n", 1)[0]
        except OSError:
            return
        if first == str(os.getpid()):
            with contextlib.suppress(OSError):
                self.path.unlink()
