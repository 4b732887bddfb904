"""Password sources through the whole ``fetchd`` command against a real Dovecot: ~/.netrc used
when the rc file has no password, and a netrc that others may read refused before any login."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.command import run_fetchd
from tests.support.dovecot import Dovecot
from tests.support.mta import Sink, running_mta

pytestmark = pytest.mark.dovecot


def rc_without_password(home: Path, dovecot: Dovecot, sink: Sink) -> Path:
    path = home / "fetchmailrc"
    path.write_text(
        f"poll {dovecot.host} proto imap port {dovecot.imap_port}\n"
        f"  user {dovecot.user} is joe here\n"
        f'  sslcertfile "{dovecot.ca_file}" smtphost 127.0.0.1/{sink.port}\n'
    )
    path.chmod(0o600)
    return path


async def test_netrc_password_logs_in(dovecot: Dovecot, tmp_path: Path) -> None:
    dovecot.deliver(b"From: a@example.org\r\nSubject: netrc\r\n\r\nbody\r\n")
    netrc = tmp_path / ".netrc"
    netrc.write_text(
        f"machine {dovecot.host} login someone-else password wrong\n"
        f'machine {dovecot.host} login {dovecot.user} password "{dovecot.password}"\n'
    )
    netrc.chmod(0o600)
    async with running_mta() as sink:
        rc = rc_without_password(tmp_path, dovecot, sink)
        code, out = await run_fetchd(tmp_path, rc)
        assert code == 0, out
        assert len(sink.received) == 1
        assert dovecot.messages() == []
        assert dovecot.password not in out


async def test_world_readable_netrc_is_refused(dovecot: Dovecot, tmp_path: Path) -> None:
    dovecot.deliver(b"From: a@example.org\r\nSubject: kept\r\n\r\nbody\r\n")
    netrc = tmp_path / ".netrc"
    netrc.write_text(f'machine {dovecot.host} password "{dovecot.password}"\n')
    netrc.chmod(0o644)
    async with running_mta() as sink:
        rc = rc_without_password(tmp_path, dovecot, sink)
        code, out = await run_fetchd(tmp_path, rc)
        assert code != 0, out
        assert f"{netrc}: the netrc file must have no more than -rw-------" in out
        assert "Traceback" not in out
        assert dovecot.password not in out
        assert sink.received == []
        assert len(dovecot.messages()) == 1
