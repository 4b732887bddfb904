"""The real fetchmail as the tests' oracle: where it is, and which user runs it.

fetchmail refuses some things as root, so as root it runs as an ordinary user
(FETCHD_TEST_USER, default ``fmtest``, which .ci/run creates). Missing pieces skip the test on a
developer's machine and fail it in CI, where they must be there.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
from pathlib import Path

import pytest


def fetchmail_binary() -> str:
    path = shutil.which("fetchmail")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("the real fetchmail is missing (CI installs the Debian package)")
        pytest.skip("the real fetchmail is not installed (apt-get install fetchmail)")
    return path


def oracle_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    name = os.environ.get("FETCHD_TEST_USER", "fmtest")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        if os.environ.get("CI"):
            pytest.fail(f"user {name} is missing (.ci/run creates it)")
        pytest.skip(f"running as root and there is no user {name} to run fetchmail as")


async def run_fetchmail(home: Path, rc: Path, timeout: float = 60) -> tuple[int, str]:
    """The real fetchmail polling with ``rc`` once (``--nosyslog -N``, its id file in ``home``),
    HOME set to ``home``; its exit status and its output. As root it runs as the oracle user,
    who is given ``home`` and everything in it: fetchmail wants its rc file its user's own."""
    command = [fetchmail_binary(), "-f", str(rc), "--nosyslog", "-N", "-i", str(home / "fetchids")]
    if os.geteuid() == 0:
        user = oracle_user()
        for path in (home, *home.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)
        # runuser sets HOME to the user's own: set ours again inside.
        command = ["runuser", "-u", user.pw_name, "--", "env", f"HOME={home}", *command]
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    process = await asyncio.create_subprocess_exec(
        *command,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode("utf-8", "replace")
