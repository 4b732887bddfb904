"""The soak run's pass criteria (contrib/soak/criteria.py): slopes, exactly-once delivery, and
error lines explained only by a fault of the right kind at the right time."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.support.contrib import load_script


@pytest.fixture(scope="module")
def criteria() -> ModuleType:
    return load_script("soak/criteria.py", "fetchd_soak_criteria")


def test_slope_is_per_hour_and_least_squares(criteria: ModuleType) -> None:
    flat = [(t * 60.0, 100.0 + (1 if t % 2 else -1)) for t in range(50)]
    assert abs(criteria.slope_per_hour(flat)) < 0.2
    growing = [(t * 60.0, 100.0 + t * 0.1) for t in range(50)]  # 0.1 a minute
    assert criteria.slope_per_hour(growing) == pytest.approx(6.0)
    assert criteria.slope_per_hour([(0.0, 5.0)]) == 0.0
    assert criteria.slope_per_hour([(1.0, 5.0), (1.0, 9.0)]) == 0.0


def test_delivery_counts_missing_duplicated_unexpected_and_left(criteria: ModuleType) -> None:
    good = criteria.check_delivery(["<a>", "<b>"], ["<b>", "<a>"], 0)
    assert good.exactly_once and good.delivered == 2
    bad = criteria.check_delivery(["<a>", "<b>", "<c>"], ["<a>", "<a>", "<x>", "<c>"], 1)
    assert not bad.exactly_once
    assert (bad.missing, bad.duplicated, bad.unexpected) == (("<b>",), {"<a>": 2}, ("<x>",))
    assert bad.delivered == 2 and bad.left_on_server == 1
    assert not criteria.check_delivery(["<a>"], ["<a>"], 3).exactly_once  # never deleted


def test_an_error_line_is_explained_only_by_its_own_fault_in_its_window(
    criteria: ModuleType,
) -> None:
    Fault, Line = criteria.Fault, criteria.LogLine
    faults = [Fault("dovecot", 100.0, 103.0), Fault("mta", 200.0, 260.0)]
    refused = 'account.failed level=error msg="a@b: polling: cannot connect: Connection refused"'
    smtp = 'account.failed level=error msg="a@b: SMTP 451 4.3.0 soak: injected MTA fault"'
    lines = [
        Line(101.0, refused),  # during the restart
        Line(120.0, refused),  # within the grace after it
        Line(150.0, refused),  # too late
        Line(210.0, smtp),  # during the MTA's 4xx minute
        Line(102.0, smtp),  # an SMTP error in Dovecot's window: not explained by it
        Line(230.0, 'daemon.internal_error level=error msg="internal error: SocketError"'),
    ]
    result = criteria.explain_errors(lines, faults, grace=30.0)
    assert result.explained == {"dovecot": 2, "mta": 1}
    assert [line.at for line in result.unexplained] == [150.0, 102.0, 230.0]


def test_the_verdict_fails_on_each_criterion(criteria: ModuleType) -> None:
    once = criteria.check_delivery(["<a>"], ["<a>"], 0)
    clean = criteria.Errors({}, ())
    good = dict(
        rss_slope=0.5, rss_max=4.0, fd_slope=0.0, fd_max=6.0, samples_after_warmup=50,
        delivery=once, errors=clean, daemon_exit=0, status_failures=0, soak_errors=0,
    )  # fmt: skip
    assert criteria.verdict(**good).passed
    for change in (
        {"rss_slope": 4.5},
        {"fd_slope": 7.0},
        {"samples_after_warmup": 2},
        {"delivery": criteria.check_delivery(["<a>"], ["<a>", "<a>"], 0)},
        {"errors": criteria.Errors({}, (criteria.LogLine(1.0, "level=error x"),))},
        {"daemon_exit": None},
        {"daemon_exit": 23},
        {"status_failures": 1},
        {"soak_errors": 1},
    ):
        assert not criteria.verdict(**(good | change)).passed, change
