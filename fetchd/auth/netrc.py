"""~/.netrc as fetchmail 6.4 reads it: pure parsing and lookup, plus a private-file check.

Our own small parser rather than the stdlib ``netrc``: the stdlib checks permissions only for
the default file, reports errors without a usable line for some tokens, and its matching has a
``default`` fallback that fetchmail never uses (fetchmail's search_netrc skips ``default``: it is
for anonymous FTP). fetchmail's rules, kept here: entries in file order; the first ``machine``
whose name equals the host and whose ``login`` is absent or equals the remote user wins;
``macdef`` bodies run to the next blank line and are skipped; ``passwd`` means ``password``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from fetchd.errors import AuthError, RCPermissionError

_VALUE_TOKENS = {"machine": "machine", "login": "login", "password": "password"}
_VALUE_TOKENS |= {"passwd": "password", "account": "account"}


@dataclass(frozen=True, slots=True)
class NetrcEntry:
    machine: str | None  # None for `default`, which fetchmail never matches
    login: str | None
    password: str | None = field(default=None, repr=False)


class NetrcSyntaxError(AuthError):
    """A broken netrc, located by file and line (the password is never in the message)."""

    def __init__(self, filename: str, line: int, message: str) -> None:
        self.filename = filename
        self.line = line
        super().__init__(f"{filename}:{line}: {message}")


def _tokens(text: str) -> list[tuple[str, int, bool]]:
    """Words with their line numbers and whether each began a line after a blank line (the end
    of a macdef); a double-quoted word may hold spaces, a backslash escapes one character."""
    out: list[tuple[str, int, bool]] = []
    line = 1
    i = 0
    blank_before = False
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            # Two newlines with only blanks between: a blank line.
            j = i + 1
            while j < n and text[j] in " \t\r":
                j += 1
            if j < n and text[j] == "\n":
                blank_before = True
            line += 1
            i += 1
            continue
        if ch in " \t\r":
            i += 1
            continue
        word: list[str] = []
        start_line = line
        if ch == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                if text[i] == "\n":
                    line += 1
                word.append(text[i])
                i += 1
            if i >= n:
                raise ValueError(f"{start_line}:a quote is never closed")
            i += 1
        else:
            while i < n and text[i] not in " \t\r\n":
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                word.append(text[i])
                i += 1
        out.append(("".join(word), start_line, blank_before))
        blank_before = False
    return out


def parse_netrc(text: str, filename: str) -> tuple[NetrcEntry, ...]:
    try:
        tokens = _tokens(text)
    except ValueError as err:
        at, message = str(err).split(":", 1)
        raise NetrcSyntaxError(filename, int(at), message) from None
    entries: list[NetrcEntry] = []
    current: dict[str, str | None] | None = None
    i = 0
    while i < len(tokens):
        word, line, _ = tokens[i]
        if word == "macdef":
            # The macro's name, then its body up to a blank line: never credentials.
            i += 2
            while i < len(tokens) and not tokens[i][2]:
                i += 1
            continue
        if word == "default":
            if current is not None:
                entries.append(_entry(current))
            current = {"machine": None}
            i += 1
            continue
        key = _VALUE_TOKENS.get(word)
        if key is None:
            # fetchmail ignores unknown words silently; so do we.
            i += 1
            continue
        if i + 1 >= len(tokens):
            raise NetrcSyntaxError(filename, line, f"`{word}` has no value")
        value = tokens[i + 1][0]
        if key == "machine":
            if current is not None:
                entries.append(_entry(current))
            current = {"machine": value}
        elif current is None:
            raise NetrcSyntaxError(filename, line, f"`{word}` before any `machine` or `default`")
        else:
            current[key] = value
        i += 2
    if current is not None:
        entries.append(_entry(current))
    return tuple(entries)


def _entry(values: dict[str, str | None]) -> NetrcEntry:
    return NetrcEntry(values.get("machine"), values.get("login"), values.get("password"))


def find_password(entries: tuple[NetrcEntry, ...], host: str, login: str) -> str | None:
    """fetchmail's search_netrc: the first machine entry for ``host`` whose login is absent or
    is ``login``; ``default`` never matches."""
    for entry in entries:
        if entry.machine == host and (entry.login is None or entry.login == login):
            return entry.password
    return None


def netrc_path() -> str:
    """fetchmail's place: $HOME_ETC/.netrc, else $HOME/.netrc (FETCHMAILHOME does not move it)."""
    home = os.environ.get("HOME_ETC") or os.path.expanduser("~")
    return os.path.join(home, ".netrc")


def read_netrc(path: str) -> tuple[NetrcEntry, ...]:
    """The entries of the netrc at ``path``, none if it does not exist. A file that others may
    read or that is not ours is refused, as ftp(1) refuses it, before any password is used."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return ()
    except OSError as err:
        raise AuthError(f"{path}: cannot read the netrc file: {err.strerror}") from None
    with os.fdopen(fd, encoding="utf-8", errors="replace") as f:
        info = os.fstat(f.fileno())
        if info.st_uid != os.getuid():
            raise RCPermissionError(f"{path}: the netrc file must be owned by you")
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise RCPermissionError(
                f"{path}: the netrc file must have no more than -rw------- (0600) permissions"
            )
        return parse_netrc(f.read(), path)
