"""plugin and plugout: connections made by a command (here a relay like ``nc %h %p``), to a
real Dovecot and a real SMTP server, TLS included, as fetchmail runs them."""

from __future__ import annotations

import asyncio
import os
import pwd
import sys
from pathlib import Path

import pytest

from fetchd.errors import ConfigError
from fetchd.net import plugin as plugin_module
from fetchd.net.plugin import PluginLinks, plugin_argv
from tests.integration.test_engine_dovecot import message, rcfile
from tests.support.command import run_fetchd
from tests.support.dovecot import Dovecot
from tests.support.mta import running_mta

RELAY = f"{sys.executable} {Path(__file__).parents[1] / 'support' / 'plugin_relay.py'}"


def runs(log: Path) -> list[list[str]]:
    """Each run of the relay: its pid, then its arguments."""
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
async def test_polls_through_a_plugin_with_starttls_over_it(
    dovecot: Dovecot, tmp_path: Path, protocol: str
) -> None:
    for i in range(3):
        dovecot.deliver(message(i))
    log = tmp_path / "relay.log"
    async with running_mta() as sink:
        rc = rcfile(tmp_path, dovecot, sink, protocol, server=f'plugin "{RELAY} %h %p"')
        code, out = await run_fetchd(tmp_path, rc, env={"RELAY_LOG": str(log)})
        assert code == 0, out
        assert sorted(sink.bodies()) == sorted(message(i) for i in range(3))
    assert dovecot.messages() == []
    port = dovecot.pop3_port if protocol == "pop3" else dovecot.imap_port
    [[pid, host, service]] = runs(log)  # one connection, %h and %p as the rc file gives them
    assert (host, service) == (dovecot.host, str(port))
    assert gone(int(pid))  # ended with its connection, and waited for


async def test_delivers_through_a_plugout(dovecot: Dovecot, tmp_path: Path) -> None:
    dovecot.deliver(message(1))
    log = tmp_path / "relay.log"
    async with running_mta() as sink:
        rc = rcfile(tmp_path, dovecot, sink, "pop3", server=f'plugout "{RELAY} %h %p"')
        code, out = await run_fetchd(tmp_path, rc, env={"RELAY_LOG": str(log)})
        assert code == 0, out
        assert sink.bodies() == [message(1)]
    [[pid, host, port]] = runs(log)
    assert (host, port) == ("127.0.0.1", str(sink.port)) and gone(int(pid))


async def test_a_plugin_that_cannot_run_is_a_clear_error(dovecot: Dovecot, tmp_path: Path) -> None:
    dovecot.deliver(message(1))
    async with running_mta() as sink:
        rc = rcfile(tmp_path, dovecot, sink, "pop3", server='plugin "no-such-command %h"')
        code, out = await run_fetchd(tmp_path, rc)
        assert code == 2, out  # fetchmail's PS_SOCKET
        assert "cannot run the plugin 'no-such-command': No such file or directory" in out
        assert "Traceback" not in out and sink.received == []
    assert dovecot.messages() == [message(1)]


def test_percent_words_are_replaced_only_whole() -> None:
    argv = plugin_argv("ssh -W %h:%p gw %h  x%p %p", "mail.example.org", "imap")
    assert argv == ["ssh", "-W", "%h:%p", "gw", "mail.example.org", "x%p", "imap"]
    with pytest.raises(ConfigError):
        plugin_argv("  ", "h", "p")


async def test_a_plugin_that_outlives_its_connection_is_killed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Words are not shell words (fetchmail's rule): a command needing a shell is a script."""
    stubborn = tmp_path / "stubborn"
    stubborn.write_text("#!/bin/sh\ntrap '' HUP TERM\nsleep 30\n")
    stubborn.chmod(0o700)
    monkeypatch.setattr(plugin_module, "EXIT_GRACE", 0.2)
    links = PluginLinks(f"{stubborn} %h")
    sock = await links.connect("h", "p")
    sock.close()
    processes = list(links._processes)
    await asyncio.wait_for(links.aclose(), 10)
    assert [p.returncode for p in processes] == [-9]


async def test_auth_ssh_through_a_plugin_that_starts_imap_preauthenticated(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    """The classic `plugin "ssh host /usr/lib/dovecot/imap"` with `auth ssh`: Dovecot's imap runs
    as the mailbox's owner and greets with PREAUTH; no password is sent and no TLS is asked for."""
    for i in range(3):
        dovecot.deliver(message(i))
    imap = f"env USER={dovecot.user} /usr/lib/dovecot/imap -c {dovecot.root / 'dovecot.conf'}"
    if os.geteuid() == 0:  # as ssh would: the mail's owner, not us
        imap = f"runuser -u {pwd.getpwuid(dovecot.uid).pw_name} -- {imap}"
    async with running_mta() as sink:
        rc = tmp_path / "fetchmailrc"
        rc.write_text(
            f'poll mail.example.org proto imap no dns auth ssh plugin "{imap}"\n'
            f"  user {dovecot.user} is joe here smtphost 127.0.0.1/{sink.port}\n"
        )
        rc.chmod(0o600)
        code, out = await run_fetchd(tmp_path, rc)  # the rc file gives no password at all
        assert code == 0, out
        assert sorted(sink.bodies()) == sorted(message(i) for i in range(3))
    assert dovecot.messages() == []


async def test_auth_ssh_without_preauth_is_a_clear_error(tmp_path: Path) -> None:
    """A plugin that reaches a server wanting a login: auth ssh sends no password, and says so."""
    from tests.fakes.imapserver import FakeIMAPServer

    server = FakeIMAPServer()
    await server.start()
    try:
        async with running_mta() as sink:
            rc = tmp_path / "fetchmailrc"
            rc.write_text(
                f'poll mail.example.org proto imap no dns auth ssh plugin "{RELAY} 127.0.0.1 %p"\n'
                f"  port {server.port} user u is joe here smtphost 127.0.0.1/{sink.port}\n"
            )
            rc.chmod(0o600)
            code, out = await run_fetchd(tmp_path, rc, env={"RELAY_LOG": str(tmp_path / "log")})
            assert code == 3, out  # fetchmail's authentication failure
            assert "auth ssh: the server did not greet with PREAUTH" in out
            assert sink.received == []
    finally:
        await server.stop()
