"""A 50,000-message INBOX against a real Dovecot: no new mail is found without error, and a poll
with fetchall lists every size in bounded chunks (aioimaplib's per-line recursion never meets a
50,000-line reply)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fetchd.imap.connect import open_imap
from fetchd.net.tls import TLSSettings
from tests.support.dovecot import Dovecot

pytestmark = [pytest.mark.dovecot, pytest.mark.slow]

COUNT = 50_000


def fill(dovecot: Dovecot, count: int) -> None:
    """Write seen messages straight into cur/, as fast as the disk allows."""
    cur = dovecot.maildir / "cur"
    for i in range(count):
        path = cur / f"{1_700_000_000 + i}.M{i}P1.fixture:2,S"
        path.write_bytes(b"From: a@example.org\nSubject: old %d\n\nold mail\n" % i)
        if os.geteuid() == 0:
            os.chown(path, dovecot.uid, dovecot.gid)


async def test_fifty_thousand_seen_messages(dovecot: Dovecot, tmp_path: Path) -> None:
    fill(dovecot, COUNT)
    dovecot.deliver(b"Subject: the new one\r\n\r\nnew\r\n")
    tls = TLSSettings(sslcertfile=dovecot.ca_file)

    async def listing(fetchall: bool) -> tuple[int, float]:
        source = await open_imap(
            host=dovecot.host,
            port=dovecot.imap_port,
            user=dovecot.user,
            password=dovecot.password,
            label="big",
            tls=tls,
            timeout=120.0,
            auth="any",
            folder="INBOX",
            fetchall=fetchall,
            recorded=None,
        )
        began = time.perf_counter()
        found = await source.list_messages()
        elapsed = time.perf_counter() - began
        await source.abort()
        return len(found), elapsed

    await listing(False)  # Dovecot indexes the Maildir on first use; not ours to measure
    new, seconds = await listing(False)
    assert new == 1
    everything, _ = await listing(True)
    assert everything == COUNT + 1
    print(f"\n50,000 seen + 1 new: unseen listing in {seconds:.3f} s")


# Runs the command from a small interpreter and reports the command's own peak RSS: measured
# from pytest itself, a forked child would start out with the pages of the (large) test process.
_WRAPPER = """
import json, resource, subprocess, sys, time
began = time.perf_counter()
done = subprocess.run(sys.argv[2:], capture_output=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as report:
    json.dump([done.returncode, time.perf_counter() - began, usage.ru_maxrss / 1024,
               (done.stdout + done.stderr).decode(errors="replace")], report)
"""


def _run_measured(command: list[str], env: dict[str, str]) -> tuple[int, float, float, str]:
    """Exit status, wall seconds, peak RSS (MB) of the command, and its output."""
    import json
    import subprocess
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".json") as report:
        subprocess.run([sys.executable, "-c", _WRAPPER, report.name, *command], env=env, check=True)
        code, wall, peak, output = json.load(report)
    return int(code), float(wall), float(peak), str(output)


async def test_fifty_thousand_seen_messages_whole_poll(dovecot: Dovecot, tmp_path: Path) -> None:
    """The fetchd command itself: the one new message, then "no mail" among 50,000 seen ones,
    under 60 MB. How fast is for contrib/bench/bigmailbox.py, not for a test on a shared
    machine: the wall time here includes starting Python."""
    import sys

    fill(dovecot, COUNT)
    dovecot.deliver(b"Subject: the new one\r\n\r\nnew\r\n")
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll {dovecot.host} proto imap port {dovecot.imap_port}\n"
        f'  user {dovecot.user} password "{dovecot.password}" is joe here keep\n'
        f'  sslcertfile "{dovecot.ca_file}" mda "maildir:{tmp_path / "Mail"}"\n'
    )
    rc.chmod(0o600)
    for sub in ("tmp", "new", "cur"):
        (tmp_path / "Mail" / sub).mkdir(parents=True)
    env = {
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    command = [sys.executable, "-m", "fetchd", "-f", str(rc)]
    code, _, _, out = _run_measured(command, env)  # also Dovecot's first indexing
    assert code == 0, out
    assert len(list((tmp_path / "Mail" / "new").iterdir())) == 1
    # Setting \Seen on the new message renamed its file into cur/: Dovecot rescans the
    # 50,000-entry directory at the next SELECT, whoever the client. Then it is steady state.
    # Dovecot does not trust a directory changed within the current second and rescans it
    # again later: each run starts in a later second than the last change.
    time.sleep(1.1)
    code, resync, _, out = _run_measured(command, env)
    assert code == 1 and "No mail for" in out, out  # fetchmail's exit 1: nothing new
    time.sleep(1.1)
    code, seconds, peak, out = _run_measured(command, env)
    assert code == 1 and "No mail for" in out, out
    assert peak < 60, (seconds, peak)
    print(
        f"\n50,000 seen: whole fetchd poll finding no mail in {seconds:.2f} s, {peak:.1f} MB"
        f" (the first, with Dovecot resyncing its Maildir: {resync:.2f} s)"
    )
