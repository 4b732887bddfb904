"""The supervisor with fake polls: intervals, back-off, the connection cap, waking, stopping
(also tasks that swallow a cancellation, as Python 3.11's wait_for can), a broken reload."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import structlog.testing

from fetchd import logconfig
from fetchd.config import Config, parse
from fetchd.config.model import Server
from fetchd.daemon.supervisor import MAX_CONNECTIONS, AccountStatus, Supervisor, cancel_and_wait
from fetchd.errors import ExitCode, FetchdTimeoutError, RCSyntaxError


async def test_a_task_that_swallows_one_cancellation_is_still_stopped() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # what wait_for does when the reply and the cancel coincide

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait({task}), 5)
    assert task.cancelled() and swallowed == 1


async def test_finished_tasks_are_left_alone() -> None:
    done = asyncio.create_task(asyncio.sleep(0, result="ok"))
    await done
    await cancel_and_wait({done})
    assert done.result() == "ok"


# --- the supervisor with fake polls, at a 50 ms "daemon interval" -------------------------


def _config(text: str, interval: float = 0.05) -> Config:
    config = parse(text, "test.rc")
    globals_ = dataclasses.replace(config.globals, poll_interval=interval)  # type: ignore[arg-type]
    return dataclasses.replace(config, globals=globals_)


def _entries(config: Config) -> list[Server]:
    return list(config.servers)


async def _run_for(supervisor: Supervisor, seconds: float) -> int:
    running = asyncio.create_task(supervisor.run())
    await asyncio.sleep(seconds)
    supervisor.stop()
    return await asyncio.wait_for(running, 5)


async def test_interval_k_polls_every_kth_cycle_and_a_failing_entry_backs_off() -> None:
    config = _config(
        "set daemon 1\n"
        "poll every user u password p is l here\n"
        "poll third interval 3 user u password p is l here\n"
        "poll broken user u password p is l here\n"
    )
    polls: Counter[str] = Counter()
    thirty_cycles = asyncio.Event()

    async def poll_one(config: Config, server: Server, user: Any, status: AccountStatus) -> int:
        polls[server.pollname] += 1
        if polls["every"] >= 30:
            thirty_cycles.set()
        return int(ExitCode.AUTH if server.pollname == "broken" else ExitCode.NOMAIL)

    supervisor = Supervisor(config, _entries(config), poll_one, lambda: (config, []))
    running = asyncio.create_task(supervisor.run())
    await asyncio.wait_for(thirty_cycles.wait(), 60)  # counted in cycles, however slow they are
    supervisor.stop()
    assert await asyncio.wait_for(running, 5) == 0
    # 30 cycles: every one polls at each, third at one in three, broken backs off to one in
    # 2, 4, then 8.
    assert polls["every"] >= 20
    assert abs(polls["third"] * 3 - polls["every"]) <= 6, polls
    assert polls["broken"] <= polls["every"] // 4, polls


async def test_no_more_than_max_connections_poll_at_once() -> None:
    config = _config(
        "".join(f"poll host{i} user u password p is l here\n" for i in range(20)), interval=10
    )
    active = peak = 0
    done = 0

    async def poll_one(config: Config, server: Server, user: Any, status: AccountStatus) -> int:
        nonlocal active, peak, done
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1
        done += 1
        return int(ExitCode.NOMAIL)

    supervisor = Supervisor(config, _entries(config), poll_one, lambda: (config, []))
    assert await _run_for(supervisor, 0.5) == 0
    assert done == 20 and peak == MAX_CONNECTIONS


async def test_wake_by_name_and_stop_abandons_a_poll_in_flight() -> None:
    config = _config("poll mx.example.org user joe password p is l here\n", interval=3600)
    started: list[str] = []
    finished: list[str] = []

    async def poll_one(config: Config, server: Server, user: Any, status: AccountStatus) -> int:
        started.append(server.pollname)
        if len(started) == 2:
            await asyncio.sleep(3600)  # the second poll hangs: stop must not wait for it
        finished.append(server.pollname)
        return int(ExitCode.NOMAIL)

    supervisor = Supervisor(config, _entries(config), poll_one, lambda: (config, []))
    running = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.1)
    assert started == ["mx.example.org"]
    assert not supervisor.wake("nobody@mx.example.org")
    assert supervisor.wake("joe@mx.example.org")
    await asyncio.sleep(0.1)
    assert len(started) == 2
    supervisor.stop()
    assert await asyncio.wait_for(running, 2) == 0
    assert finished == ["mx.example.org"]


async def test_a_broken_reload_keeps_the_running_configuration() -> None:
    """A reload is attempted, the broken file is rejected with its error logged, and the
    running configuration stays, for this request and the next one."""
    config = _config("poll a user u password p is l here\n", interval=3600)
    attempts = 0

    def reload() -> tuple[Config, list[Server]]:
        nonlocal attempts
        attempts += 1
        raise RCSyntaxError("test.rc", 1, 1, "syntax error")

    supervisor = Supervisor(config, _entries(config), lambda *a: asyncio.sleep(0, 1), reload)
    with structlog.testing.capture_logs() as logs:
        supervisor.request_reload()
        assert await supervisor.handle({"cmd": "reload"}) == {"ok": True}
    assert attempts == 2
    failed = [entry for entry in logs if entry["event"] == "daemon.reload_failed"]
    assert len(failed) == 2 and all("test.rc:1:1" in entry["text"] for entry in failed), logs
    assert not any(entry["event"] == "daemon.reloaded" for entry in logs)
    assert supervisor.config is config and [e.server.pollname for e in supervisor.entries] == ["a"]


async def test_a_second_stop_request_exits_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []
    monkeypatch.setattr("fetchd.daemon.supervisor.os._exit", exits.append)
    config = _config("poll a user u password p is l here\n", interval=3600)
    supervisor = Supervisor(config, _entries(config), lambda *a: asyncio.sleep(0, 1), None)  # type: ignore[arg-type]
    supervisor.stop()
    assert exits == []  # the first one stops gracefully
    supervisor.stop()
    assert exits == [0]


@pytest.mark.parametrize(("healthy_after", "polls"), [(0.05, 2), (60.0, 1)])
async def test_a_lost_idle_is_reopened_at_once_but_a_failing_one_waits(
    monkeypatch: pytest.MonkeyPatch, healthy_after: float, polls: int
) -> None:
    monkeypatch.setattr("fetchd.daemon.supervisor.IDLE_HEALTHY_SECONDS", healthy_after)
    config = _config("poll a proto imap user u password p is l here idle\n", interval=3600)
    polled: list[float] = []
    idles = 0

    async def poll_one(config: Config, server: Server, user: Any, status: AccountStatus) -> int:
        polled.append(asyncio.get_running_loop().time())
        return int(ExitCode.NOMAIL)

    async def idle_wait(config: Config, server: Server, user: Any) -> None:
        nonlocal idles
        idles += 1
        if idles == 1:
            await asyncio.sleep(0.1)
            raise FetchdTimeoutError("127.0.0.1: no reply to DONE")
        await asyncio.sleep(3600)

    supervisor = Supervisor(
        config,
        _entries(config),
        poll_one,
        lambda: (config, []),
        idle_wait=idle_wait,
        can_idle=lambda server: True,
    )
    assert await _run_for(supervisor, 0.5) == 0
    assert len(polled) == polls


# --- signals while the log output is broken (issue 19) -----------------------------------


@pytest.fixture
def broken_log() -> Iterator[None]:
    """The log goes to a pipe whose reader has gone: every write fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    with os.fdopen(write_end, "w") as stream:
        logconfig.configure(stream=stream)
        try:
            yield
        finally:
            logconfig.configure()


