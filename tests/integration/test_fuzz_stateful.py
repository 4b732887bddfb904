"""The stateful fuzzing of the clients (contrib/fuzz/stateful.py) on a small fixed budget, and
its checks shown to catch what they are for."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.support.contrib import load_script

CASES = 24  # the real fetchd command twice per case: about 10 s with two at a time


@pytest.fixture(scope="module")
def stateful() -> ModuleType:
    return load_script("fuzz/stateful.py", "fetchd_fuzz_stateful")


def test_a_fixed_budget_of_mutated_dialogues_finds_nothing(
    stateful: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """POP3 and IMAP dialogues with drops, stalls, injected lines, wrong numbers and tags,
    duplicated and reordered responses: nothing lost, altered or delivered twice."""
    code = stateful.main(
        ["--cases", str(CASES), "--jobs", "2", "--seed", "1", "--out", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    summary = (tmp_path / "summary.json").read_text()
    assert f'"cases": {CASES}' in summary
    assert '"cases_with_findings": 0' in summary
    assert not list(tmp_path.glob("finding-*.json"))


def test_the_cases_mix_both_protocols_and_every_mutation(stateful: ModuleType) -> None:
    cases = [stateful.make_case(seed) for seed in range(1, 1 + CASES)]
    assert {case.proto for case in cases} == {"pop3", "imap"}
    kinds = {m.kind for case in cases for m in case.mutations}
    assert {"drop", "stall", "inject", "number", "tag", "duplicate", "reorder"} <= kinds


def test_the_checks_catch_a_lost_an_altered_and_a_doubled_message(stateful: ModuleType) -> None:
    case = stateful.make_case(3)
    first = case.messages[0]
    altered = first[:-3] + b"X\r\n"
    # Deleted on the server, never accepted: lost.
    assert stateful.check_deleted(case, case.messages[1:], [], "mutated")
    # Deleted, and only an altered copy accepted: lost too.
    assert stateful.check_deleted(case, case.messages[1:], [altered], "mutated")
    # Deleted after the sink took it whole: fine.
    assert not stateful.check_deleted(case, case.messages[1:], [first], "mutated")
    # The sink accepted a message that is no original, or one twice.
    assert stateful.check_accepted(case, [altered, *case.messages[1:]])
    assert stateful.check_accepted(case, [first, *case.messages])
    assert not stateful.check_accepted(case, list(case.messages))


def test_the_checks_catch_a_traceback_a_hang_and_a_strange_exit(stateful: ModuleType) -> None:
    run = stateful.Run
    assert stateful.check_run("mutated", run(1, "Traceback (most recent call last):", 0.1))
    assert stateful.check_run("mutated", run(None, "", 45.0))
    assert stateful.check_run("mutated", run(77, "", 0.1))
    assert not stateful.check_run("mutated", run(2, "fetchd: a clear error", 0.1))


@pytest.mark.parametrize(
    "seed",
    [
        200381,  # a FETCH whose UID was renumbered to the next message's: that one was deleted
        1702,  # a SEARCH number that became 0: an internal error
    ],
)
async def test_what_the_campaigns_found_stays_fixed(stateful: ModuleType, seed: int) -> None:
    outcome = await stateful.run_case(stateful.make_case(seed))
    assert outcome.findings == []
    assert outcome.applied, "the mutation must have been applied for the case to mean anything"
