"""Shared fixtures: a private Dovecot and a private Postfix for the whole session, reset before
each test using them."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.dovecot import DOVECOT, Dovecot
from tests.support.postfix import POSTFIX, Postfix


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
