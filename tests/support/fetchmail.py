"""The real fetchmail as the tests' oracle: where it is, and which user runs it.

fetchmail refuses some things as root, so as root it runs as an ordinary user
(FETCHD_TEST_USER, default ``fmtest``, which .ci/run creates). Missing pieces skip the test on a
developer's machine and fail it in CI, where they must be there.
"""

from __future__ import annotations

import os
import pwd
import shutil

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
