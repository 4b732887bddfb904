"""The Prometheus endpoint (fetchd.daemon.metrics): where it may bind, and what the
supervisor's polls make it say, scraped over HTTP on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fetchd.config import Config, parse
from fetchd.config.model import Server
from fetchd.daemon.metrics import MetricsAddress, PollMetrics, parse_metrics_address
from fetchd.daemon.supervisor import AccountStatus, Supervisor
from fetchd.errors import ConfigError, ExitCode
from fetchd.options import parse_args


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("9464", "127.0.0.1", 9464),
        ("localhost:9464", "127.0.0.1", 9464),
        ("127.0.0.2:0", "127.0.0.2", 0),
        ("[::1]:9464", "::1", 9464),
        ("0.0.0.0:9464", "0.0.0.0", 9464),  # allowed: given explicitly (and warned about)
    ],
)
def test_metrics_address_forms(text: str, host: str, port: int) -> None:
    """A port alone binds 127.0.0.1; a host is taken exactly as written."""
    assert parse_metrics_address(text) == MetricsAddress(host, port)


@pytest.mark.parametrize("text", ["metrics.example:9464", "::1:9464", "127.0.0.1:x", ":99999"])
def test_metrics_addresses_refused(text: str) -> None:
    """No name is resolved, an IPv6 address needs brackets, the port is a port."""
    with pytest.raises(ConfigError):
        parse_metrics_address(text)


def test_loopback_or_not() -> None:
    assert MetricsAddress("127.0.0.1", 1).loopback and MetricsAddress("::1", 1).loopback
    assert not MetricsAddress("0.0.0.0", 1).loopback


def test_the_command_line_checks_the_address() -> None:
    """A bad --metrics is a syntax error (exit 5) before anything starts."""
    assert parse_args(["--metrics", "9464"]).metrics == "9464"
    with pytest.raises(ConfigError, match="--metrics"):
        parse_args(["--metrics", "example.org:9464"])


@pytest.fixture
def metrics() -> Iterator[PollMetrics]:
    served = PollMetrics("host.test:42")
    served.serve(MetricsAddress("127.0.0.1", 0))
    yield served
    served.close()


def scrape(metrics: PollMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert metrics.bound is not None
    with urllib.request.urlopen(f"http://{metrics.bound}/metrics", timeout=5) as answer:
        assert answer.status == 200
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _config() -> Config:
    config = parse(
        "poll good user u password p is l here\npoll bad user v password p is l here\n",
        "test.rc",
    )
    globals_ = dataclasses.replace(config.globals, poll_interval=0.05)  # type: ignore[arg-type]
    return dataclasses.replace(config, globals=globals_)


async def test_polls_move_the_counters(metrics: PollMetrics) -> None:
    """After the supervisor's polls, a scrape shows them by outcome, the messages and octets
    delivered, the failures by stage, and the durations; every series under this worker."""
    config = _config()
    polled: dict[str, int] = {"good": 0, "bad": 0}
    started = 0
    enough = asyncio.Event()

    async def poll_one(config: Config, server: Server, user: Any, status: AccountStatus) -> int:
        nonlocal started
        started += 1
        await asyncio.sleep(0.01)
        # Counted once it can no longer be cancelled by stop(): a poll cut off in its sleep
        # counts as "abandoned", in the durations only.
        polled[server.pollname] += 1
        if polled["good"] >= 3 and polled["bad"] >= 3:
            enough.set()
        if server.pollname == "bad":
            status.error, status.stage, status.outcome = "polling: refused", "polling", 3
            return int(ExitCode.AUTH)
        status.messages += 2
        status.octets += 1000
        return int(ExitCode.MAIL)

    worker = {"worker": "host.test:42"}
    before = scrape(metrics)
    assert before[("fetchd_messages_total", tuple(worker.items()))] == 0
    supervisor = Supervisor(config, list(config.servers), poll_one, lambda: (config, []),
                            metrics=metrics)  # fmt: skip
    running = asyncio.create_task(supervisor.run())
    await asyncio.wait_for(enough.wait(), 10)
    supervisor.stop()
    await asyncio.wait_for(running, 5)
    after = scrape(metrics)

    def value(name: str, **labels: str) -> float:
        return after[(name, tuple(sorted((worker | labels).items())))]

    good, bad = polled["good"], polled["bad"]
    assert value("fetchd_polls_total", outcome="mail") == good
    assert value("fetchd_polls_total", outcome="auth") == bad
    assert value("fetchd_messages_total") == 2 * good
    assert value("fetchd_bytes_total") == 1000 * good
    assert value("fetchd_errors_total", stage="polling") == bad
    assert value("fetchd_poll_duration_seconds_count") == started
    assert good + bad <= started <= good + bad + 2  # stop() cuts off at most one per entry
    assert value("fetchd_poll_duration_seconds_sum") >= 0.01 * (good + bad)
    assert value("fetchd_polls_in_progress") == 0
    assert supervisor.describe()["metrics"] == str(metrics.bound)


async def test_an_abandoned_poll_is_counted(metrics: PollMetrics) -> None:
    """A poll cancelled by the stop counts as abandoned, and leaves nothing in progress."""
    config = _config()
    started = asyncio.Event()

    async def poll_one(config: Config, server: Server, user: Any, status: AccountStatus) -> int:
        started.set()
        await asyncio.sleep(3600)
        return 0

    supervisor = Supervisor(config, list(config.servers)[:1], poll_one, lambda: (config, []),
                            metrics=metrics)  # fmt: skip
    running = asyncio.create_task(supervisor.run())
    await asyncio.wait_for(started.wait(), 5)
    assert scrape(metrics)[("fetchd_polls_in_progress", (("worker", "host.test:42"),))] == 1
    supervisor.stop()
    await asyncio.wait_for(running, 5)
    after = scrape(metrics)
    labels = (("outcome", "abandoned"), ("worker", "host.test:42"))
    assert after[("fetchd_polls_total", labels)] == 1
    assert after[("fetchd_errors_total", (("stage", "abandoned"), ("worker", "host.test:42")))] == 1
    assert after[("fetchd_polls_in_progress", (("worker", "host.test:42"),))] == 0


def test_takeovers_and_accounts(metrics: PollMetrics) -> None:
    metrics.takeover()
    metrics.accounts(7)
    after = scrape(metrics)
    assert after[("fetchd_lease_takeovers_total", (("worker", "host.test:42"),))] == 1
    assert after[("fetchd_accounts", (("worker", "host.test:42"),))] == 7
    assert ("process_resident_memory_bytes", ()) in after  # the worker's RSS, for the fleet


def test_a_port_in_use_is_one_clear_error(metrics: PollMetrics) -> None:
    assert metrics.bound is not None
    other = PollMetrics("x:1")
    with pytest.raises(ConfigError, match="cannot listen"):
        other.serve(metrics.bound)
