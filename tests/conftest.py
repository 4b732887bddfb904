"""Shared fixtures: a private Dovecot and a private Postfix for the whole session, reset before
each test using them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.dovecot import DOVECOT, Dovecot
from tests.support.kdc import KDC, KRB_PASSWORD, OTHER, PROGRAMS, USER, unavailable
from tests.support.postfix import POSTFIX, Postfix
from tests.support.tools import require_tool


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[Dovecot]:
    if not os.path.exists(DOVECOT):
        if os.environ.get("CI"):
            pytest.fail("Dovecot is missing (.ci/run installs dovecot-imapd and dovecot-pop3d)")
        pytest.skip("Dovecot is not installed (apt-get install dovecot-imapd dovecot-pop3d)")
    server = Dovecot()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def dovecot(dovecot_server: Dovecot) -> Dovecot:
    dovecot_server.reset()
    return dovecot_server


@pytest.fixture(scope="session")
def kdc() -> Iterator[KDC]:
    """A private MIT KDC (tests.support.kdc) with USER and OTHER (password-derived keys) and
    the services imap/localhost and pop/localhost in its keytab; started once per session."""
    for program, package in PROGRAMS.items():
        if not os.path.exists(program):
            unavailable(f"{program} is missing (apt-get install {package})")
    server = KDC()
    try:
        server.start()
        for name in (USER, OTHER):
            server.add_user(name, KRB_PASSWORD)
        server.add_service("imap/localhost")
        server.add_service("pop/localhost")
    except (RuntimeError, OSError) as exc:
        server.stop()
        unavailable(f"the test KDC cannot start: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postfix_server() -> Iterator[Postfix]:
    if not os.path.exists(POSTFIX):
        if os.environ.get("CI"):
            pytest.fail("Postfix is missing (.ci/run installs it)")
        pytest.skip("Postfix is not installed (apt-get install postfix)")
    if os.geteuid() != 0:
        pytest.skip("a private Postfix needs root (its master process starts as root)")
    server = Postfix()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def postfix(postfix_server: Postfix) -> Postfix:
    postfix_server.reset()
    return postfix_server


@pytest.fixture
def small_disk(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A 64 KiB tmpfs: what a full disk looks like to a writer. Another size by indirect
    parametrization (``@pytest.mark.parametrize("small_disk", ["192k"], indirect=True)``)."""
    size = getattr(request, "param", "64k")
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    require_tool("mount", "mount")
    mountpoint = Path(tempfile.mkdtemp(prefix="fetchd-full-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mountpoint)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        mountpoint.rmdir()
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs: {mounted.stderr!r}")
        pytest.skip("this machine cannot mount a tmpfs")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)
        mountpoint.rmdir()


@pytest.fixture
def started_shells(monkeypatch: pytest.MonkeyPatch) -> list[asyncio.subprocess.Process]:
    """Every process fetchd starts through ``asyncio.create_subprocess_shell`` (MDAs, hooks),
    so a test can check what became of it."""
    started: list[asyncio.subprocess.Process] = []
    real = asyncio.create_subprocess_shell

    async def recording(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        process = await real(*args, **kwargs)
        started.append(process)
        return process

    monkeypatch.setattr(asyncio, "create_subprocess_shell", recording)
    return started
