"""The UID store in PostgreSQL (fleet mode), shared by every worker on the database, and the
claim that lets only one worker poll an account at a time.

The store has the SQLite store's interface (``fetchd.state.store``: ``account``, and per
account ``delivered``, ``record_delivered``, ``forget_absent``, ``set_uidvalidity``) and its
rule: ``record_delivered`` returns only once the transaction is committed in PostgreSQL, and
the poll engine sends no delete before it returns. Tables live in a schema of our own,
``fetchd``, created and migrated by fetchd under a transaction-level advisory lock (two workers
starting together do not race). ``.fetchids`` import is not done in fleet mode: fetchmail.pl's
runs keep their UIDs in temporary files that do not survive.

One worker per account at a time: before a row's poll the worker takes a session advisory lock
(``pg_try_advisory_lock(FLEET_LOCK_SPACE, row id)``) on its own connection; a worker that dies
(kill -9, a host gone) loses its session and so its locks, and another worker takes the row at
its next cycle. Under the lock, ``fetchd.polls`` says when the row was last polled, by whom: a
row polled by another worker within its ``poll_time`` is not polled again.
``--fleet-server-connections N`` caps the polls of one server across all workers the same way:
N advisory locks per server name, one held for each poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import datetime
import random
import threading
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import structlog

from fetchd.errors import ClaimLostError, FleetDatabaseError, StateError
from fetchd.fleet.dsn import shown_dsn
from fetchd.state.database import NO_UIDVALIDITY
from fetchd.state.key import INBOX, AccountKey
from fetchd.state.store import MAX_UIDVALIDITY, AccountState, FetchidsImport, UIDStore

_T = TypeVar("_T")

log = structlog.get_logger("fetchd.fleet")

SCHEMA_VERSION = 3
FLEET_LOCK_SPACE = 0x46_44  # "FD": the first key of fetchd's advisory locks on rows
SERVER_LOCK_SPACE = 0x46_53  # "FS": on a server's connection slots (--fleet-server-connections)
MIGRATION_LOCK = 0  # second key of the lock held while creating or migrating the schema

MIGRATIONS = {
    1: [
        "CREATE SCHEMA IF NOT EXISTS fetchd",
        "CREATE TABLE fetchd.schema_version (version integer NOT NULL)",
        "INSERT INTO fetchd.schema_version VALUES (0)",
        """CREATE TABLE fetchd.accounts (
            id bigserial PRIMARY KEY,
            server text NOT NULL,
            username text NOT NULL,
            folder text NOT NULL,
            uidvalidity bigint,
            UNIQUE (server, username, folder))""",
        """CREATE TABLE fetchd.delivered (
            account_id bigint NOT NULL REFERENCES fetchd.accounts (id) ON DELETE CASCADE,
            uidvalidity bigint NOT NULL,
            uid text NOT NULL,
            recorded_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (account_id, uidvalidity, uid))""",
        """CREATE TABLE fetchd.polls (
            row_id integer PRIMARY KEY,
            polled_at timestamptz NOT NULL,
            worker text NOT NULL,
            fingerprint text NOT NULL DEFAULT '')""",
    ],
    2: [
        # The claim of the poll under way ('' when none) and when another worker first found
        # it orphaned (its session gone without a release): see RowClaims.claim.
        "ALTER TABLE fetchd.polls ADD COLUMN session text NOT NULL DEFAULT ''",
        "ALTER TABLE fetchd.polls ADD COLUMN orphaned_at timestamptz",
    ],
    3: [
        # The exit code of the row's last finished poll (NULL: none yet): --status's failing.
        "ALTER TABLE fetchd.polls ADD COLUMN outcome integer",
    ],
}

# A claim whose session ended without a release (a worker killed, or its connection to the
# database broken while it polls) is taken over only after this long: a live worker that lost
# its session notices within WATCH_SECONDS + WATCH_TIMEOUT and abandons the poll first.
TAKEOVER_GRACE_SECONDS = 5.0
WATCH_SECONDS = 1.0
WATCH_TIMEOUT = 2.0

# Is the claim still held, by the very session that took it (a pid may be reused)?
CLAIM_HELD = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = %s"
    " AND l.objid::bigint = %s AND l.objsubid = 2 AND l.pid = %s AND a.backend_start = %s)"
)


@dataclasses.dataclass(eq=False)  # one claim is one object: hashed by identity
class Claim:
    """This worker's claim on a row: the session advisory lock held by the database session
    ``pid`` (started at ``backend_start``). ``lost`` is set when that session is gone."""

    row_id: int
    pid: int
    backend_start: datetime.datetime
    lost: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    @property
    def session(self) -> str:
        return f"{self.pid}@{self.backend_start.isoformat()}"


# The claim of the poll running in this task (and in the threads it hands store work to).
CURRENT_CLAIM: contextvars.ContextVar[Claim | None] = contextvars.ContextVar(
    "fetchd_claim", default=None
)


def migrate(conn: psycopg.Connection[Any]) -> None:
    """Create or bring the ``fetchd`` schema to SCHEMA_VERSION, in one transaction."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", [FLEET_LOCK_SPACE, MIGRATION_LOCK])
        exists = conn.execute("SELECT to_regclass('fetchd.schema_version')").fetchone()
        version = 0
        if exists is not None and exists[0] is not None:
            found = conn.execute("SELECT version FROM fetchd.schema_version").fetchone()
            version = int(found[0]) if found else 0
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[step]:
                conn.execute(statement)
        conn.execute("UPDATE fetchd.schema_version SET version = %s", [SCHEMA_VERSION])


