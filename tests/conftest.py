"""Shared fixtures: a private Dovecot for the whole session, reset before each test using it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.dovecot import DOVECOT, Dovecot


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
