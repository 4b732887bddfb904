"""``fetchd --oauth2-login`` by the device grant and by the PKCE loopback flow (the test plays
the browser), ``--oauth2-logout`` and ``-V``, then a poll through Dovecot with the result."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import httpx
import pytest

from fetchd.auth.oauth2.store import TokenStore
from tests.integration.test_oauth2_dovecot import (  # the same AS, Dovecot and MTA
    MTA,
    _assert_no_secret,
    _rc,
    authorization_server,
    dovecot,
    mta,
    oauth2_dovecot,
)
from tests.support.command import run_fetchd
from tests.support.dovecot import Dovecot
from tests.support.oauth2_server import CLIENT_ID, CLIENT_SECRET, AuthorizationServer

pytestmark = pytest.mark.dovecot
__all__ = ["authorization_server", "dovecot", "mta", "oauth2_dovecot"]  # fixtures, used by name


async def _start_login(
    home: Path, rc: Path, *args: str, secret: str = CLIENT_SECRET, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fetchd", "-f", str(rc), "-v", "-v",
        "--oauth2-login", "alice@127.0.0.1", "--oauth2-client-id", CLIENT_ID,
        "--oauth2-client-secret", secret, *args,
        env={
            "HOME": str(home),
            "XDG_STATE_HOME": str(home / "state"),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            **(env or {}),
        },
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


async def _read_until(process: asyncio.subprocess.Process, pattern: str) -> tuple[str, str]:
    """Output up to the first line matching ``pattern``, and that match's first group."""
    assert process.stdout is not None
    seen = ""
    while True:
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert line, f"fetchd ended before printing {pattern!r}: {seen}"
        seen += line
        found = re.search(pattern, line)
        if found:
            return seen, found[1]


async def _finish(process: asyncio.subprocess.Process, stdin: bytes = b"") -> tuple[int, str]:
    out, _ = await asyncio.wait_for(process.communicate(stdin), 30)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def _poll_delivers(home: Path, rc: Path, dovecot: Dovecot, mta: MTA) -> str:
    dovecot.deliver(b"Subject: after login\r\n\r\nbody\r\n")
    code, out = await run_fetchd(home, rc, "-v", "-v")
    assert code == 0, out
    assert len(mta.sink.received) == 1 and dovecot.messages() == []
    return out


async def test_device_login_then_poll_then_logout(
    tmp_path: Path, dovecot: Dovecot, mta: MTA, authorization_server: AuthorizationServer
) -> None:
    """Device flow with RFC 8414 discovery: fetchd prints the URL and code, waits through
    authorization_pending, stores the tokens; -V names the account; a poll delivers; logout
    removes the record."""
    rc = _rc(tmp_path, dovecot, mta, "imap", "oauthbearer", False)
    process = await _start_login(
        tmp_path, rc, "--oauth2-provider", authorization_server.base_url, "--oauth2-flow", "device"
    )
    printed, user_code = await _read_until(process, r"enter the code (\S+)")
    assert re.fullmatch(r"[0-9A-F]{8}", user_code)
    assert f"{authorization_server.base_url}/device" in printed
    await asyncio.sleep(1.5)  # fetchd polls at least once and hears authorization_pending
    authorization_server.approve_devices()
    code, out = await _finish(process)
    assert code == 0, printed + out
    assert "authorization_pending" not in out  # waiting is not an error
    grants = authorization_server.grants
    assert grants.count("urn:ietf:params:oauth:grant-type:device_code") >= 2
    store = TokenStore(tmp_path / "state" / "fetchd" / "oauth2")
    record = store.load("127.0.0.1", "alice")
    assert record is not None and record.provider == authorization_server.base_url
    code, described = await run_fetchd(tmp_path, rc, "-V")
    assert code == 0, described
    assert "alice@127.0.0.1: stored OAuth2 tokens" in described
    polled = await _poll_delivers(tmp_path, rc, dovecot, mta)
    code, said = await run_fetchd(tmp_path, rc, "--oauth2-logout", "alice@127.0.0.1")
    assert code == 0 and "removed" in said
    assert store.load("127.0.0.1", "alice") is None
    _assert_no_secret(printed + out + described + polled + said, authorization_server)