class PGUIDStore(UIDStore):
    """The UID store of all the fleet's accounts, in PostgreSQL. Make one with ``connect``."""

    def __init__(self, dsn: str) -> None:  # no SQLite file: the base's connection is unused
        self.path = Path(shown_dsn(dsn))
        self._dsn = dsn
        self._lock = threading.Lock()
        self._pg: psycopg.Connection[Any] | None = None
        self._connection = None

    @classmethod
    def connect(cls, dsn: str) -> PGUIDStore:
        store = cls(dsn)
        store._run(migrate, "create the fetchd schema")
        return store

    def _connect(self) -> psycopg.Connection[Any]:
        if self._pg is None or self._pg.closed or self._pg.broken:
            try:
                self._pg = psycopg.connect(self._dsn, connect_timeout=10, application_name="fetchd")
            except psycopg.Error as exc:
                raise _state_error(self.path, "connect", exc) from None
        return self._pg

    def _run(self, work: Callable[[psycopg.Connection[Any]], _T], what: str) -> _T:
        """``work`` in one transaction: committed in PostgreSQL when this returns."""
        with self._lock:
            conn = self._connect()
            try:
                with conn.transaction():
                    return work(conn)
            except psycopg.Error as exc:
                raise _state_error(self.path, what, exc) from None

    def account(self, server: str, user: str, folder: str = INBOX) -> AccountState:
        key = AccountKey.of(server, user, folder)

        def find(conn: psycopg.Connection[Any]) -> tuple[int, int | None]:
            conn.execute(
                "INSERT INTO fetchd.accounts (server, username, folder) VALUES (%s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                [key.server, key.user, key.folder],
            )
            row = conn.execute(
                "SELECT id, uidvalidity FROM fetchd.accounts"
                " WHERE server = %s AND username = %s AND folder = %s",
                [key.server, key.user, key.folder],
            ).fetchone()
            assert row is not None
            return int(row[0]), row[1]

        account_id, validity = self._run(find, f"read account {key}")
        return PGAccountState(self, key, account_id=account_id, uidvalidity=validity)

    def import_fetchids(
        self,
        path: Path | str,
        server: str,
        user: str,
        folder: str = INBOX,
        *,
        fetchids_host: str | None = None,
    ) -> FetchidsImport:
        return FetchidsImport(source=Path(path), imported=0, found=False)

    def close(self) -> None:
        with self._lock:
            conn, self._pg = self._pg, None
        if conn is not None:
            conn.close()