@pytest.fixture
async def signal_handlers() -> AsyncIterator[None]:
    yield
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
        loop.remove_signal_handler(signum)


async def test_sigterm_during_a_reload_stops_the_daemon(
    broken_log: None, signal_handlers: None
) -> None:
    """A SIGTERM that arrives while a SIGHUP's reload runs (and each logs into a dead pipe)
    is acted on as soon as the reload is over."""
    config = _config("poll a user u password p is l here\n", interval=3600)
    reloaded: list[str] = []

    def reload() -> tuple[Config, list[Server]]:
        os.kill(os.getpid(), signal.SIGTERM)
        reloaded.append("a")
        return config, _entries(config)

    supervisor = Supervisor(config, _entries(config), lambda *a: asyncio.sleep(0, 1), reload)
    supervisor.install_signal_handlers()
    running = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.1)
    os.kill(os.getpid(), signal.SIGHUP)
    assert await asyncio.wait_for(running, 5) == 0
    assert reloaded == ["a"]


async def test_sigterm_during_a_poll_abandons_it_and_stops(
    broken_log: None, signal_handlers: None
) -> None:
    config = _config("poll a user u password p is l here\n", interval=3600)
    abandoned = asyncio.Event()

    async def poll_one(*args: Any) -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            abandoned.set()
            raise
        return 0

    supervisor = Supervisor(config, _entries(config), poll_one, lambda: (config, []))
    supervisor.install_signal_handlers()
    assert await asyncio.wait_for(supervisor.run(), 5) == 0
    assert abandoned.is_set()


