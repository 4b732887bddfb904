"""Reading the rc file from disk: where it is, whether it is private enough, what it says.

fetchmail's rules: ``-f FILE``, else ``$FETCHMAILHOME/fetchmailrc``, else ``~/.fetchmailrc``; ``-``
is standard input; a missing file is an empty configuration; a file must be a regular file owned
by the user with no group or other permissions (fetchmail exits 6 otherwise, and so do we).
A ``set logfile`` that does not exist is ignored with a warning, as fetchmail does.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
from pathlib import Path

from fetchd.config.model import Config
from fetchd.config.parser import ParseEnvironment, parse
from fetchd.errors import ConfigError, RCPermissionError


def default_rcfile(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    if env.get("FETCHMAILHOME"):
        return os.path.join(env["FETCHMAILHOME"], "fetchmailrc")
    return os.path.join(env.get("HOME") or str(Path.home()), ".fetchmailrc")


def check_permissions(path: str) -> None:
    """fetchmail's prc_filecheck: regular file, owned by us, nothing for group or others."""
    try:
        info = os.stat(path)
    except OSError:
        return  # a missing file is an empty configuration; unreadable is reported on open
    if not stat.S_ISREG(info.st_mode):
        raise RCPermissionError(f"File {path} must be a regular file.")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise RCPermissionError(
            f"File {path} must have no more than -rwx------ (0700) permissions "
            f"(it has {stat.filemode(info.st_mode)}; run: chmod 600 {path})."
        )
    if info.st_uid != os.geteuid():
        raise RCPermissionError(f"File {path} must be owned by you.")


def load_rcfile(
    path: str | None, *, env: ParseEnvironment | None = None, check: bool = True
) -> Config:
    """Read, check and parse the rc file; errors name the file (and line and column)."""
    filename = path or default_rcfile()
    env = env or ParseEnvironment.current(filename)
    if filename == "-":
        text = _decode(sys.stdin.buffer.read())
    else:
        if check:
            check_permissions(filename)
        try:
            text = _decode(Path(filename).read_bytes())
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            raise ConfigError(f"cannot read {filename}: {exc.strerror}") from None
    config = parse(text, filename, env)
    return _drop_missing_logfile(config)


def _decode(data: bytes) -> str:
    """The file's text with its line ends as written: a CR LF inside a quoted string (an rc
    file written on Windows) stays in the value, as fetchmail keeps it."""
    return data.decode("utf-8", errors="surrogateescape")


def _drop_missing_logfile(config: Config) -> Config:
    logfile = config.globals.logfile
    if logfile and not os.path.exists(logfile):
        print(f'Logfile "{logfile}" does not exist, ignoring logfile option.', file=sys.stderr)
        globals_ = dataclasses.replace(config.globals, logfile=None)
        return dataclasses.replace(config, globals=globals_)
    return config
