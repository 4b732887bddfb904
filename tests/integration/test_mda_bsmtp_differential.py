"""Differential tests: an MDA, and a BSMTP file, get from fetchd what fetchmail gives them.

Each case serves one message from a fresh demo POP3 server, once to the real fetchmail (the Debian
package, the oracle) and once to fetchd. With ``mda "record %F %T"`` (a small script that writes
its arguments and its standard input to files) we compare the arguments (``%F`` is the envelope
sender, with fetchmail's fallback when the message names none; ``%T`` the recipient) and the
message without the tool's own ``Received:`` header; with ``bsmtp FILE``, the whole file but
that header. As in test_delivery_differential, fetchmail runs as an ordinary user when the tests
run as root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetchd.demo.pop3server import DemoPOP3Server
from tests.support.command import run_fetchd
from tests.support.fetchmail import oracle_user, run_fetchmail

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


async def _poll(message: bytes, home: Path, delivery: str, *, oracle: bool) -> None:
    """Poll one message with ``delivery`` (the rc file's mda or bsmtp option)."""
    pop = DemoPOP3Server("demo", SECRET, [message])
    await pop.start()
    try:
        rcfile = home / ".fetchmailrc"
        rcfile.write_text(
            "set postmaster pm\n"
            f"poll pop.test via 127.0.0.1 proto pop3 port {pop.port}\n"
            f'  user demo password "{SECRET}" is joe here\n'
            f"  {delivery} sslproto '' fetchsizelimit 0 keep\n"
        )
        rcfile.chmod(0o600)
        if oracle:
            code, out = await run_fetchmail(home, rcfile, TIMEOUT)
        else:
            code, out = await run_fetchd(home, rcfile, env={"LC_ALL": "C"}, timeout=TIMEOUT)
        assert code == 0, f"{'fetchmail' if oracle else 'fetchd'} failed ({code}):\n{out}"
    finally:
        await pop.stop()


async def _deliver(message: bytes, home: Path, *, oracle: bool) -> tuple[list[str], bytes]:
    """Poll one message into the recording MDA; its arguments and what it read."""
    record = home / "record"
    record.write_text(RECORD)
    record.chmod(0o755)
    await _poll(message, home, f'mda "{record} %F %T"', oracle=oracle)
    return (home / "argv").read_text().splitlines(), (home / "message").read_bytes()


def _without_trace(message: bytes) -> bytes:
    """The text without its first Received header (the tool's own) and its continuations."""
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    first = next(n for n, line in enumerate(lines) if line.startswith(b"Received:"))
    rest = first + 1
    while lines[rest][:1] in (b" ", b"\t"):
        rest += 1
    return b"\n".join(lines[:first] + lines[rest:])


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


@pytest.mark.parametrize("name", list(CASES))
async def test_bsmtp_file_from_fetchd_is_fetchmails(
    name: str, oracle_home: Path, tmp_path: Path
) -> None:
    """The BSMTP file (MAIL FROM, RCPT TO, DATA, the message dot-stuffed) is fetchmail's."""
    files = []
    for home, oracle in ((oracle_home, True), (tmp_path, False)):
        await _poll(CASES[name], home, f"bsmtp {home / 'out.bsmtp'}", oracle=oracle)
        files.append(_without_trace((home / "out.bsmtp").read_bytes()))
    # With no sender named, each tool writes the login name of the user it runs as.
    logins = (oracle_user().pw_name, pwd.getpwuid(os.getuid()).pw_name)
    theirs, ours = (
        text.decode("latin-1").replace(f"MAIL FROM:<{login}>", "MAIL FROM:<(login)>").splitlines()
        for text, login in zip(files, logins, strict=True)
    )
    assert theirs[0].startswith("MAIL FROM:"), theirs
    assert (theirs[0] == "MAIL FROM:<(login)>") == (name == "no-sender"), theirs
    if name == "bad-return-path":  # a deliberate difference: see fetchd/delivery/bsmtp.py
        assert (theirs[0], ours[0]) == ("MAIL FROM:<a b@c>", "MAIL FROM:<>")
        theirs[0] = ours[0]
    assert ours == theirs
