"""Reading fetchmail's ``.fetchids`` file: pure parsing, no I/O.

fetchmail (``uid.c``, 6.3 to 6.4.x) writes one line per UID it has seen and that was not yet
expunged::

    REMOTENAME@QUERYNAME UID\\n

QUERYNAME is the poll name (or the ``via`` name); REMOTENAME is the ``user``. There is no quoting,
no header and no UIDVALIDITY: fetchmail keeps this file for POP3 only, and tracks IMAP through the
server's \\Seen flag. Lines of accounts fetchmail did not poll in that run are copied through
unchanged, so one file holds every account.

fetchmail's reader, which we follow so that what fetchmail counted as seen we count as seen:
leading blanks are skipped; the user@host part ends at the first space after the *first* ``@``
(a user name may contain blanks before its first ``@``, as Lotus Notes names do); user and host
are split at the *last* ``@`` of that part (the user name may itself be an address); the UID
starts after the spaces and ends at the first blank. Host and user compare case-blind.

fetchmail silently skips lines it cannot split; we refuse them with the file and line instead,
because a file we misread would make fetchd download again mail the user has already got.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from fetchd.errors import StateError

_BLANKS = b" \t"
_UID_END = b" \t\r\n"


@dataclass(frozen=True, slots=True)
class FetchidsEntry:
    """One line of a ``.fetchids`` file."""

    user: bytes
    host: bytes
    uid: str  # UIDL octets as Latin-1, so every byte survives (RFC 1939 allows only 0x21-0x7E)
    line: int

    def belongs_to(self, host: str, user: str) -> bool:
        """Whether the line is for this account, compared case-blind as fetchmail does."""
        return (
            self.host.lower() == host.encode("utf-8").lower()
            and self.user.lower() == user.encode("utf-8").lower()
        )


def parse_fetchids(data: bytes, filename: str) -> list[FetchidsEntry]:
    """Parse a whole ``.fetchids`` file; a malformed line raises StateError naming file and line.

    Blank lines carry nothing and are skipped (fetchmail never writes them).
    """
    return list(_parse_lines(data, filename))


def _parse_lines(data: bytes, filename: str) -> Iterator[FetchidsEntry]:
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip(_BLANKS + b"\r\n"):
            continue
        entry = parse_fetchids_line(raw, number)
        if entry is None:
            raise StateError(
                f"{filename}:{number}: not a fetchmail .fetchids line (expected 'user@host UID'):"
                f" {raw[:120]!r}; fix or remove the line, or import without this file"
            )
        yield entry


def parse_fetchids_line(raw: bytes, number: int) -> FetchidsEntry | None:
    """Split one line the way fetchmail's ``initialize_saved_lists`` does; None if it cannot."""
    text = raw.lstrip(_BLANKS)
    first_at = text.find(b"@")
    if first_at < 0:
        return None
    space = text.find(b" ", first_at)
    if space < 0:
        return None
    userhost = text[:space].rstrip(_BLANKS)
    uid = _first_token(text[space:].lstrip(b" "))
    user, _, host = userhost.rpartition(b"@")
    if not user or not host or not uid:
        return None
    return FetchidsEntry(user=user, host=host, uid=uid.decode("latin-1"), line=number)


def _first_token(text: bytes) -> bytes:
    for index, byte in enumerate(text):
        if byte in _UID_END:
            return text[:index]
    return text
