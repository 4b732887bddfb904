"""The daemon's supervisor over a table's rows: the same per-account tasks (interval, backoff,
wake requests, stop), but the set of accounts is re-read from the database every cycle.

- A new row starts polling within one cycle; a changed row is stopped and started anew (so it
  polls at once with its new settings); a deactivated or deleted row stops. Accounts that did
  not change keep their tasks and their place in the interval.
- After each poll of a row its ``returned_text`` and ``date`` are written (fetchmail.pl's
  columns, shown by PostfixAdmin); a row that cannot be polled gets its error there, once.
- The database may be away (restarted, unreachable): the supervisor logs it once, keeps
  polling the accounts it has, and reads the table again at the next cycle.
- The rc file's own ``poll`` entries run beside the rows; a reload re-reads the rc file (its
  globals and ``defaults`` entry apply to every row).
- Logs of a row's poll carry ``row=ID``.
- With ``--fleet-server-connections N`` a row's poll also waits for one of N slots of its
  server, shared by all workers (fetchd.fleet.pgstate).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from fetchd.config.model import Config, Server
from fetchd.daemon.supervisor import AccountStatus, Supervisor, _Entry, cancel_and_wait
from fetchd.errors import ExitCode, FleetDatabaseError, FleetRowError
from fetchd.fleet.database import FleetDatabase, LastPoll
from fetchd.fleet.rows import FleetAccount

if TYPE_CHECKING:  # psycopg, which it needs, is imported only once --fleet runs
    from fetchd.fleet.pgstate import Claim, RowClaims

log = structlog.get_logger("fetchd.fleet")

SLOT_RETRY_SECONDS = 0.1

# The rows as accounts, and the rows that cannot be accounts; from the rows the table holds.
RowsToAccounts = Callable[[list[dict[str, Any]]], tuple[list[FleetAccount], list[FleetRowError]]]


@dataclass
class _RowEntry(_Entry):
    row_id: int = 0


def returned_text(account: FleetAccount, code: int, status: AccountStatus, messages: int) -> str:
    """What a poll did, in the words fetchmail prints (fetchmail.pl stores that output)."""
    user = account.server.users[0]
    where = f"{user.remote} at {account.server.host}"
    if code == ExitCode.MAIL:
        plural = "" if messages == 1 else "s"
        return f"fetchd: {messages} message{plural} for {where} delivered to {user.localnames[0]}"
    if code == ExitCode.NOMAIL:
        return f"fetchd: No mail for {where}"
    return f"fetchd: {where}: {status.error or 'error'} (exit {code})"


class FleetSupervisor(Supervisor):
    def __init__(
        self,
        config: Config,
        rc_entries: list[Server],
        poll_one: Callable[[Config, Server, Any, AccountStatus], Awaitable[int]],
        reload: Callable[[], tuple[Config, list[Server]]],
        database: FleetDatabase,
        to_accounts: Callable[[], RowsToAccounts],
        claims: RowClaims | None = None,
        server_connections: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, rc_entries, poll_one, reload, **kwargs)
        self._database = database
        self._claims = claims  # None: the only worker (no claims asked)
        self._server_connections = server_connections  # 0: no cap across the fleet
        self._to_accounts = to_accounts  # called anew after a reload: new defaults
        self._rows: dict[int, FleetAccount] = {}
        self._row_errors: dict[int, str] = {}
        self._tasks: dict[tuple[str, int], tuple[Server, _Entry, asyncio.Task[None]]] = {}
        self._database_error: str | None = None
        # fetchd.polls as read at the last refresh (monotonic time of the read): a row polled
        # by any worker within its poll_time is skipped without asking for its claim.
        self._last_polls: dict[int, LastPoll] = {}
        self._last_polls_read = 0.0

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        described["fleet"] = {
            "database": self._database.shown,
            "rows": len(self._rows),
            "rows_refused": len(self._row_errors),
            "database_error": self._database_error,
        }
        return described

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        answer = await super().handle(request)
        if request["cmd"] == "status":  # and the whole fleet's, from the database
            fleet = answer["daemon"]["fleet"]
            try:
                fleet["view"] = await self._database.fleet_view()
            except FleetDatabaseError as exc:
                fleet["view_error"] = str(exc)
        return answer

    async def run(self) -> int:
        try:
            while not self._stopping.is_set():
                self._restart.clear()
                await self._refresh()
                watcher = asyncio.create_task(self._watch_rc_file())
                stop = asyncio.create_task(self._stopping.wait())
                restart = asyncio.create_task(self._restart.wait())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(self.config.globals.poll_interval, 1)):
                        await asyncio.wait({stop, restart}, return_when=asyncio.FIRST_COMPLETED)
                await cancel_and_wait({watcher, stop, restart})
        finally:
            await cancel_and_wait({task for _, _, task in self._tasks.values()})
            self._tasks.clear()
        log.info("daemon.stopped", text="fetchd fleet daemon stopped")
        return int(ExitCode.MAIL)

    async def _refresh(self) -> None:
        """Read the table and make the running tasks match it (and the rc file's entries)."""
        wanted: dict[tuple[str, int], tuple[Server, int]] = {
            ("rc", index): (entry.server, 0) for index, entry in enumerate(self.entries)
        }
        try:
            rows = await self._database.active_rows()
        except FleetDatabaseError as exc:
            if self._database_error != str(exc):
                log.error("fleet.database", text=f"{exc}; polling the accounts already read")
            self._database_error = str(exc)
            wanted |= {("row", rid): (acc.server, rid) for rid, acc in self._rows.items()}
        else:
            if self._database_error is not None:
                log.info("fleet.database_back", text=f"{self._database.shown}: reachable again")
            self._database_error = None
            if self._claims is not None:
                await self._read_last_polls()
            accounts, errors = self._to_accounts()(rows)
            self._rows = {account.row_id: account for account in accounts}
            await self._report_row_errors(errors)
            wanted |= {("row", rid): (acc.server, rid) for rid, acc in self._rows.items()}
        await self._apply(wanted)
        if self.metrics is not None:
            self.metrics.accounts(len(wanted))

    async def _read_last_polls(self) -> None:
        try:
            self._last_polls = await self._database.last_polls()
        except FleetDatabaseError:
            self._last_polls = {}  # every row asks for its claim, which checks the same
        self._last_polls_read = time.monotonic()

    def _polled_lately(self, row_id: int, fresh: float, fingerprint: str) -> bool:
        """Did some worker poll the row within ``fresh`` seconds, as it is now, by the last
        read of fetchd.polls? Only a shortcut: the claim checks again, in the database."""
        last = self._last_polls.get(row_id)
        if last is None or last.busy or last.fingerprint != fingerprint:
            return False
        return last.age + (time.monotonic() - self._last_polls_read) < fresh

    async def _report_row_errors(self, errors: list[FleetRowError]) -> None:
        current = {error.row_id: str(error) for error in errors}
        for row_id, text in current.items():
            if self._row_errors.get(row_id) == text:
                continue  # told once, until it changes
            log.error("fleet.row_refused", row=row_id, text=text)
            with contextlib.suppress(FleetDatabaseError):
                await self._database.write_result(row_id, f"fetchd: {text}")
        self._row_errors = current

    async def _apply(self, wanted: dict[tuple[str, int], tuple[Server, int]]) -> None:
        gone = [
            key
            for key, (server, _, _) in self._tasks.items()
            if key not in wanted or wanted[key][0] != server
        ]
        if gone:
            await cancel_and_wait({self._tasks[key][2] for key in gone})
            for key in gone:
                server, _, _ = self._tasks.pop(key)
                for user in server.users:
                    self.status.pop(f"{user.remote}@{server.pollname}", None)
        for key, (server, row_id) in wanted.items():
            if key in self._tasks:
                continue
            entry: _Entry = _RowEntry(server, row_id=row_id) if key[0] == "row" else _Entry(server)
            task = asyncio.create_task(self._run_entry(entry))
            self._tasks[key] = (server, entry, task)

    def wake(self, account: str | None = None) -> bool:
        matched = False
        for _, entry, _ in self._tasks.values():
            server = entry.server
            names = {server.pollname, server.host}
            names |= {f"{u.remote}@{server.pollname}" for u in server.users}
            if isinstance(entry, _RowEntry):
                names.add(f"row{entry.row_id}")
            if account is None or account in names:
                entry.failures = 0
                entry.wake.set()
                matched = True
        return matched or account is None

    async def _poll_entry(self, entry: _Entry, *, slot_held: bool = False) -> None:
        if not isinstance(entry, _RowEntry):  # an rc file entry
            await super()._poll_entry(entry, slot_held=slot_held)
            return
        account = self._rows.get(entry.row_id)
        with structlog.contextvars.bound_contextvars(row=entry.row_id):
            if account is None:
                return
            if self._claims is None:
                await self._poll_row(entry, account)
                return
            # A slot of this worker's first, then the claim: a worker claims only rows it can
            # poll now, so a busy worker leaves the due rows to one that has room.
            async with self._connections:
                await self._claim_and_poll(entry, account, self._claims)

    async def _claim_and_poll(
        self, entry: _RowEntry, account: FleetAccount, claims: RowClaims
    ) -> None:
        # poll_time minutes, less half a cycle: the worker whose turn comes first polls.
        cycle = self.config.globals.poll_interval
        fresh = max(account.poll_time * 60 - cycle / 2, 0)
        if self._polled_lately(entry.row_id, fresh, account.fingerprint):
            return  # by the last read of fetchd.polls: no round trip for it
        try:
            claimed = await claims.claim(entry.row_id, fresh, account.fingerprint)
        except FleetDatabaseError as exc:
            log.warning("fleet.not_claimed", text=f"{exc}; not polled this cycle")
            return
        if claimed is None:
            log.debug("fleet.elsewhere", text=f"row {entry.row_id}: polled by another worker")
            return
        # As fetchd.polls now says (age 0 now): the next cycles skip it until it is due.
        since = self._last_polls_read - time.monotonic()
        self._last_polls[entry.row_id] = LastPoll(since, account.fingerprint, False)
        try:
            slot = await self._server_slot(entry.server.host)
            try:
                await self._poll_claimed(entry, account, claimed)
            finally:
                if slot is not None:
                    with contextlib.suppress(FleetDatabaseError):
                        await claims.release_slot(slot)
        finally:
            outcome = self._status(entry.server, entry.server.users[0]).outcome
            with contextlib.suppress(FleetDatabaseError):  # a lost session freed it already
                await claims.release(claimed, outcome=outcome)

    async def _poll_claimed(self, entry: _RowEntry, account: FleetAccount, claim: Claim) -> None:
        """The row's poll, abandoned (uncommitted: nothing deleted) if its claim is lost."""
        from fetchd.fleet.pgstate import CURRENT_CLAIM

        token = CURRENT_CLAIM.set(claim)  # the store checks it before any delete
        try:
            poll = asyncio.create_task(self._poll_row(entry, account))
        finally:
            CURRENT_CLAIM.reset(token)
        lost = asyncio.create_task(claim.lost.wait())
        try:
            await asyncio.wait({poll, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not poll.done():
                await cancel_and_wait({poll})
            await cancel_and_wait({lost})
        if claim.lost.is_set() and (poll.cancelled() or poll.exception() is not None):
            text = f"row {entry.row_id}: claim lost (database session ended); poll abandoned"
            log.warning("fleet.claim_lost", text=text)
            for user in entry.server.users:
                self._status(entry.server, user).error = text
            return
        poll.result()

    async def _server_slot(self, host: str) -> int | None:
        """Wait for one of the server's fleet-wide connection slots (None: no cap). A slot's
        end is not announced, so the wait looks again every SLOT_RETRY seconds or so."""
        if not self._server_connections or self._claims is None:
            return None
        while True:
            slot = await self._claims.server_slot(host, self._server_connections)
            if slot is not None:
                return slot
            await asyncio.sleep(SLOT_RETRY_SECONDS * random.uniform(0.5, 1.5))

    async def _poll_row(self, entry: _RowEntry, account: FleetAccount) -> None:
        status = self._status(entry.server, entry.server.users[0])
        before = status.messages
        await super()._poll_entry(entry, slot_held=self._claims is not None)
        if status.outcome is None:
            return
        text = returned_text(account, status.outcome, status, status.messages - before)
        try:
            await self._database.write_result(entry.row_id, text)
        except FleetDatabaseError as exc:
            log.warning("fleet.result_not_written", text=str(exc))
