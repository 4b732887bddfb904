"""OAuth2 logins through the whole ``fetchd`` command, against a Dovecot that checks each token
with the tests' authorization server (``passdb { driver = oauth2 }``, RFC 7662 introspection)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from fetchd.auth.oauth2.secret import Secret
from fetchd.auth.oauth2.store import TokenRecord, TokenStore
from tests.support.command import run_fetchd
from tests.support.dovecot import DOVECOT, Dovecot
from tests.support.oauth2_server import (
    CLIENT_ID,
    CLIENT_SECRET,
    AuthorizationServer,
    running,
)

pytestmark = pytest.mark.dovecot
BOB_PASSWORD = "bob-Secret-2"


@pytest.fixture(scope="module")
def authorization_server() -> Iterator[AuthorizationServer]:
    with running(access_lifetime=3.0) as server:
        yield server


@pytest.fixture(scope="module")
def oauth2_dovecot(authorization_server: AuthorizationServer) -> Iterator[Dovecot]:
    if not os.path.exists(DOVECOT):
        if os.environ.get("CI"):
            pytest.fail("Dovecot is missing (.ci/run installs dovecot-imapd and dovecot-pop3d)")
        pytest.skip("Dovecot is not installed")
    server = Dovecot(oauth2_introspection_url=authorization_server.introspection_endpoint)
    server.start()
    server.add_user("bob", BOB_PASSWORD)
    yield server
    server.stop()


@pytest.fixture
def dovecot(oauth2_dovecot: Dovecot) -> Dovecot:
    oauth2_dovecot.reset()
    return oauth2_dovecot


@dataclass
class _Sink:
    received: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(envelope.original_content or b"")
        return "250 queued"


@dataclass
class MTA:
    port: int
    sink: _Sink


@pytest.fixture
async def mta() -> AsyncIterator[MTA]:
    sink = _Sink()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(sink, decode_data=False, hostname="mta.test"), "127.0.0.1", 0
    )
    yield MTA(server.sockets[0].getsockname()[1], sink)
    server.close()
    await server.wait_closed()


def _store(home: Path) -> TokenStore:
    return TokenStore(home / "state" / "fetchd" / "oauth2")


def _log_in(
    home: Path, server: AuthorizationServer, *, access_token: str | None = None
) -> TokenRecord:
    """What ``fetchd --oauth2-login`` leaves behind: a record for alice@127.0.0.1."""
    record = TokenRecord(
        server="127.0.0.1",
        user="alice",
        provider=server.base_url,
        token_endpoint=server.token_endpoint,
        client_id=CLIENT_ID,
        client_secret=Secret(CLIENT_SECRET),
        scope="mail",
        refresh_token=Secret(server.new_refresh_token()),
        access_token=Secret(access_token) if access_token else None,
        expires_at=time.time() + 3600 if access_token else 0.0,
    )
    _store(home).save(record)
    return record


def _rc(home: Path, dovecot: Dovecot, mta: MTA, proto: str, auth: str, implicit: bool) -> Path:
    if proto == "imap":
        port = dovecot.imaps_port if implicit else dovecot.imap_port
    else:
        port = dovecot.pop3s_port if implicit else dovecot.pop3_port
    rc = home / ".fetchmailrc"
    rc.write_text(
        f"poll 127.0.0.1 proto {proto} port {port} auth {auth}\n"
        f"  user alice is joe here smtphost 127.0.0.1/{mta.port}"
        f" sslcertfile {dovecot.ca_file} {'ssl' if implicit else ''}\n"
    )
    rc.chmod(0o600)
    return rc


def _assert_no_secret(text: str, server: AuthorizationServer) -> None:
    leaked = [secret for secret in server.issued if secret in text]
    assert not leaked, f"{len(leaked)} issued secrets appear in the output"


class _Daemon:
    """``fetchd -N -f RC ARGS`` in the background, its output collected as it comes (so a test
    can look at it between steps); stopped with SIGTERM on leaving."""

    def __init__(self, home: Path, rc: Path, *args: str) -> None:
        self.home, self.rc, self.args = home, rc, args
        self.lines: list[str] = []
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Daemon:
        (self.home / "run").mkdir(mode=0o700, exist_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fetchd", "-N", *self.args, "-f", str(self.rc),
            env={
                "HOME": str(self.home),
                "XDG_STATE_HOME": str(self.home / "state"),
                "XDG_RUNTIME_DIR": str(self.home / "run"),
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "FETCHD_SYSLOG_SOCKET": str(self.home / "syslog.sock"),
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        while line := await self._process.stdout.readline():
            self.lines.append(line.decode(errors="replace"))

    def wake(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGUSR1)

    def output(self) -> str:
        return "".join(self.lines)

    async def __aexit__(self, *exc: object) -> None:
        assert self._process is not None and self._reader is not None
        if self._process.returncode is None:
            self._process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self._process.wait(), 20)
        await asyncio.wait_for(self._reader, 5)


async def _wait_until(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit-tls"])
@pytest.mark.parametrize("auth", ["xoauth2", "oauthbearer"])
@pytest.mark.parametrize("proto", ["imap", "pop3"])
async def test_stored_token_logs_in_and_delivers(
    tmp_path: Path,
    dovecot: Dovecot,
    mta: MTA,
    authorization_server: AuthorizationServer,
    proto: str,
    auth: str,
    implicit: bool,
) -> None:
    """With a stored refresh token only, fetchd refreshes, logs in (Dovecot asks the AS) and
    delivers; the rotated refresh token is saved; no secret appears at -v -v."""
    dovecot.deliver(b"Subject: oauth2\r\n\r\nbody\r\n")
    record = _log_in(tmp_path, authorization_server)
    refreshes = authorization_server.refresh_count()
    rc = _rc(tmp_path, dovecot, mta, proto, auth, implicit)
    code, out = await run_fetchd(tmp_path, rc, "-v", "-v")
    assert code == 0, out
    assert len(mta.sink.received) == 1 and b"Subject: oauth2" in mta.sink.received[0]
    assert dovecot.messages() == []
    assert authorization_server.refresh_count() == refreshes + 1
    saved = _store(tmp_path).load("127.0.0.1", "alice")
    assert saved is not None and saved.refresh_token != record.refresh_token
    assert f"method={auth.upper()}" in dovecot.log()
    # The trace at -v -v shows the command, the token masked; Dovecot offers SASL-IR, so the
    # IMAP token goes on the command line and no continuation answer follows.
    if proto == "pop3":
        assert f"POP3> AUTH {auth.upper()} *" in out, out
    else:
        assert re.search(rf"IMAP> [A-Z]+\d+ AUTHENTICATE {auth.upper()} \*", out), out
        assert "IMAP> *" not in out
    _assert_no_secret(out, authorization_server)


async def test_token_rejected_early_is_refreshed_and_retried_once(
    tmp_path: Path,
    dovecot: Dovecot,
    mta: MTA,
    authorization_server: AuthorizationServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stored token believed valid for an hour that the server refuses: one refresh, one
    retry, mail delivered."""
    # Dovecot delays a second attempt after a failure (its auth penalty, ~2 s): longer than
    # the module's 3 s tokens would survive.
    monkeypatch.setattr(authorization_server, "access_lifetime", 60.0)
    _log_in(tmp_path, authorization_server)
    rc = _rc(tmp_path, dovecot, mta, "imap", "xoauth2", True)
    code, out = await run_fetchd(tmp_path, rc)  # no mail yet: gets and stores an access token
    assert code == 1, out
    saved = _store(tmp_path).load("127.0.0.1", "alice")
    assert saved is not None and saved.access_token is not None
    # Believed valid for an hour, but the AS has revoked it.
    _store(tmp_path).save(
        saved.with_tokens(saved.access_token, time.time() + 3600, saved.refresh_token)
    )
    authorization_server.revoke_access_tokens()
    refreshes = authorization_server.refresh_count()
    dovecot.deliver(b"Subject: early\r\n\r\nbody\r\n")
    offset = dovecot.log_offset()
    code, out = await run_fetchd(tmp_path, rc, "-v", "-v")
    assert code == 0, out
    assert authorization_server.refresh_count() == refreshes + 1
    assert len(mta.sink.received) == 1 and dovecot.messages() == []
    assert dovecot.log_since(offset).count("auth failed") == 1  # retried once, not more
    _assert_no_secret(out, authorization_server)


