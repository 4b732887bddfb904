"""The fleet's one PostgreSQL connection (psycopg 3, asyncio): the active rows of the accounts
table, and each poll's summary written back to its row.

A connection that breaks (the server restarted, the network went) is dropped and made again at
the next use; until then each use fails with FleetDatabaseError, which the daemon logs and
carries on from: it keeps polling the accounts it has. Errors and logs show the DSN without
its password (fetchd.fleet.dsn).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fetchd.errors import FleetDatabaseError
from fetchd.fleet.dsn import shown_dsn
from fetchd.fleet.rows import SELECT_ACTIVE

if TYPE_CHECKING:
    import psycopg

CONNECT_TIMEOUT = 10  # seconds; libpq's connect_timeout
STATEMENT_TIMEOUT_MS = 30_000  # no statement of ours may hold a poll up longer

WRITE_RESULT = "UPDATE fetchmail SET returned_text = %s, date = now() WHERE id = %s"

LAST_POLLS = (
    "SELECT row_id, extract(epoch FROM now() - polled_at)::float8 AS age, fingerprint,"
    " session <> '' AS busy FROM fetchd.polls"
)


@dataclass(frozen=True, slots=True)
class LastPoll:
    """A row's last claim: how many seconds ago (at the read), for which settings, and
    whether a claim is open now."""

    age: float
    fingerprint: str
    busy: bool


# --status's view of the whole fleet, from the table and every worker's fetchd.polls records:
# a row runs while its claim (the advisory lock, fetchd.fleet.pgstate) is held; it is due when
# never polled or last polled poll_time minutes ago; failing when its last poll failed.
FLEET_ROWS = """
SELECT f.id, f.src_user, f.src_server, f.returned_text, p.worker, p.outcome,
       extract(epoch FROM p.polled_at)::float8 AS polled_at,
       (coalesce(p.session, '') <> '' AND EXISTS (
           SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted
           AND l.classid::bigint = %(space)s AND l.objid::bigint = f.id AND l.objsubid = 2
       )) AS running,
       (p.polled_at IS NULL OR p.polled_at <= now() - make_interval(mins => f.poll_time)) AS due
FROM fetchmail f LEFT JOIN fetchd.polls p ON p.row_id = f.id
WHERE f.active
"""
FLEET_VIEW = f"""
WITH r AS ({FLEET_ROWS})
SELECT count(*) AS accounts,
       count(*) FILTER (WHERE due AND NOT running) AS due,
       count(*) FILTER (WHERE running) AS running,
       count(*) FILTER (WHERE outcome NOT IN (0, 1)) AS failing,
       coalesce(json_agg(json_build_object(
           'row', id, 'account', src_user || '@' || src_server, 'worker', worker,
           'since', polled_at, 'running', running, 'outcome', outcome,
           'text', left(returned_text, 200)) ORDER BY id)
         FILTER (WHERE running OR outcome NOT IN (0, 1)), '[]') AS listed
FROM r
"""


class FleetDatabase:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self.shown = shown_dsn(dsn)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._connecting = asyncio.Lock()  # tasks starting together share one connection

    async def _connection(self) -> psycopg.AsyncConnection[Any]:

        async with self._connecting:
            return await self._connect()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        import psycopg
        from psycopg.rows import dict_row

        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            self._conn = await psycopg.AsyncConnection.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT,
                options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
                application_name="fetchd",
                row_factory=dict_row,
            )
        except psycopg.Error as exc:
            raise self._error("cannot connect", exc) from None
        return self._conn

    def _error(self, doing: str, exc: Exception) -> FleetDatabaseError:
        # libpq's first line says what went wrong (it never holds the password).
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return FleetDatabaseError(f"fleet database {self.shown}: {doing}: {reason}")

    async def _run(
        self, doing: str, query: str, params: list[Any] | dict[str, Any] | None = None
    ) -> Any:
        import psycopg

        conn = await self._connection()
        try:
            return await conn.execute(query, params)
        except psycopg.Error as exc:
            if conn.broken or isinstance(exc, psycopg.OperationalError):
                await self._drop()
            raise self._error(doing, exc) from None

    async def active_rows(self) -> list[dict[str, Any]]:
        """The table's active rows, as fetchmail.pl selects them (every column it reads)."""
        cursor = await self._run("reading the fetchmail table", SELECT_ACTIVE)
        rows: list[dict[str, Any]] = await cursor.fetchall()
        return rows

    async def write_result(self, row_id: int, text: str) -> None:
        """``returned_text`` and ``date`` of a row, as fetchmail.pl sets them after a poll."""
        await self._run(f"writing returned_text of row {row_id}", WRITE_RESULT, [text, row_id])

    async def last_polls(self) -> dict[int, LastPoll]:
        """Every row's last poll as fetchd.polls has it, read in one statement."""
        cursor = await self._run("reading fetchd.polls", LAST_POLLS)
        return {
            int(row["row_id"]): LastPoll(float(row["age"]), row["fingerprint"], row["busy"])
            for row in await cursor.fetchall()
        }

    async def fleet_view(self) -> dict[str, Any]:
        """The fleet as --status shows it: counts of its active rows (accounts, due,
        running, failing), and the running ones (with their worker) and failing ones."""
        from fetchd.fleet.pgstate import FLEET_LOCK_SPACE

        cursor = await self._run(
            "reading the fleet's state", FLEET_VIEW, {"space": FLEET_LOCK_SPACE}
        )
        found: dict[str, Any] | None = await cursor.fetchone()
        return dict(found) if found else {}

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing more to release
                await conn.close()

    async def close(self) -> None:
        await self._drop()
