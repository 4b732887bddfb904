"""The durable UID store: which messages of which mailbox fetchd has delivered.

One SQLite file (standard library) holds every account, keyed by (server, user, folder,
UIDVALIDITY, UID). It is the ground of the delivery invariant: ``record_delivered`` returns only
after its transaction is committed and on disk (WAL with ``synchronous=FULL`` fsyncs the log at
every commit), and only then may the engine send DELE.

A store we cannot trust stops the account: a corrupt, truncated or unreadable file, a directory,
another program's database, or a schema from a newer fetchd all raise StateError naming the path
(see ``database``). Nothing is ever treated as an empty store: that would deliver every kept
message again.

UIDVALIDITY (IMAP, RFC 3501 2.3.1.1): a UID means a message only together with its mailbox's
UIDVALIDITY, which never repeats for a different set of messages. Records are therefore kept per
validity, and an account sees only those of its current one. When the server announces a new
validity, the old records are kept aside, never applied to the new UIDs: an old UID may now name
another, undelivered message, and skipping or deleting it would lose mail. The price is that mail
kept on the server is delivered again once after a validity change; losing it is not an option.
Should the old validity come back (a server restored from backup), its records apply again, which
the RFC makes correct. POP3 has no validity and uses the column value 0 (IMAP's is at least 1).

Calls are synchronous and short; an internal lock lets any one thread at a time use the store (the
engine calls it through ``asyncio.to_thread``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from fetchd.errors import StateError
from fetchd.state.database import NO_UIDVALIDITY, open_database, roll_back
from fetchd.state.fetchids import parse_fetchids
from fetchd.state.key import INBOX, AccountKey
from fetchd.state.paths import default_store_path

MAX_UIDVALIDITY = 2**32 - 1

_SELECT_ACCOUNT = (
    "SELECT id, uidvalidity FROM accounts WHERE server = ? AND user = ? AND folder = ?"
)

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class FetchidsImport:
    """What ``import_fetchids`` did for one account."""

    source: Path
    imported: int  # UIDs newly recorded as delivered
    already_done: bool = False  # an earlier run imported for this account; the file was not read
    found: bool = True  # False: no such file, nothing recorded, a later run will try again


class UIDStore:
    """The UID store of all accounts in one SQLite file. Make one with ``UIDStore.open``."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = connection
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path | str | None = None) -> UIDStore:
        """Open (or create, if missing) the store; StateError if it cannot be trusted."""
        store_path = Path(path if path is not None else default_store_path()).absolute()
        connection = open_database(store_path)
        return cls(connection, store_path)

    def account(self, server: str, user: str, folder: str = INBOX) -> AccountState:
        """The state of one mailbox, created empty the first time it is asked for."""
        key = AccountKey.of(server, user, folder)
        row = self._read(
            lambda db: db.execute(_SELECT_ACCOUNT, (key.server, key.user, key.folder)).fetchone(),
            f"read account {key}",
        )
        if row is None:

            def add(db: sqlite3.Connection) -> tuple[int, int | None]:
                # OR IGNORE: another process may add the same account between our read and here.
                db.execute(
                    "INSERT OR IGNORE INTO accounts (server, user, folder) VALUES (?, ?, ?)",
                    (key.server, key.user, key.folder),
                )
                found: tuple[int, int | None] = db.execute(
                    _SELECT_ACCOUNT, (key.server, key.user, key.folder)
                ).fetchone()
                return found

            row = self._write(add, f"add account {key}")
        return AccountState(self, key, account_id=row[0], uidvalidity=row[1])

    def import_fetchids(
        self,
        path: Path | str,
        server: str,
        user: str,
        folder: str = INBOX,
        *,
        fetchids_host: str | None = None,
    ) -> FetchidsImport:
        """Record the account's UIDs from fetchmail's ``.fetchids`` as delivered, once ever.

        ``fetchids_host`` is the name fetchmail wrote (its poll name, or ``via``); default
        ``server``. UIDs go in without UIDVALIDITY: fetchmail keeps the file for POP3 only.
        A malformed line raises StateError naming file and line, and nothing is recorded.
        """
        source = Path(path)
        state = self.account(server, user, folder)
        if self._imported_before(state.account_id):
            return FetchidsImport(source=source, imported=0, already_done=True)
        try:
            data = source.read_bytes()
        except FileNotFoundError:
            return FetchidsImport(source=source, imported=0, found=False)
        except OSError as exc:
            raise StateError(f"cannot read fetchmail id file {source}: {exc}") from exc
        host = fetchids_host or server
        uids = [e.uid for e in parse_fetchids(data, str(source)) if e.belongs_to(host, user)]

        def record(db: sqlite3.Connection) -> int:
            before = db.total_changes
            _insert_delivered(db, state.account_id, NO_UIDVALIDITY, uids)
            imported = db.total_changes - before
            db.execute(
                "INSERT INTO fetchids_imports (account_id, source, imported_at, uid_count)"
                " VALUES (?, ?, ?, ?)",
                (state.account_id, str(source), int(time.time()), imported),
            )
            return imported

        imported = self._write(record, f"import {source} for {state.key}")
        return FetchidsImport(source=source, imported=imported)

    def close(self) -> None:
        """Close the file; further use raises StateError. Closing twice does nothing."""
        with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None:
                connection.close()

    def __enter__(self) -> UIDStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _imported_before(self, account_id: int) -> bool:
        row = self._read(
            lambda db: db.execute(
                "SELECT 1 FROM fetchids_imports WHERE account_id = ?", (account_id,)
            ).fetchone(),
            "read the fetchids import record",
        )
        return row is not None

    def _read(self, work: Callable[[sqlite3.Connection], _T], what: str) -> _T:
        """Run ``work`` outside an explicit transaction (one statement, its own snapshot)."""
        with self._lock:
            connection = self._open_connection()
            try:
                return work(connection)
            except sqlite3.Error as exc:
                raise StateError(f"UID store {self.path}: cannot {what}: {exc}") from exc

    def _write(self, work: Callable[[sqlite3.Connection], _T], what: str) -> _T:
        """Run ``work`` in one transaction; it is durable when this returns."""
        with self._lock:
            connection = self._open_connection()
            try:
                connection.execute("BEGIN IMMEDIATE")
                result = work(connection)
                connection.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                roll_back(connection)
                raise StateError(f"UID store {self.path}: cannot {what}: {exc}") from exc
            except BaseException:
                roll_back(connection)
                raise

    def _open_connection(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StateError(f"UID store {self.path} is closed")
        return self._connection


class AccountState:
    """One mailbox's records in the store. Get it from ``UIDStore.account``.

    Hold one per account at a time (the account lock sees to that across processes): the current
    UIDVALIDITY is cached here.
    """

    def __init__(
        self, store: UIDStore, key: AccountKey, *, account_id: int, uidvalidity: int | None
    ) -> None:
        self.key = key
        self.account_id = account_id
        self._store = store
        self._uidvalidity = uidvalidity

    @property
    def uidvalidity(self) -> int | None:
        """The mailbox's current UIDVALIDITY; None for POP3 or before the first SELECT."""
        return self._uidvalidity

    @property
    def _validity_column(self) -> int:
        return NO_UIDVALIDITY if self._uidvalidity is None else self._uidvalidity

    def delivered(self) -> set[str]:
        """The UIDs recorded as delivered (under the current UIDVALIDITY)."""
        rows = self._store._read(
            lambda db: db.execute(
                "SELECT uid FROM delivered WHERE account_id = ? AND uidvalidity = ?",
                (self.account_id, self._validity_column),
            ).fetchall(),
            f"read delivered UIDs of {self.key}",
        )
        return {uid for (uid,) in rows}

    def record_delivered(self, uids: Iterable[str]) -> None:
        """Record UIDs as delivered in one transaction, committed and fsynced before returning.

        This is the step that must precede any DELE. Recording a UID twice is harmless.
        """
        batch = _checked_uids(uids)
        if not batch:
            return
        validity = self._validity_column
        self._store._write(
            lambda db: _insert_delivered(db, self.account_id, validity, batch),
            f"record {len(batch)} delivered UID(s) of {self.key}",
        )

    def forget_absent(self, present_uids: Iterable[str]) -> None:
        """Drop records of UIDs the server no longer lists, so the store stays mailbox-sized.

        Pass the complete listing of a successful poll: a UID missing from it is forgotten.
        Records of other UIDVALIDITYs are left alone.
        """
        present = set(present_uids)
        validity = self._validity_column

        def forget(db: sqlite3.Connection) -> None:
            rows = db.execute(
                "SELECT uid FROM delivered WHERE account_id = ? AND uidvalidity = ?",
                (self.account_id, validity),
            ).fetchall()
            db.executemany(
                "DELETE FROM delivered WHERE account_id = ? AND uidvalidity = ? AND uid = ?",
                [(self.account_id, validity, uid) for (uid,) in rows if uid not in present],
            )

        self._store._write(forget, f"forget absent UIDs of {self.key}")

    def set_uidvalidity(self, uidvalidity: int) -> bool:
        """Make ``uidvalidity`` current; True if it replaced a different known one.

        After a change, ``delivered`` shows only records made under the new validity; the old
        ones stay in the file, unused (see the module docstring for why that is the safe side).
        """
        if not 1 <= uidvalidity <= MAX_UIDVALIDITY:
            raise ValueError(f"UIDVALIDITY must be in 1..2**32-1, not {uidvalidity}")
        if uidvalidity == self._uidvalidity:
            return False
        self._store._write(
            lambda db: db.execute(
                "UPDATE accounts SET uidvalidity = ? WHERE id = ?", (uidvalidity, self.account_id)
            ),
            f"set UIDVALIDITY of {self.key}",
        )
        changed = self._uidvalidity is not None
        self._uidvalidity = uidvalidity
        return changed

    def forget_other_uidvalidities(self) -> None:
        """Drop the records kept aside from earlier UIDVALIDITYs (a deliberate clean-up)."""
        validity = self._validity_column
        self._store._write(
            lambda db: db.execute(
                "DELETE FROM delivered WHERE account_id = ? AND uidvalidity != ?",
                (self.account_id, validity),
            ),
            f"forget old UIDVALIDITY records of {self.key}",
        )


def _checked_uids(uids: Iterable[str]) -> list[str]:
    batch = list(uids)
    for uid in batch:
        if not isinstance(uid, str) or not uid:
            raise ValueError(f"a UID is a non-empty str, not {uid!r}")
    return batch


def _insert_delivered(
    db: sqlite3.Connection, account_id: int, uidvalidity: int, uids: Iterable[str]
) -> None:
    now = int(time.time())
    db.executemany(
        "INSERT OR IGNORE INTO delivered (account_id, uidvalidity, uid, recorded_at)"
        " VALUES (?, ?, ?, ?)",
        [(account_id, uidvalidity, uid, now) for uid in uids],
    )