async def test_revoked_refresh_token_fails_that_account_only(
    tmp_path: Path, dovecot: Dovecot, mta: MTA, authorization_server: AuthorizationServer
) -> None:
    """invalid_grant: exit 3 (alone), the exact login command, alice's mail kept; bob, with a
    password, is polled and delivered as usual."""
    dovecot.deliver(b"Subject: for alice\r\n\r\nbody\r\n")
    bob_maildir = dovecot.root / "mail" / "bob"
    (bob_maildir / "new" / "1.bob").write_bytes(b"Subject: for bob\r\n\r\nbody\r\n")
    if os.geteuid() == 0:
        os.chown(bob_maildir / "new" / "1.bob", dovecot.uid, dovecot.gid)
    record = _log_in(tmp_path, authorization_server)
    authorization_server.revoke_refresh_tokens()
    rc = _rc(tmp_path, dovecot, mta, "imap", "xoauth2", True)
    rc.write_text(
        rc.read_text() + f"poll bob.test via 127.0.0.1 proto imap port {dovecot.imaps_port}\n"
        f'  user bob password "{BOB_PASSWORD}" is joe here smtphost 127.0.0.1/{mta.port}'
        f" sslcertfile {dovecot.ca_file} ssl\n"
    )
    code, out = await run_fetchd(tmp_path, rc, "-v", "-v")
    assert f"--oauth2-login alice@127.0.0.1 --oauth2-provider {record.provider}" in out, out
    assert f"--oauth2-client-id {CLIENT_ID}" in out
    assert len(dovecot.messages()) == 1  # alice's mail is still on the server
    assert [b"Subject: for bob" in m for m in mta.sink.received] == [True]
    assert code == 0, out  # fetchmail: some mail was delivered
    _assert_no_secret(out, authorization_server)
    saved = _store(tmp_path).load("127.0.0.1", "alice")
    assert saved == record  # kept as it was: a new login replaces it


