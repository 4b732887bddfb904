"""The shipped user unit: systemd's own checker accepts it, without a single warning."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).parents[2] / "systemd" / "fetchd.service"


def _settings() -> dict[str, str]:
    settings = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings[key] = value
    return settings


def test_the_unit_is_a_notify_service_reloaded_by_sighup() -> None:
    settings = _settings()
    assert settings["Type"] == "notify"
    assert settings["ExecStart"].endswith("fetchd --nodetach --daemon 300")
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert settings["Restart"] == "on-failure"
    assert int(settings["WatchdogSec"]) > 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: give it a home where fetchd is installed.
    program = tmp_path / ".local" / "bin" / "fetchd"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    result = subprocess.run(
        ["systemd-analyze", "--user", "verify", "--man=no", str(UNIT)],
        env={"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(runtime), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 even for a misspelt value it ignores: any output at all is a finding.
    assert result.returncode == 0 and not result.stdout and not result.stderr, result
