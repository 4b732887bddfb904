"""The soak run (contrib/soak/soak.py) in its two-minute form, as CI runs it: the real daemon with
100 accounts on one Dovecot restarted every 30 s, an MTA that answers 451 for 10 s, reloads, rc
edits, --poll and --status beside it; it must pass its own criteria."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.dovecot import DOVECOT
from tests.support.tools import in_ci

SOAK = Path(__file__).resolve().parents[2] / "contrib" / "soak" / "soak.py"

# The one-hour run's intervals scaled down to about 100 s of faults and 40 s of drain at most.
# The slopes are measured over the last minute only, when RSS is still settling (a clean run on
# a quiet machine: +110 MiB/h, 1.8 MiB in that minute), so the thresholds catch gross leaks only
# (10 MiB or 30 descriptors a minute); the hour-long run is what measures slow ones.
CI_ARGUMENTS = [
    "--duration", "95", "--accounts", "100", "--poll-interval", "15",
    "--inject-every", "0.25", "--dovecot-restart-every", "30", "--dovecot-down", "2",
    "--mta-fault-every", "40", "--mta-fault-length", "10", "--reload-every", "17",
    "--rc-edit-every", "23", "--hammer-pause", "0.5", "--sample-every", "5",
    "--warmup", "35", "--drain", "40", "--grace", "15",
    "--rss-slope-max", "600", "--fd-slope-max", "1800",
]  # fmt: skip


def run_soak(out: Path, *extra: str) -> tuple[int, str, dict[str, object]]:
    if not Path(DOVECOT).exists():
        if in_ci():
            pytest.fail("Dovecot is missing (.ci/run installs dovecot-imapd and dovecot-pop3d)")
        pytest.skip("Dovecot is not installed (apt-get install dovecot-imapd dovecot-pop3d)")
    done = subprocess.run(
        [sys.executable, str(SOAK), *CI_ARGUMENTS, "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=170,
    )
    report = json.loads((out / "report.json").read_text())
    return done.returncode, done.stdout + done.stderr, report


@pytest.mark.dovecot
@pytest.mark.slow
def test_two_minute_soak_passes_its_criteria(tmp_path: Path) -> None:
    """Every injected message arrives once, no error line is left unexplained, resources flat."""
    code, output, report = run_soak(tmp_path)
    assert code == 0 and output.rstrip().endswith("PASS"), output
    assert report["passed"] is True
    counts = report["counts"]
    assert isinstance(counts, dict)
    # The faults really happened, and the messages really flowed through them.
    assert counts["dovecot restarts"] >= 3 and counts["MTA fault windows"] >= 2, counts
    assert counts["SIGHUP reloads"] >= 4 and counts["rc edits: account removed"] >= 2, counts
    assert counts["status"] >= 20 and counts.get("--poll exit 0", 0) >= 20, counts
    assert isinstance(report["injected"], int) and report["injected"] >= 300
    assert report["delivered"] == report["injected"] and report["refused_4xx"], report