async def test_daemon_keeps_delivering_over_several_token_lifetimes(
    tmp_path: Path, dovecot: Dovecot, mta: MTA, authorization_server: AuthorizationServer
) -> None:
    """A daemon polling every second for more than three 3 s token lifetimes refreshes as it
    goes and delivers every message, with no login Dovecot refused."""
    _log_in(tmp_path, authorization_server)
    rc = _rc(tmp_path, dovecot, mta, "imap", "xoauth2", False)
    rc.write_text("set daemon 1\n" + rc.read_text())
    offset = dovecot.log_offset()
    refreshes = authorization_server.refresh_count()
    async with _Daemon(tmp_path, rc, "-v", "-v") as daemon:
        began = time.monotonic()
        for number in range(5):
            dovecot.deliver(f"Subject: daemon {number}\r\n\r\nbody\r\n".encode())
            await asyncio.sleep(2.5)
        await _wait_until(lambda: len(mta.sink.received) >= 5, 15)
        lasted = time.monotonic() - began
    out = daemon.output()
    assert len(mta.sink.received) == 5, out
    assert dovecot.messages() == []
    assert lasted > 3 * authorization_server.access_lifetime
    assert authorization_server.refresh_count() - refreshes >= 3
    assert "auth failed" not in dovecot.log_since(offset)
    _assert_no_secret(out, authorization_server)


