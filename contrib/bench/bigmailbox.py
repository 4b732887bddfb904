"""Benchmark: a whole `fetchd` poll finding no mail among 50,000 seen IMAP messages.

    python contrib/bench/bigmailbox.py [MESSAGES]     (from the project root, as root or not)

Starts a private Dovecot (the test suite's), fills its INBOX with seen messages and one new
one, runs `fetchd` once to take the new one (and let Dovecot index), then measures the steady
state: wall time and peak RSS of the whole command, Python's start included. The target is
under 1.0 s and under 60 MB on an idle machine; the test suite checks only the memory
(tests/integration/test_imap_dovecot_large.py), since a shared machine's load decides the time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.support.dovecot import Dovecot

_WRAPPER = """
import json, resource, subprocess, sys, time
began = time.perf_counter()
done = subprocess.run(sys.argv[2:], capture_output=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as report:
    json.dump([done.returncode, time.perf_counter() - began, usage.ru_maxrss / 1024], report)
"""


def measured(command: list[str], env: dict[str, str]) -> tuple[int, float, float]:
    """Exit status, wall seconds and peak RSS (MB) of ``command``."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as report:
        subprocess.run([sys.executable, "-c", _WRAPPER, report.name, *command], env=env, check=True)
        code, wall, peak = json.load(report)
    return int(code), float(wall), float(peak)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    dovecot = Dovecot()
    dovecot.start()
    work = Path(tempfile.mkdtemp(prefix="fetchd-bigmailbox-"))
    try:
        cur = dovecot.maildir / "cur"
        for i in range(count):
            path = cur / f"{1_700_000_000 + i}.M{i}P1.fixture:2,S"
            path.write_bytes(b"From: a@example.org\nSubject: old %d\n\nold mail\n" % i)
            if os.geteuid() == 0:
                os.chown(path, dovecot.uid, dovecot.gid)
        dovecot.deliver(b"Subject: the new one\r\n\r\nnew\r\n")
        for sub in ("tmp", "new", "cur"):
            (work / "Mail" / sub).mkdir(parents=True)
        rc = work / "fetchmailrc"
        rc.write_text(
            f"poll {dovecot.host} proto imap port {dovecot.imap_port}\n"
            f'  user {dovecot.user} password "{dovecot.password}" is joe here keep\n'
            f'  sslcertfile "{dovecot.ca_file}" mda "maildir:{work / "Mail"}"\n'
        )
        rc.chmod(0o600)
        env = {
            "HOME": str(work),
            "XDG_STATE_HOME": str(work / "state"),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }
        command = [sys.executable, "-m", "fetchd", "-f", str(rc)]
        for _ in range(2):  # the new message, then Dovecot's resync of the renamed file
            measured(command, env)
            time.sleep(1.1)  # Dovecot rescans a directory changed within the current second
        code, seconds, peak = measured(command, env)
        verdict = "ok" if code == 1 and seconds < 1.0 and peak < 60 else "OVER TARGET"
        print(f"{count} seen, no new mail: exit {code}, {seconds:.2f} s, {peak:.1f} MB: {verdict}")
    finally:
        dovecot.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
