"""The user unit, shipped and printed by ``fetchd --systemd-unit``: one text, accepted by systemd's
own checker without a single warning, starting the fetchd that printed it, and leaving the poll
interval to the rc file when it has one."""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fetchd.daemon.systemd_unit import SHIPPED_PROGRAM, unit_text
from tests.support.tools import require_tool

UNIT = Path(__file__).parents[2] / "systemd" / "fetchd.service"
CONSOLE_SCRIPT = Path(sys.executable).with_name("fetchd")  # the venv's (pip install -e)

# In a user unit each of these implies NoNewPrivileges=yes (systemd.exec(5)), under which
# Debian's set-uid procmail cannot create the mail spool: none may be on by default.
IMPLY_NO_NEW_PRIVILEGES = {
    "NoNewPrivileges",
    "RestrictSUIDSGID",
    "LockPersonality",
    "RestrictRealtime",
    "RestrictNamespaces",
    "RestrictAddressFamilies",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "MemoryDenyWriteExecute",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectClock",
    "ProtectHostname",
}


def _settings(text: str) -> dict[str, str]:
    settings = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings[key] = value
    return settings


def _printed(*command: str) -> str:
    result = subprocess.run(
        [*command, "--systemd-unit"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and not result.stderr, result
    return result.stdout


def _verify(unit_text: str, home: Path) -> subprocess.CompletedProcess[str]:
    analyze = require_tool("systemd-analyze", "systemd")
    unit = home / "fetchd.service"
    unit.write_text(unit_text)
    runtime = home / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    return subprocess.run(
        [analyze, "--user", "verify", "--man=no", str(unit)],
        env={"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_shipped_unit_is_the_printed_one() -> None:
    """systemd/fetchd.service is the same text as the printed unit, for ~/.local/bin/fetchd."""
    assert UNIT.read_text() == unit_text(SHIPPED_PROGRAM)


def test_the_unit_is_a_notify_service_reloaded_by_sighup() -> None:
    settings = _settings(UNIT.read_text())
    assert settings["Type"] == "notify"
    assert settings["ExecStart"] == "%h/.local/bin/fetchd --nodetach --daemon-default 300"
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert settings["Restart"] == "on-failure"
    assert int(settings["WatchdogSec"]) > 0


def test_no_setting_takes_an_mdas_privileges_by_default() -> None:
    """procmail (set-uid) and Postfix's sendmail (set-gid postdrop) keep working under the unit."""
    assert not IMPLY_NO_NEW_PRIVILEGES & set(_settings(UNIT.read_text()))
    assert "#   NoNewPrivileges=yes" in UNIT.read_text()  # the opt-in is written out


def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: give it a home where fetchd is installed.
    program = tmp_path / ".local" / "bin" / "fetchd"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    result = _verify(UNIT.read_text(), tmp_path)
    # verify exits 0 even for a misspelt value it ignores: any output at all is a finding.
    assert result.returncode == 0 and not result.stdout and not result.stderr, result


def test_the_printed_unit_starts_the_console_script_that_printed_it(tmp_path: Path) -> None:
    """`fetchd --systemd-unit` from a venv: ExecStart is that script's absolute path, and
    systemd-analyze accepts the unit as printed (no editing)."""
    assert CONSOLE_SCRIPT.is_file(), CONSOLE_SCRIPT
    printed = _printed(str(CONSOLE_SCRIPT))
    command = shlex.split(_settings(printed)["ExecStart"])
    assert command == [str(CONSOLE_SCRIPT), "--nodetach", "--daemon-default", "300"]
    assert printed == unit_text(str(CONSOLE_SCRIPT))
    result = _verify(printed, tmp_path)
    assert result.returncode == 0 and not result.stdout and not result.stderr, result


def test_the_printed_unit_under_python_m_runs_that_interpreter() -> None:
    command = shlex.split(_settings(_printed(sys.executable, "-m", "fetchd"))["ExecStart"])
    assert command[:3] == [os.path.abspath(sys.executable), "-m", "fetchd"]
    assert os.path.isabs(command[0])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    return tmp_path


async def _started_interval(home: Path, rc_text: str, *args: str) -> str:
    """Start a daemon as the unit does (rc file found in HOME) and return its start line."""
    rc = home / ".fetchmailrc"
    rc.write_text(rc_text)
    rc.chmod(0o600)
    env = {
        "HOME": str(home),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_RUNTIME_DIR": str(home / "run"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fetchd", "--nodetach", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    seen = []
    try:
        async with asyncio.timeout(60):
            while line := (await process.stdout.readline()).decode():
                seen.append(line)
                if "daemon (pid" in line:
                    return line
        raise AssertionError(f"the daemon never started: {seen}")
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 30)


RC = "poll 127.0.0.1 proto pop3 port 1 user demo password x is joe here sslproto ''\n"


@pytest.mark.parametrize(
    ("rc_head", "args", "interval"),
    [
        ("set daemon 3600\n", ("--daemon-default", "300"), 3600),  # the rc file's interval wins
        ("", ("--daemon-default", "300"), 300),  # the unit's interval only as a default
        ("set daemon 3600\n", ("--daemon-default", "300", "-d", "120"), 120),  # -d, as fetchmail
    ],
)
async def test_the_rc_files_interval_wins_over_the_units_default(
    home: Path, rc_head: str, args: tuple[str, ...], interval: int
) -> None:
    line = await _started_interval(home, rc_head + RC, *args)
    assert f"polling every {interval} s" in line, line