class PGAccountState(AccountState):
    """One mailbox's records in the PostgreSQL store."""

    _store: PGUIDStore

    def delivered(self) -> set[str]:
        validity = self._validity_column
        rows = self._store._run(
            lambda conn: conn.execute(
                "SELECT uid FROM fetchd.delivered WHERE account_id = %s AND uidvalidity = %s",
                [self.account_id, validity],
            ).fetchall(),
            f"read delivered UIDs of {self.key}",
        )
        return {str(row[0]) for row in rows}

    def record_delivered(self, uids: Iterable[str]) -> None:
        batch = [uid for uid in uids]
        if any(not isinstance(uid, str) or not uid for uid in batch):
            raise ValueError("a UID is a non-empty str")
        if not batch:
            return
        validity = self._validity_column

        def record(conn: psycopg.Connection[Any]) -> None:
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO fetchd.delivered (account_id, uidvalidity, uid)"
                    " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    [(self.account_id, validity, uid) for uid in batch],
                )

        self._store._run(record, f"record {len(batch)} delivered UID(s) of {self.key}")

    def forget_absent(self, present_uids: Iterable[str]) -> None:
        present = list(set(present_uids))
        validity = self._validity_column
        self._store._run(
            lambda conn: conn.execute(
                "DELETE FROM fetchd.delivered WHERE account_id = %s AND uidvalidity = %s"
                " AND NOT (uid = ANY(%s))",
                [self.account_id, validity, present],
            ),
            f"forget absent UIDs of {self.key}",
        )

    def set_uidvalidity(self, uidvalidity: int) -> bool:
        if not 1 <= uidvalidity <= MAX_UIDVALIDITY:
            raise ValueError(f"UIDVALIDITY must be in 1..2**32-1, not {uidvalidity}")
        if uidvalidity == self._uidvalidity:
            return False
        self._store._run(
            lambda conn: conn.execute(
                "UPDATE fetchd.accounts SET uidvalidity = %s WHERE id = %s",
                [uidvalidity, self.account_id],
            ),
            f"set UIDVALIDITY of {self.key}",
        )
        changed = self._uidvalidity is not None
        self._uidvalidity = uidvalidity
        return changed

    def confirm_claim(self) -> None:
        """Before any delete: the row's claim (if this poll has one) is still held by the
        session that took it; else ClaimLostError, and the poll ends uncommitted."""
        claim = CURRENT_CLAIM.get()
        if claim is None:
            return
        held = self._store._run(
            lambda conn: conn.execute(
                CLAIM_HELD, [FLEET_LOCK_SPACE, claim.row_id, claim.pid, claim.backend_start]
            ).fetchone(),
            f"check the claim on row {claim.row_id}",
        )
        if not (held and held[0]):
            claim.lost.set()
            raise ClaimLostError(
                f"row {claim.row_id}: this worker's claim was lost (its database session "
                "ended); nothing deleted, the session abandoned"
            )

    def forget_other_uidvalidities(self) -> None:
        validity = self._validity_column
        self._store._run(
            lambda conn: conn.execute(
                "DELETE FROM fetchd.delivered WHERE account_id = %s AND uidvalidity != %s",
                [self.account_id, validity],
            ),
            f"forget old UIDVALIDITY records of {self.key}",
        )


def _state_error(where: Path, what: str, exc: Exception) -> StateError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return StateError(f"UID store {where}: cannot {what}: {reason}")


