"""Operations of a fleet: two workers with ``--metrics 127.0.0.1:0`` on one database and a real
Dovecot; their endpoints scraped over HTTP while and after they poll, and ``--status`` showing
the whole fleet (a row running under the worker that polls it, a failing row)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fleet.test_fleet_daemon import environment, fetchd, fleet_rc, mail_for, until
from tests.support.dovecot import Dovecot
from tests.support.mta import SlowSink, running_mta
from tests.support.postfixadmin import insert_row

pytestmark = [pytest.mark.dovecot, pytest.mark.slow]

USERS = 4
MESSAGES = 12


def scrape(address: str) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as answer:
        text: str = answer.read().decode()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[list[Path]]:
    made = []
    for name in ("one", "two"):
        home = tmp_path / name
        home.mkdir()
        made.append(home)
    yield made


async def status(home: Path) -> dict[str, Any]:
    code, out = await fetchd(home, "--status", "--json")
    assert code == 0, out
    document: dict[str, Any] = json.loads(out)
    return document


async def test_metrics_move_and_status_shows_the_fleet(
    dovecot: Dovecot, postfix_db: str, homes: list[Path]
) -> None:
    """While two workers poll: a row one of them polls is listed by the other's --status as
    running under that worker's name (and that worker's own accounts say it polls it); after
    the polls, each endpoint counts the polls by outcome, the messages and octets, the failed
    row's error by stage and the durations, under its own worker label, with no password,
    user or DSN in any scrape; the logs carry the row ids."""
    users = {f"mx{n}": f"mx{n}-Secret-{n}" for n in range(USERS)}
    octets_on_server = 0
    for user, password in users.items():
        dovecot.add_user(user, password)
        for n in range(MESSAGES):
            octets_on_server += len(mail_for(dovecot, user, n))
    with psycopg.connect(postfix_db, autocommit=True) as conn:
        rows = {
            user: insert_row(conn, mailbox=f"{user}@local.test", src_server=dovecot.host,
                             src_user=user, src_password=password, active=False)
            for user, password in users.items()
        }  # fmt: skip
        bad = insert_row(conn, mailbox="mxbad@local.test", src_server=dovecot.host,
                         src_user="mxbad", src_password="Wrong-Secret", active=False)  # fmt: skip
    async with running_mta(SlowSink(delay=0.15)) as sink:  # a poll takes about 2 s
        workers = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fetchd", "--fleet", postfix_db, "-N",
                "-f", str(fleet_rc(home, dovecot, sink)), "--metrics", "127.0.0.1:0",
                env=environment(home) | {"INVOCATION_ID": "t"},  # as systemd: key=value logs
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            for home in homes
        ]  # fmt: skip
        names = [f"{socket.gethostname()}:{w.pid}" for w in workers]
        try:
            for home in homes:
                await until((home / "run" / "fetchd" / "control.sock").exists, "a worker")
            addresses = [(await status(home))["daemon"]["metrics"] for home in homes]
            assert all(a.startswith("127.0.0.1:") for a in addresses), addresses
            _, idle = scrape(addresses[0])
            assert total(idle, "fetchd_polls_total") == 0
            assert total(idle, "fetchd_messages_total", worker=names[0]) == 0
            with psycopg.connect(postfix_db, autocommit=True) as conn:
                conn.execute("UPDATE fetchmail SET active = true")

            # A row running, seen from the other worker's --status.
            seen: list[tuple[int, dict[str, Any], dict[str, Any]]] = []

            async def running_elsewhere() -> bool:
                for mine, home in enumerate(homes):
                    view = (await status(home))["daemon"]["fleet"]["view"]
                    for item in view["listed"]:
                        if item["running"] and item["worker"] == names[1 - mine]:
                            seen.append((mine, view, item))
                            return True
                return False

            for _ in range(100):
                if await running_elsewhere():
                    break
                await asyncio.sleep(0.1)
            assert seen, "no row ran under the other worker"
            mine, view, item = seen[0]
            other = homes[1 - mine]
            assert view["accounts"] == USERS + 1 and view["running"] >= 1
            account = item["account"]  # src_user@src_server, the other worker's poll
            own = {a["account"]: a["state"] for a in (await status(other))["accounts"]}
            assert own.get(account) == "polling", (account, own)
            code, table = await fetchd(homes[mine], "--status")
            assert code == 0, table
            assert "fleet-wide: 5 accounts" in table
            under = table.split(f"  worker {names[1 - mine]}: running", 1)
            assert len(under) == 2, table
            assert f"row {item['row']} {account}" in under[1], table

            await until(lambda: len(sink.received) == USERS * MESSAGES, "every message", 60)
            view = (await status(homes[0]))["daemon"]["fleet"]["view"]
            failing = [i for i in view["listed"] if not i["running"]]
            while not failing:  # the bad row's poll may still be under way
                await asyncio.sleep(0.2)
                view = (await status(homes[0]))["daemon"]["fleet"]["view"]
                failing = [i for i in view["listed"] if not i["running"]]
            assert [(i["row"], i["outcome"]) for i in failing] == [(bad, 3)]
            assert view["failing"] == 1
            code, table = await fetchd(homes[0], "--status")
            assert f"  failing: row {bad} mxbad@{dovecot.host}: auth failed (3)" in table, table

            scrapes = [scrape(address) for address in addresses]
        finally:
            for worker in workers:
                if worker.returncode is None:
                    worker.send_signal(signal.SIGTERM)
            outputs = [(await asyncio.wait_for(w.communicate(), 30))[0].decode() for w in workers]
    for (text, _), name in zip(scrapes, names, strict=True):
        assert f'worker="{name}"' in text
        for secret in [*users.values(), "Wrong-Secret", postfix_db, "mxbad", "mx0", "local.test"]:
            assert secret not in text
    merged = [samples for _, samples in scrapes]
    assert sum(total(s, "fetchd_messages_total") for s in merged) == USERS * MESSAGES
    assert sum(total(s, "fetchd_polls_total", outcome="mail") for s in merged) == USERS
    assert sum(total(s, "fetchd_polls_total", outcome="auth") for s in merged) >= 1
    assert sum(total(s, "fetchd_errors_total", stage="polling") for s in merged) >= 1
    assert sum(total(s, "fetchd_bytes_total") for s in merged) == octets_on_server
    polls = sum(total(s, "fetchd_polls_total") for s in merged)
    assert sum(total(s, "fetchd_poll_duration_seconds_count") for s in merged) == polls
    slow = sum(total(s, "fetchd_poll_duration_seconds_bucket", le="1.0") for s in merged)
    assert slow <= polls - USERS  # the mail polls took over 1 s each (0.15 s per message)
    assert all(total(s, "fetchd_accounts") == USERS + 1 for s in merged)
    # Each poll's summary line carries its row's id.
    summaries = [line for out in outputs for line in out.splitlines() if "poll.summary" in line]
    for row_id in [*rows.values(), bad]:
        assert [line for line in summaries if f" row={row_id} " in line], summaries
