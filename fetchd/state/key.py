"""The identity of one mailbox in the UID store and in lock names.

Host names compare case-blind (DNS does), and so does IMAP's ``INBOX`` (RFC 3501 5.1); user and
other folder names are kept exactly, because servers may tell ``Bob`` from ``bob``.
"""

from __future__ import annotations

from dataclasses import dataclass

INBOX = "INBOX"


@dataclass(frozen=True, slots=True)
class AccountKey:
    """A mailbox: (server, user, folder), normalised so one mailbox has one key."""

    server: str
    user: str
    folder: str = INBOX

    @classmethod
    def of(cls, server: str, user: str, folder: str = INBOX) -> AccountKey:
        """The normalised key; an empty server, user or folder is a programming error."""
        if not server or not user or not folder:
            raise ValueError(
                f"account needs server, user and folder: {server!r} {user!r} {folder!r}"
            )
        if folder.upper() == INBOX:
            folder = INBOX
        return cls(server=server.lower(), user=user, folder=folder)

    def __str__(self) -> str:
        where = f"{self.user}@{self.server}"
        return where if self.folder == INBOX else f"{where} folder {self.folder}"
