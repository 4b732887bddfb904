"""Differential test: an MDA gets from fetchd the arguments and the message fetchmail gives it.

Each case serves one message from a fresh demo POP3 server, once to the real fetchmail (the Debian
package, the oracle) and once to fetchd, both with ``mda "record %F %T"``: a small script that
writes its arguments and its standard input to files. We compare the arguments (``%F`` is the
envelope sender, with fetchmail's fallback when the message names none; ``%T`` the recipient)
and the message without the tool's own ``Received:`` header. As in test_delivery_differential,
fetchmail runs as an ordinary user when the tests run as root.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetchd.demo.pop3server import DemoPOP3Server
from tests.support.fetchmail import fetchmail_binary, oracle_user

pytestmark = pytest.mark.fetchmail

SECRET = "s3cr3t-Pa55"
TIMEOUT = 60
RECORD = (
    '#!/bin/sh\nprintf "%s\\n" "$@" > "$(dirname "$0")/argv"\ncat > "$(dirname "$0")/message"\n'
)


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


CASES = {
    "return-path": _crlf("Return-Path: <rp@example.org>\nFrom: a@example.org\nSubject: s\n\nB.\n"),
    "sender": _crlf("From: a@example.org\nSender: list@example.org\nSubject: s\n\nB.\n"),
    "from-only": _crlf("From: Alice <a@example.org>\nSubject: s\n\nB.\n"),
    "no-sender": _crlf("To: joe@example.com\nSubject: nobody sent this\n\nB.\n"),
    "null-sender": _crlf("Return-Path: <>\nTo: joe@example.com\nSubject: a bounce\n\nB.\n"),
    "bad-return-path": _crlf("Return-Path: <a b@c>\nFrom: a@example.org\nSubject: s\n\nB.\n"),
    "quote": _crlf("Return-Path: <a'b@c>\nSubject: s\n\nB.\n"),
    "meta": _crlf("Return-Path: <a;b$(id)`x`|&*?[]{}~#!\\@c>\nSubject: s\n\nB.\n"),
    "bad-from": _crlf("From: Alice <@>\nSubject: s\n\nB.\n"),
}


@pytest.fixture
def oracle_home() -> Iterator[Path]:
    """A directory the oracle's user can enter and write: pytest's tmp_path is private to root."""
    path = Path(tempfile.mkdtemp(prefix="fetchd-mda-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def _run(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode is not None
    return process.returncode, out.decode("utf-8", "replace")


async def _deliver(message: bytes, home: Path, *, oracle: bool) -> tuple[list[str], bytes]:
    """Poll one message into the recording MDA; its arguments and what it read."""
    record = home / "record"
    record.write_text(RECORD)
    record.chmod(0o755)
    pop = DemoPOP3Server("demo", SECRET, [message])
    await pop.start()
    try:
        rcfile = home / ".fetchmailrc"
        rcfile.write_text(
            f"poll pop.test via 127.0.0.1 proto pop3 port {pop.port}\n"
            f'  user demo password "{SECRET}" is joe here\n'
            f"  mda \"{record} %F %T\" sslproto '' fetchsizelimit 0 keep\n"
        )
        rcfile.chmod(0o600)
        env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
        if oracle:
            command = [fetchmail_binary(), "-f", str(rcfile), "--nosyslog", "-N"]
            command += ["-i", str(home / "fetchids")]
            if os.geteuid() == 0:
                user = oracle_user()
                for path in (home, rcfile, record):
                    os.chown(path, user.pw_uid, user.pw_gid)
                command = ["runuser", "-u", user.pw_name, "--", "env", f"HOME={home}", *command]
        else:
            env["XDG_STATE_HOME"] = str(home / "state")
            command = [sys.executable, "-m", "fetchd", "-f", str(rcfile)]
        code, out = await _run(command, env)
        assert code == 0, f"{command[0]} failed ({code}):\n{out}"
    finally:
        await pop.stop()
    return (home / "argv").read_text().splitlines(), (home / "message").read_bytes()


def _without_trace(message: bytes) -> bytes:
    """The message without its first header (the tool's Received line) and its continuations."""
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    assert lines[0].startswith(b"Received:"), lines[0]
    rest = 1
    while lines[rest][:1] in (b" ", b"\t"):
        rest += 1
    return b"\n".join(lines[rest:])


@pytest.mark.parametrize("name", list(CASES))
async def test_mda_gets_from_fetchd_what_it_gets_from_fetchmail(
    name: str, oracle_home: Path, tmp_path: Path
) -> None:
    """%F, %T and the message on standard input are fetchmail's, for each kind of sender."""
    theirs_argv, theirs_message = await _deliver(CASES[name], oracle_home, oracle=True)
    ours_argv, ours_message = await _deliver(CASES[name], tmp_path, oracle=False)
    assert len(theirs_argv) == 2 and theirs_argv[1] == "joe", theirs_argv
    assert ours_argv == theirs_argv
    assert _without_trace(ours_message) == _without_trace(theirs_message)
