"""The SQLite file behind the UID store: atomic creation, trust checks, schema, durability.

``open_database`` returns a connection only to a file it has checked: ``PRAGMA quick_check``
passes, the header carries fetchd's application id, and the schema version is one this fetchd
knows (older ones are migrated in a transaction). Otherwise it raises StateError with the path and
what to do. Only a missing file is created, and atomically: the schema is written under a
temporary name, fsynced, and hard-linked into place, so a crash never leaves an empty or half-made
store that a later run would have to guess about. Every connection runs in WAL mode with
``synchronous=FULL``: each commit is fsynced before it returns.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from pathlib import Path

from fetchd.errors import StateError
from fetchd.state.paths import PRIVATE_FILE_MODE, make_private_dir

APPLICATION_ID = 0x46455444  # "FETD" in the SQLite header marks the file as a fetchd store
SCHEMA_VERSION = 1
NO_UIDVALIDITY = 0  # POP3, or IMAP before the validity is known
BUSY_TIMEOUT_SECONDS = 30.0  # another fetchd committing to the shared file; commits are short

_SCHEMA = f"""
BEGIN;
PRAGMA application_id = {APPLICATION_ID};
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version (version) VALUES ({SCHEMA_VERSION});
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    server TEXT NOT NULL,
    user TEXT NOT NULL,
    folder TEXT NOT NULL,
    uidvalidity INTEGER,  -- the current one; NULL for POP3 or before the first SELECT
    UNIQUE (server, user, folder)
);
CREATE TABLE delivered (
    account_id INTEGER NOT NULL REFERENCES accounts (id),
    uidvalidity INTEGER NOT NULL,  -- {NO_UIDVALIDITY} when there is none
    uid TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,  -- Unix time, for people reading the file
    PRIMARY KEY (account_id, uidvalidity, uid)
) WITHOUT ROWID;
CREATE TABLE fetchids_imports (
    account_id INTEGER PRIMARY KEY REFERENCES accounts (id),
    source TEXT NOT NULL,
    imported_at INTEGER NOT NULL,
    uid_count INTEGER NOT NULL
);
COMMIT;
"""

# Version N -> SQL taking a store from version N to N + 1, run in one transaction on open.
_MIGRATIONS: dict[int, str] = {}


def open_database(path: Path) -> sqlite3.Connection:
    """A connection to the checked store at ``path``, created first if missing; else StateError."""
    if not os.path.lexists(path):
        _create_store(path)
    connection = _connect(path)
    try:
        _verify(connection, path)
        _configure(connection, path)
    except BaseException:
        connection.close()
        raise
    return connection


def roll_back(connection: sqlite3.Connection) -> None:
    """Undo an open transaction; SQLite may already have rolled it back after an I/O error."""
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")


def _create_store(path: Path) -> None:
    """Create a new store at ``path`` atomically: it appears complete or not at all."""
    if os.path.lexists(f"{path}-wal"):
        raise StateError(
            f"UID store {path} is missing but its write-ahead log {path}-wal is there: the store"
            " was deleted or moved. Restore it, or delete the -wal and -shm files to start afresh"
            " (fetchd will then deliver again every message still on the servers)."
        )
    try:
        make_private_dir(path.parent)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.new")
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
        try:
            _write_schema(temporary)
            with contextlib.suppress(FileExistsError):  # another fetchd made it first: use theirs
                os.link(temporary, path)
        finally:
            for leftover in (temporary, Path(f"{temporary}-wal"), Path(f"{temporary}-shm")):
                leftover.unlink(missing_ok=True)
        _fsync_directory(path.parent)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(f"cannot create UID store {path}: {exc}") from exc


def _write_schema(path: Path) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        # The schema goes in with a rollback journal, so a full disk fails its COMMIT. Written
        # in WAL mode, it stayed in the WAL when the disk filled up: the checkpoint at close
        # fails without a word, and the file linked into place was an empty, "malformed" store.
        connection.execute("PRAGMA synchronous = FULL")
        connection.executescript(_SCHEMA)
        (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()  # in the file
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL mode (still {mode})")
    finally:
        connection.close()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _connect(path: Path) -> sqlite3.Connection:
    """Open an existing store file read-write; never creates one."""
    if path.is_dir():
        raise StateError(f"UID store {path} is a directory, not a file; move it away")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise StateError(f"cannot open UID store {path}: {exc}") from exc
    if size == 0:
        raise StateError(
            f"UID store {path} is empty: fetchd never leaves an empty store, so it was truncated."
            " Restore it from a backup; only if that is impossible, delete it (fetchd will then"
            " deliver again every message still on the servers)."
        )
    try:
        return sqlite3.connect(
            f"{path.as_uri()}?mode=rw",
            uri=True,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,  # we write BEGIN/COMMIT ourselves
            check_same_thread=False,  # asyncio.to_thread; our own lock serialises the calls
        )
    except sqlite3.Error as exc:
        raise StateError(f"cannot open UID store {path}: {exc}") from exc


def _verify(connection: sqlite3.Connection, path: Path) -> None:
    """Refuse a damaged or foreign file before anything is written to it; migrate an old one."""
    advice = (
        "Restore it from a backup, or move it away to start afresh (fetchd will then deliver"
        " again every message still on the servers)."
    )
    try:
        problems = [row[0] for row in connection.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            summary = "; ".join(str(p) for p in problems[:3])
            raise StateError(f"UID store {path} is damaged ({summary}). {advice}")
        (application_id,) = connection.execute("PRAGMA application_id").fetchone()
        if application_id != APPLICATION_ID:
            raise StateError(f"{path} is an SQLite database of another program. {advice}")
        rows = connection.execute("SELECT version FROM schema_version").fetchall()
    except sqlite3.Error as exc:
        raise StateError(f"UID store {path} cannot be read ({exc}). {advice}") from exc
    if len(rows) != 1 or not isinstance(rows[0][0], int):
        raise StateError(f"UID store {path} has a damaged schema version. {advice}")
    _migrate(connection, path, rows[0][0])


def _migrate(connection: sqlite3.Connection, path: Path, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise StateError(
            f"UID store {path} has schema version {version}, written by a newer fetchd;"
            f" this one knows up to {SCHEMA_VERSION}. Upgrade fetchd."
        )
    while version < SCHEMA_VERSION:
        script = _MIGRATIONS.get(version)
        if script is None:
            raise StateError(f"UID store {path}: no migration from schema version {version}")
        try:
            connection.executescript(
                f"BEGIN IMMEDIATE; {script}; UPDATE schema_version SET version = {version + 1};"
                " COMMIT;"
            )
        except sqlite3.Error as exc:
            roll_back(connection)
            raise StateError(f"UID store {path}: migration from {version} failed: {exc}") from exc
        version += 1


def _configure(connection: sqlite3.Connection, path: Path) -> None:
    try:
        (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
        connection.execute("PRAGMA synchronous = FULL")  # fsync the WAL at every commit
        connection.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        raise StateError(f"cannot configure UID store {path}: {exc}") from exc
    if mode != "wal":
        raise StateError(f"UID store {path}: the filesystem refused WAL mode (got {mode!r})")
