"""The tests' own rule for missing programs: a skip on a developer's machine, a failure in CI."""

from __future__ import annotations

import pytest

from tests.support.tools import require_tool


def test_a_missing_tool_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.skip.Exception, match="apt-get install systemd"):
        require_tool("systemd-analyze", "systemd")


def test_a_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.fail.Exception, match=r"\.ci/run installs Debian package systemd"):
        require_tool("systemd-analyze", "systemd")


def test_a_present_tool_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert require_tool("sh", "dash").endswith("/sh")
