"""The fuzzing campaign (contrib/fuzz/campaign.py) on a small, seed-fixed budget, as CI runs it."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.support.contrib import load_script

CASES_PER_TARGET = 400  # about 10 s in all on a busy machine


@pytest.fixture(scope="module")
def campaign() -> ModuleType:
    return load_script("fuzz/campaign.py", "fetchd_fuzz_campaign")


def test_every_target_meets_its_property_on_a_fixed_budget(campaign: ModuleType) -> None:
    """A few thousand mutated inputs: every parser gives a result or a FetchdError, in time."""
    targets = sorted(campaign.TARGETS)
    report = campaign.campaign(cases=CASES_PER_TARGET * len(targets), seed=14, slow=10.0)
    assert report.cases == dict.fromkeys(targets, CASES_PER_TARGET)
    assert report.as_dict()["findings"] == []


def test_every_target_has_seeds_from_the_test_tables(campaign: ModuleType) -> None:
    for target in campaign.TARGETS.values():
        harvested = campaign.harvested(target.seed_files)
        assert bool(harvested) == bool(target.seed_files), target.name


def test_the_campaign_reports_an_untyped_exception_and_a_slow_input(
    campaign: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A planted bug is found: the harness can fail, and keeps the shortest reproducer."""

    def buggy(data: bytes) -> object:
        if b"\0" in data:
            raise KeyError("planted")
        if b"\xff" in data:
            import time

            time.sleep(0.05)
        raise campaign.FetchdError("a typed refusal is fine")

    planted = campaign.Target("planted", buggy, (campaign.FetchdError,), (), (b"hello world",))
    monkeypatch.setattr(campaign, "TARGETS", {"planted": planted})
    report = campaign.campaign(cases=800, seed=1, slow=0.04)
    kinds = {finding.kind: finding for finding in report.findings.values()}
    assert set(kinds) == {"KeyError", "slow"}
    assert b"\0" in kinds["KeyError"].data and kinds["KeyError"].where.startswith("test_fuzz")
    assert b"\xff" in kinds["slow"].data
