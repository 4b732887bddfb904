"""The daemon's runtime directory and every directory made on the way to it are private."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetchd.daemon.runtime import ensure_private_dir, runtime_dir


@pytest.fixture
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what most users have: new directories 0755
    yield
    os.umask(old)


def test_dot_fetchd_is_created_0700(tmp_path: Path, usual_umask: None) -> None:
    """Without XDG_RUNTIME_DIR, both ``~/.fetchd`` and ``~/.fetchd/run`` are made 0700."""
    run = ensure_private_dir(runtime_dir({"HOME": str(tmp_path)}))
    assert run == tmp_path / ".fetchd" / "run"
    assert stat.S_IMODE((tmp_path / ".fetchd").stat().st_mode) == 0o700
    assert stat.S_IMODE(run.stat().st_mode) == 0o700


def test_an_existing_home_is_left_as_it_is(tmp_path: Path, usual_umask: None) -> None:
    """Only directories fetchd makes are changed: the home directory keeps its mode."""
    tmp_path.chmod(0o751)
    ensure_private_dir(runtime_dir({"HOME": str(tmp_path)}))
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o751