async def test_a_stop_that_overruns_its_deadline_is_forced(broken_log: None) -> None:
    """A poll that will not end when cancelled (stuck, or swallowing every cancellation) does
    not keep the daemon alive past the stop deadline."""
    config = _config("poll a user u password p is l here\n", interval=3600)
    stubborn = True
    polling = asyncio.Event()

    async def poll_one(*args: Any) -> int:
        polling.set()
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if not stubborn:
                    raise

    loop = asyncio.get_running_loop()
    forced = asyncio.Event()
    exits: list[int] = []

    def force_exit(code: int) -> None:  # called from the timer's thread
        exits.append(code)
        loop.call_soon_threadsafe(forced.set)

    supervisor = Supervisor(
        config,
        _entries(config),
        poll_one,
        lambda: (config, []),
        stop_deadline=0.3,
        force_exit=force_exit,
    )
    running = asyncio.create_task(supervisor.run())
    await asyncio.wait_for(polling.wait(), 5)
    supervisor.stop()
    await asyncio.wait_for(forced.wait(), 5)
    assert exits == [0] and not running.done()
    stubborn = False
    assert await asyncio.wait_for(running, 5) == 0
    supervisor.close()


async def test_a_poll_that_raises_does_not_end_its_entry() -> None:
    config = _config("poll a user u password p is l here\n")
    polls = 0

    async def poll_one(config: Config, server: Server, user: Any, status: AccountStatus) -> int:
        nonlocal polls
        polls += 1
        raise BrokenPipeError(32, "Broken pipe")

    supervisor = Supervisor(config, _entries(config), poll_one, lambda: (config, []))
    assert await _run_for(supervisor, 0.5) == 0
    assert polls >= 2
    assert supervisor.status["u@a"].error == "internal error: BrokenPipeError"


async def test_a_broken_reload_is_shown_in_status_until_a_good_one() -> None:
    """A failed reload is kept with its time and reason for ``--status``; a good one clears it."""
    config = _config("poll a user u password p is l here\n", interval=3600)
    outcome: list[Exception | None] = [RCSyntaxError("test.rc", 1, 1, "syntax error")]

    def reload() -> tuple[Config, list[Server]]:
        if outcome[0] is not None:
            raise outcome[0]
        return config, _entries(config)

    supervisor = Supervisor(config, _entries(config), lambda *a: asyncio.sleep(0, 1), reload)
    supervisor.request_reload()
    daemon = (await supervisor.handle({"cmd": "status"}))["daemon"]
    assert "test.rc:1:1" in daemon["reload_error"] and daemon["reload_failed_at"] > 0
    assert daemon["rcfile"] == "test.rc" and daemon["pid"] > 0 and daemon["version"]
    outcome[0] = OSError(13, "Permission denied")
    supervisor.request_reload()
    assert supervisor.reload_error == "Permission denied"
    outcome[0] = None
    supervisor.request_reload()
    daemon = (await supervisor.handle({"cmd": "status"}))["daemon"]
    assert daemon["reload_error"] is None and daemon["reload_failed_at"] is None