async def test_daemon_backs_off_a_failing_provider_and_names_a_revoked_login_once(
    tmp_path: Path, dovecot: Dovecot, mta: MTA, authorization_server: AuthorizationServer
) -> None:
    """A token endpoint answering 503 is a transient failure: the daemon (interval 1 s) backs
    off, as for any failing account, then delivers once the endpoint works. A refresh token the
    provider then revokes fails every poll; the error with the login command is logged once, not
    once per poll, mail stays on the server, and a new login is picked up at the next poll."""
    record = _log_in(tmp_path, authorization_server)  # no access token: the first poll refreshes
    rc = _rc(tmp_path, dovecot, mta, "imap", "xoauth2", False)
    rc.write_text("set daemon 1\n" + rc.read_text())
    authorization_server.fail_next = [503, 503]
    requests = len(authorization_server.token_requests)
    dovecot.deliver(b"Subject: after the outage\r\n\r\nbody\r\n")
    async with _Daemon(tmp_path, rc) as daemon:  # not -v, which shows the repeats too
        await _wait_until(lambda: len(mta.sink.received) == 1, 30)
        transient = authorization_server.token_requests[requests:]
        assert [status for _, status in transient] == [503, 503, 200], daemon.output()
        # polls at cycles 0 and 2 fail; backing off skips cycle 3 and polls at 4 (about 4 s
        # at 1 s, jittered); polling every cycle would have succeeded at cycle 2, about 2 s
        assert transient[2][0] - transient[0][0] > 3.0, transient
        assert daemon.output().count("OAuth2 token endpoint answered HTTP 503") == 1

        dovecot.deliver(b"Subject: kept while revoked\r\n\r\nbody\r\n")
        authorization_server.revoke_refresh_tokens()
        authorization_server.revoke_access_tokens()
        refused = authorization_server.refresh_count()
        for _ in range(3):  # a wake polls at once, backing off or not
            daemon.wake()
            await asyncio.sleep(1.5)
        assert authorization_server.refresh_count() - refused >= 3, daemon.output()
        command = f"run fetchd --oauth2-login alice@127.0.0.1 --oauth2-provider {record.provider}"
        assert daemon.output().count(command) == 1, daemon.output()
        assert len(dovecot.messages()) == 1 and len(mta.sink.received) == 1

        _log_in(tmp_path, authorization_server)  # what a new --oauth2-login leaves
        daemon.wake()
        await _wait_until(lambda: len(mta.sink.received) == 2, 15)
    out = daemon.output()
    assert b"Subject: kept while revoked" in mta.sink.received[1], out
    assert "alice@127.0.0.1: polling works again" in out
    assert dovecot.messages() == []
    _assert_no_secret(out, authorization_server)


async def test_idle_reconnects_with_a_fresh_token(
    tmp_path: Path, dovecot: Dovecot, mta: MTA, authorization_server: AuthorizationServer
) -> None:
    """An IDLE connection that breaks after its token has expired logs in again with a refreshed
    token (not the expired one, which Dovecot would refuse) and goes on delivering."""
    _log_in(tmp_path, authorization_server)
    rc = _rc(tmp_path, dovecot, mta, "imap", "xoauth2", False)
    rc.write_text("set daemon 1\n" + rc.read_text().replace(" smtphost", " idle smtphost"))
    offset = dovecot.log_offset()
    async with _Daemon(tmp_path, rc, "-v") as daemon:
        await _wait_until(lambda: bool(dovecot.idle_sessions()), 15)
        first = dovecot.idle_sessions()
        assert first, daemon.output()
        refreshes = authorization_server.refresh_count()
        await asyncio.sleep(authorization_server.access_lifetime + 1)  # its token is now expired
        for pid in first:
            os.kill(pid, signal.SIGTERM)  # the server drops the IDLE connection
        await _wait_until(lambda: bool(dovecot.idle_sessions() - first), 15)
        assert dovecot.idle_sessions() - first, daemon.output()
        assert authorization_server.refresh_count() > refreshes
        dovecot.deliver(b"Subject: after the reconnect\r\n\r\nbody\r\n")
        await _wait_until(lambda: len(mta.sink.received) == 1, 15)
    out = daemon.output()
    assert len(mta.sink.received) == 1, out
    assert "auth failed" not in dovecot.log_since(offset)
    _assert_no_secret(out, authorization_server)
