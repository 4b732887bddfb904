"""Programs a test needs from the system: skipped without them on a developer's machine, a
failure under CI (``CI`` set, as ``.ci/run`` does), where a skip would hide a missing package."""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def require_tool(name: str, package: str) -> str:
    """The path of the program ``name`` (from the Debian package ``package``)."""
    path = shutil.which(name)
    if path is None:
        if in_ci():
            pytest.fail(f"{name} is missing under CI (.ci/run installs Debian package {package})")
        pytest.skip(f"{name} is not installed (apt-get install {package})")
    return path
