"""The device grant's pacing against the tests' authorization server: slow_down lengthens the
interval, authorization_pending waits, and an unapproved code expires (no real waiting)."""

from __future__ import annotations

import io

import pytest

from fetchd.auth.oauth2.endpoint import Client
from fetchd.auth.oauth2.login import SLOW_DOWN_STEP, LoginRequest, log_in
from fetchd.auth.oauth2.provider import Provider
from fetchd.errors import AuthError
from tests.support.oauth2_server import CLIENT_ID, AuthorizationServer, running


def _request(server: AuthorizationServer) -> LoginRequest:
    provider = Provider(
        server.base_url,
        server.token_endpoint,
        f"{server.base_url}/authorize",
        f"{server.base_url}/device_authorization",
        "mail",
    )
    return LoginRequest("alice@mail.test", "mail.test", "alice", provider, Client(CLIENT_ID), "",
                        timeout=5)  # fmt: skip


def test_slow_down_lengthens_the_interval_until_approved() -> None:
    """authorization_pending keeps the interval; slow_down adds 5 s to it."""
    slept: list[float] = []
    with running(device_interval=1) as server:

        def sleep(seconds: float) -> None:
            slept.append(seconds)  # no real wait: every poll comes too soon for the AS
            if len(slept) == 3:
                server.approve_devices()

        out = io.StringIO()
        record = log_in(_request(server), out=out, sleep=sleep)
    # The first poll hears authorization_pending (interval kept), the second comes too soon
    # and hears slow_down (interval + 5 s), the third is approved.
    assert slept == [1, 1, 1 + SLOW_DOWN_STEP]
    assert server.grants.count("urn:ietf:params:oauth:grant-type:device_code") == 3
    assert record.refresh_token.reveal() in server.issued
    assert "enter the code" in out.getvalue()
    assert not any(secret in out.getvalue() for secret in server.issued)


def test_an_unapproved_code_expires() -> None:
    """Nobody approves: after the code's lifetime (60 s on the AS's clock) the login fails."""
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with running(device_interval=0) as server, pytest.raises(AuthError, match="expired"):
        log_in(_request(server), out=io.StringIO(), sleep=sleep, clock=lambda: now[0])
    assert now[0] >= 60