async def test_client_secret_read_from_standard_input(
    tmp_path: Path, dovecot: Dovecot, mta: MTA, authorization_server: AuthorizationServer
) -> None:
    """``--oauth2-client-secret -``: the secret comes from standard input, not the argv that
    ps shows, and the stored record refreshes with it."""
    rc = _rc(tmp_path, dovecot, mta, "imap", "xoauth2", False)
    process = await _start_login(
        tmp_path, rc, "--oauth2-provider", authorization_server.base_url,
        "--oauth2-flow", "device", secret="-",
    )  # fmt: skip
    argv = Path(f"/proc/{process.pid}/cmdline").read_bytes()
    assert CLIENT_SECRET.encode() not in argv
    assert process.stdin is not None
    process.stdin.write(CLIENT_SECRET.encode() + b"\n")
    await process.stdin.drain()
    printed, _ = await _read_until(process, r"enter the code (\S+)")
    authorization_server.approve_devices()
    code, out = await _finish(process)
    assert code == 0, printed + out
    record = TokenStore(tmp_path / "state" / "fetchd" / "oauth2").load("127.0.0.1", "alice")
    assert record is not None and record.client_secret is not None
    assert record.client_secret.reveal() == CLIENT_SECRET
    _assert_no_secret(printed + out, authorization_server)


@pytest.mark.parametrize("paste", [False, True], ids=["loopback-redirect", "pasted-url"])
async def test_browser_login_with_pkce(
    tmp_path: Path,
    dovecot: Dovecot,
    mta: MTA,
    authorization_server: AuthorizationServer,
    paste: bool,
) -> None:
    """PKCE S256 with a loopback redirect: the browser lands on fetchd's listener (or the user
    pastes where it landed); the AS checks the verifier; a poll then delivers."""
    rc = _rc(tmp_path, dovecot, mta, "pop3", "xoauth2", True)
    process = await _start_login(
        tmp_path, rc, "--oauth2-provider", authorization_server.base_url, "--oauth2-flow", "browser"
    )
    printed, url = await _read_until(process, r"^(http://127\.0\.0\.1:\d+/authorize\?\S+)")
    assert "code_challenge_method=S256" in url and "redirect_uri=http%3A%2F%2F127.0.0.1" in url
    async with httpx.AsyncClient() as browser:
        answer = await browser.get(url)  # the AS approves at once and redirects
        assert answer.status_code == 302
        landing = answer.headers["location"]
        if paste:
            code, out = await _finish(process, (landing + "\n").encode())
        else:
            reached = await browser.get(landing)
            assert reached.status_code == 200 and "login received" in reached.text
            code, out = await _finish(process)
    assert code == 0, printed + out
    assert "authorization_code" in authorization_server.grants
    polled = await _poll_delivers(tmp_path, rc, dovecot, mta)
    _assert_no_secret(printed + out + polled, authorization_server)


@pytest.mark.parametrize("desktop", [True, False], ids=["desktop", "no-desktop"])
async def test_browser_opened_only_on_a_desktop(
    tmp_path: Path,
    dovecot: Dovecot,
    mta: MTA,
    authorization_server: AuthorizationServer,
    desktop: bool,
) -> None:
    """With a graphical session the login URL goes to xdg-open (here a stand-in for the
    desktop's browser, which records the URL it was given); without one it is only printed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    opened = tmp_path / "opened"
    opener = bin_dir / "xdg-open"
    opener.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" > {opened}\n')
    opener.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    if desktop:
        env["DISPLAY"] = ":99"
    rc = _rc(tmp_path, dovecot, mta, "imap", "xoauth2", False)
    process = await _start_login(
        tmp_path, rc, "--oauth2-provider", authorization_server.base_url,
        "--oauth2-flow", "browser", env=env,
    )  # fmt: skip
    printed, url = await _read_until(process, r"^(http://127\.0\.0\.1:\d+/authorize\?\S+)")
    if desktop:
        for _ in range(100):
            if opened.exists() and opened.read_text().strip():
                break
            await asyncio.sleep(0.05)
        assert opened.read_text().strip() == url
    async with httpx.AsyncClient() as browser:
        answer = await browser.get(url)
        await browser.get(answer.headers["location"])
    code, out = await _finish(process)
    assert code == 0, printed + out
    assert ("opened in your desktop's browser" in printed + out) is desktop
    assert opened.exists() is desktop


async def test_login_refuses_plain_http_to_a_remote_provider(
    tmp_path: Path, dovecot: Dovecot, mta: MTA
) -> None:
    """An issuer on plain HTTP that is not loopback is refused before any request."""
    rc = _rc(tmp_path, dovecot, mta, "imap", "xoauth2", True)
    process = await _start_login(tmp_path, rc, "--oauth2-provider", "http://login.example.com")
    code, out = await _finish(process)
    assert code == 5 and "HTTPS is required" in out, out