class RowClaims:
    """This worker's claims on rows: a session advisory lock per row being polled, on one
    connection of its own, and the ``fetchd.polls`` record of who polled a row when."""

    def __init__(
        self, dsn: str, worker: str, on_takeover: Callable[[], None] | None = None
    ) -> None:
        self._dsn = dsn
        self.worker = worker
        self._on_takeover = on_takeover  # --metrics: fetchd_lease_takeovers_total
        self.shown = shown_dsn(dsn)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        # One connection only: the locks belong to its session. Without this, tasks starting
        # together each made one, and a replaced one, closed, freed locks still in use.
        self._connecting = asyncio.Lock()
        self._slots_lock = asyncio.Lock()
        self._slots_held: set[int] = set()
        self._watched: set[Claim] = set()
        self._watcher: asyncio.Task[None] | None = None
        self.takeovers = 0  # rows this worker took over from a claim that ended unreleased
        # The claims connection's session (pid, backend_start), asked once per connection.
        self._session_of: tuple[psycopg.AsyncConnection[Any], int, datetime.datetime] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        async with self._connecting:
            if self._conn is None or self._conn.closed or self._conn.broken:
                try:
                    self._conn = await psycopg.AsyncConnection.connect(
                        self._dsn,
                        autocommit=True,
                        connect_timeout=10,
                        application_name="fetchd-claims",
                    )
                except psycopg.Error as exc:
                    raise self._error("cannot connect", exc) from None
            return self._conn

    def _error(self, doing: str, exc: Exception) -> FleetDatabaseError:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return FleetDatabaseError(f"fleet database {self.shown}: {doing}: {reason}")

    async def _session(self, conn: psycopg.AsyncConnection[Any]) -> tuple[int, datetime.datetime]:
        cursor = await conn.execute(
            "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        )
        found = await cursor.fetchone()
        assert found is not None
        return int(found[0]), found[1]

    async def claim(self, row_id: int, fresh_seconds: float, fingerprint: str) -> Claim | None:
        """The row's claim if this worker may poll it now: no other worker polls it, and none
        polled it in the last ``fresh_seconds`` as it is now (``fingerprint``: a changed row is
        polled at once). It is held until ``release``. A row whose last claim ended without a
        release (its worker killed, or cut off from the database) is taken over only
        TAKEOVER_GRACE_SECONDS after a worker first found it so, so that a worker still polling
        it has abandoned that poll first (``watch``)."""
        conn = await self._connection()
        try:
            if self._session_of is None or self._session_of[0] is not conn:
                self._session_of = (conn, *await self._session(conn))  # once per connection
            _, pid, started = self._session_of
            cursor = await conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", [FLEET_LOCK_SPACE, row_id]
            )
            locked = await cursor.fetchone()
            if not (locked and locked[0]):
                return None
            claim = Claim(row_id, pid, started)
            if not await self._take(conn, claim, fresh_seconds, fingerprint):
                await self.release(claim, clear=False)
                return None
            self._watched.add(claim)
            if self._watcher is None or self._watcher.done():
                self._watcher = asyncio.create_task(self._watch())
            return claim
        except psycopg.Error as exc:
            raise self._error(f"claiming row {row_id}", exc) from None

    async def _take(
        self, conn: psycopg.AsyncConnection[Any], claim: Claim, fresh: float, fingerprint: str
    ) -> bool:
        cursor = await conn.execute(
            "SELECT session, orphaned_at <= now() - make_interval(secs => %s)"
            " FROM fetchd.polls WHERE row_id = %s",
            [TAKEOVER_GRACE_SECONDS, claim.row_id],
        )
        previous = await cursor.fetchone()
        takeover = bool(previous and previous[0])
        if takeover and previous is not None and not previous[1]:
            await conn.execute(
                "UPDATE fetchd.polls SET orphaned_at = coalesce(orphaned_at, now())"
                " WHERE row_id = %s",
                [claim.row_id],
            )
            log.info("fleet.orphaned", text=f"row {claim.row_id}: its last claim ended unreleased")
            return False
        cursor = await conn.execute(
            "INSERT INTO fetchd.polls AS p (row_id, polled_at, worker, fingerprint, session)"
            " VALUES (%s, now(), %s, %s, %s) ON CONFLICT (row_id) DO UPDATE"
            " SET polled_at = now(), worker = excluded.worker,"
            " fingerprint = excluded.fingerprint, session = excluded.session,"
            " orphaned_at = NULL"
            " WHERE p.session != '' OR p.polled_at <= now() - make_interval(secs => %s)"
            " OR p.fingerprint != excluded.fingerprint"
            " RETURNING row_id",
            [claim.row_id, self.worker, fingerprint, claim.session, fresh],
        )
        taken = await cursor.fetchone() is not None
        if taken and takeover:
            self.takeovers += 1
            if self._on_takeover is not None:
                self._on_takeover()
            log.warning("fleet.takeover", text=f"row {claim.row_id}: taken over")
        return taken

    async def _watch(self) -> None:
        """While claims are held: is their session alive? A claim whose session ended (or
        does not answer within WATCH_TIMEOUT) is marked lost, and its poll is abandoned."""
        while self._watched:
            await asyncio.sleep(WATCH_SECONDS)
            alive: int | None = None
            try:
                async with asyncio.timeout(WATCH_TIMEOUT):
                    conn = await self._connection()
                    alive = (await self._session(conn))[0]
            except (TimeoutError, FleetDatabaseError, psycopg.Error):
                alive = None
            for claim in list(self._watched):
                if claim.pid != alive:
                    claim.lost.set()
                    self._watched.discard(claim)

    async def server_slot(self, host: str, slots: int) -> int | None:
        """One of the ``slots`` connection slots of server ``host`` (case-blind), shared by
        every worker: its number, held until ``release_slot``; None when all are taken."""
        conn = await self._connection()
        base = zlib.crc32(host.lower().encode()) & 0x7FFFFF00  # a key per slot: base | slot
        # An advisory lock is re-entrant within its session, and this worker's polls share
        # one: the slots this worker holds are skipped here, not left to PostgreSQL.
        async with self._slots_lock:
            try:
                for slot in random.sample(range(slots), slots):
                    key = base | slot
                    if key in self._slots_held:
                        continue
                    cursor = await conn.execute(
                        "SELECT pg_try_advisory_lock(%s, %s)", [SERVER_LOCK_SPACE, key]
                    )
                    locked = await cursor.fetchone()
                    if locked and locked[0]:
                        self._slots_held.add(key)
                        return key
            except psycopg.Error as exc:
                raise self._error(f"taking a connection slot of {host}", exc) from None
        return None

    async def release_slot(self, key: int) -> None:
        self._slots_held.discard(key)
        conn = await self._connection()
        try:
            await conn.execute("SELECT pg_advisory_unlock(%s, %s)", [SERVER_LOCK_SPACE, key])
        except psycopg.Error as exc:
            raise self._error("releasing a connection slot", exc) from None

    async def release(
        self, claim: Claim, *, clear: bool = True, outcome: int | None = None
    ) -> None:
        """The claim ended: the lock freed and, with ``clear``, the poll's record closed
        (with its exit code ``outcome``, if it finished)."""
        self._watched.discard(claim)
        if claim.lost.is_set():
            return  # its session, and so its lock, is gone already
        conn = await self._connection()
        try:
            if clear:
                await conn.execute(
                    "UPDATE fetchd.polls SET session = '', outcome = coalesce(%s, outcome)"
                    " WHERE row_id = %s AND session = %s",
                    [outcome, claim.row_id, claim.session],
                )
            await conn.execute(
                "SELECT pg_advisory_unlock(%s, %s)", [FLEET_LOCK_SPACE, claim.row_id]
            )
        except psycopg.Error as exc:
            raise self._error(f"releasing row {claim.row_id}", exc) from None

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(BaseException):
                await self._watcher
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


__all__ = [
    "CURRENT_CLAIM",
    "NO_UIDVALIDITY",
    "Claim",
    "PGAccountState",
    "PGUIDStore",
    "RowClaims",
    "migrate",
]
