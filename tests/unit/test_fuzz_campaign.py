"""The fuzzing campaign (contrib/fuzz/campaign.py) on a small, seed-fixed budget, as CI runs it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

CAMPAIGN = Path(__file__).resolve().parents[2] / "contrib" / "fuzz" / "campaign.py"
CASES_PER_TARGET = 400  # about 10 s in all on a busy machine


@pytest.fixture(scope="module")
def campaign() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetchd_fuzz_campaign", CAMPAIGN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


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