async def test_an_account_removed_by_a_reload_leaves_status() -> None:
    config = _config(
        "poll a user u password p is l here\npoll b user v password p is l here\n", interval=3600
    )
    smaller = _config("poll b user v password p is l here\n", interval=3600)
    supervisor = Supervisor(
        config, _entries(config), lambda *a: asyncio.sleep(0, 1), lambda: (smaller, [])
    )
    supervisor.status = {k: AccountStatus(k) for k in ("u@a", "v@b")}
    supervisor._reload = lambda: (smaller, _entries(smaller))
    supervisor.request_reload()
    accounts = (await supervisor.handle({"cmd": "status"}))["accounts"]
    assert [a["account"] for a in accounts] == ["v@b"]


async def test_waking_every_account_succeeds_even_with_no_entries() -> None:
    """A plain ``fetchd`` wakes the daemon whatever its entries are; a named one must exist."""
    config = _config("poll a user u password p is l here\n", interval=3600)
    supervisor = Supervisor(config, [], lambda *a: asyncio.sleep(0, 1), lambda: (config, []))
    assert (await supervisor.handle({"cmd": "poll"}))["ok"] is True
    assert (await supervisor.handle({"cmd": "poll", "account": "a"}))["ok"] is False


async def test_status_counts_the_daemons_asyncio_tasks() -> None:
    """--status's daemon section counts the asyncio tasks alive now, whatever started them."""
    config = _config("".join(f"poll host{i} user u password p is l here\n" for i in range(3)), 60)
    supervisor = Supervisor(config, _entries(config), lambda *a: asyncio.sleep(0, 1), None)  # type: ignore[arg-type]
    running = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.05)
    before = (await supervisor.handle({"cmd": "status"}))["daemon"]["tasks"]
    assert before == len(asyncio.all_tasks()) >= 3 + 2  # the entries, run() and this test
    leaked = [asyncio.create_task(asyncio.sleep(60)) for _ in range(5)]
    after = (await supervisor.handle({"cmd": "status"}))["daemon"]["tasks"]
    assert after == before + 5
    for task in leaked:
        task.cancel()
    supervisor.stop()
    assert await asyncio.wait_for(running, 5) == 0


async def test_an_idle_that_fails_as_its_entry_is_cancelled_leaves_no_unretrieved_error() -> None:
    """The IDLE dropped (a server restart) in the same instant a reload cancels the entry: its
    error is still collected, so the loop never reports an internal error (seen in the soak)."""
    from fetchd.daemon.supervisor import _Entry
    from fetchd.errors import SocketError

    config = _config("poll imap.example.org proto imap user u password p is l here idle\n")
    gate = asyncio.get_running_loop().create_future()

    async def idle_wait(config: Config, server: Server, user: Any) -> None:
        await gate
        raise SocketError("connection to the IMAP server closed")

    supervisor = Supervisor(
        config, _entries(config), lambda *a: asyncio.sleep(0, 1), lambda: (config, []),
        idle_wait=idle_wait, can_idle=lambda server: True,
    )  # fmt: skip
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: reported.append(context))
    try:
        entry = asyncio.create_task(supervisor._idle_or_wake(_Entry(config.servers[0])))
        await asyncio.sleep(0.01)  # in IDLE
        gate.set_result(None)  # the server goes away ...
        entry.cancel()  # ... as the reload cancels the entry
        with pytest.raises(asyncio.CancelledError):
            await entry
        del entry
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert reported == []
