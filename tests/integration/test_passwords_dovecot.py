"""Password sources through the whole ``fetchd`` command against a real Dovecot: ~/.netrc used
when the rc file has no password, and a netrc that others may read refused before any login."""

from __future__ import annotations

import asyncio
import os
import sys
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
        assert code == 6, out  # fetchmail's exit code for an rc file others may read
        assert f"{netrc}: the netrc file must have no more than -rw-------" in out
        assert "Traceback" not in out
        assert dovecot.password not in out
        assert sink.received == []
        assert len(dovecot.messages()) == 1


def rc_with(home: Path, dovecot: Dovecot, sink: Sink, source: str) -> Path:
    path = home / "fetchmailrc"
    path.write_text(
        f"poll {dovecot.host} proto imap port {dovecot.imap_port}\n"
        f"  user {dovecot.user} {source} is joe here\n"
        f'  sslcertfile "{dovecot.ca_file}" smtphost 127.0.0.1/{sink.port}\n'
    )
    path.chmod(0o600)
    return path


async def test_passwordfile_is_read_at_each_login(dovecot: Dovecot, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("wrong\n")
    secret.chmod(0o600)
    dovecot.deliver(b"From: a@example.org\r\nSubject: pf\r\n\r\nbody\r\n")
    async with running_mta() as sink:
        rc = rc_with(tmp_path, dovecot, sink, f'passwordfile "{secret}"')
        code, out = await run_fetchd(tmp_path, rc)
        assert code != 0, out  # the old token: refused
        assert sink.received == []
        secret.write_text(f"{dovecot.password}\nsecond line is not the password\n")
        code, out = await run_fetchd(tmp_path, rc)
        assert code == 0, out
        assert len(sink.received) == 1
        assert dovecot.password not in out


async def test_passwordfd_is_read_from_the_descriptor(dovecot: Dovecot, tmp_path: Path) -> None:
    dovecot.deliver(b"From: a@example.org\r\nSubject: fd\r\n\r\nbody\r\n")
    read, write = os.pipe()
    os.write(write, f"{dovecot.password}\n".encode())
    os.close(write)
    async with running_mta() as sink:
        rc = rc_with(tmp_path, dovecot, sink, f"passwordfd {read}")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fetchd", "-f", str(rc), pass_fds=(read,),
            env={"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"),
                 "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        os.close(read)
        out, _ = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, out.decode()
        assert len(sink.received) == 1


async def test_daemon_rereads_passwordfile_between_polls(dovecot: Dovecot, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("expired-token\n")
    secret.chmod(0o600)
    (tmp_path / "run").mkdir(mode=0o700)
    environment = {
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    dovecot.deliver(b"From: a@example.org\r\nSubject: daemon\r\n\r\nbody\r\n")
    async with running_mta() as sink:
        rc = rc_with(tmp_path, dovecot, sink, f'passwordfile "{secret}"')
        rc.write_text("set daemon 1\n" + rc.read_text())
        output = (tmp_path / "daemon.out").open("wb")
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fetchd", "-N", "-f", str(rc), env=environment,
            stdout=output, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            log = tmp_path / "daemon.out"
            began = asyncio.get_running_loop().time()
            while b"LOGIN failed" not in log.read_bytes():
                assert asyncio.get_running_loop().time() - began < 15, log.read_text()
                await asyncio.sleep(0.05)
            assert sink.received == []  # the expired token was refused
            secret.write_text(f"{dovecot.password}\n")  # another tool refreshes it
            while not sink.received:
                assert daemon.returncode is None, log.read_text()
                assert asyncio.get_running_loop().time() - began < 20, log.read_text()
                await asyncio.sleep(0.05)
            assert dovecot.password not in log.read_text()
        finally:
            daemon.terminate()
            await daemon.wait()
            output.close()
