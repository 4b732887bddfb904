"""Benchmark: a fetchd daemon polling 200 accounts on one Dovecot, its memory and idle CPU.

    python contrib/bench/daemonbench.py [ACCOUNTS]     (from the project root; default 200)
    BENCH_IDLE_SECONDS=N ...                         length of the idle window (default 30)

Starts a private Dovecot (the test suite's) with ACCOUNTS mailboxes, half polled over POP3 and
half over IMAP, all with STARTTLS and verified certificates, two messages in each, and an
in-process aiosmtpd MTA. The daemon (``-N --daemon 120``) delivers everything in its first
cycle; then it is left alone for the idle window, and a second cycle is forced with
``fetchd --poll``. Reported: first and second cycle times, RSS after each, peak RSS (VmHWM) and
the CPU seconds the daemon used in the idle window (from /proc/PID/stat).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from aiosmtpd.controller import Controller

from tests.support.dovecot import Dovecot

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Counter:
    def __init__(self) -> None:
        self.received = 0
        self._lock = threading.Lock()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        with self._lock:
            self.received += 1
        return "250 queued"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def wait_for(condition: object, timeout: float, what: str) -> float:
    began = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - began


def main() -> None:
    accounts = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    idle_seconds = float(os.environ.get("BENCH_IDLE_SECONDS", "30"))
    work = Path(tempfile.mkdtemp(prefix="fetchd-daemonbench-"))
    dovecot = Dovecot(user="bench0", password="pw-0")
    dovecot.start()
    counter = Counter()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        mta_port = probe.getsockname()[1]
    mta = Controller(counter, hostname="127.0.0.1", port=mta_port)
    mta.start()
    lines = ["set daemon 120"]
    for i in range(accounts):
        user, password = f"bench{i}", f"pw-{i}"
        maildir = dovecot.maildir if i == 0 else dovecot.add_user(user, password)
        for n in range(2):
            (maildir / "new" / f"{i}.{n}.bench").write_bytes(
                f"From: s@example.org\nSubject: {user} {n}\n\nbody\n".encode()
            )
        if os.geteuid() == 0:
            for item in (maildir / "new").iterdir():
                os.chown(item, dovecot.uid, dovecot.gid)
        proto, port = ("pop3", dovecot.pop3_port) if i % 2 else ("imap", dovecot.imap_port)
        lines.append(
            f"poll account{i} via 127.0.0.1 proto {proto} port {port}\n"
            f"  user {user} password {password} is bench here\n"
            f'  sslcertfile "{dovecot.ca_file}" smtphost 127.0.0.1/{mta_port}'
        )
    rc = work / "fetchmailrc"
    rc.write_text("\n".join(lines) + "\n")
    rc.chmod(0o600)
    env = {
        **os.environ,
        "HOME": str(work),
        "XDG_STATE_HOME": str(work / "state"),
        "XDG_RUNTIME_DIR": str(work / "run"),
    }
    (work / "run").mkdir(mode=0o700)
    fetchd = [sys.executable, "-m", "fetchd"]
    with (work / "daemon.log").open("wb") as log:
        daemon = subprocess.Popen([*fetchd, "-N", "-f", str(rc)], env=env, stdout=log, stderr=log)
        try:
            expected = 2 * accounts
            first = wait_for(lambda: counter.received >= expected, 600, "the first cycle")
            time.sleep(1)  # the last polls log their summary and close
            rss_first, _ = memory_mb(daemon.pid)
            cpu_before = cpu_seconds(daemon.pid)
            time.sleep(idle_seconds)
            idle_cpu = cpu_seconds(daemon.pid) - cpu_before
            status = subprocess.run(
                [*fetchd, "--status"], env=env, capture_output=True, text=True, check=True
            ).stdout
            rows = [row.split() for row in status.splitlines()[1:]]
            succeeded = sum(1 for row in rows if row[3] == "0")  # fetchmail's exit 0: mail
            subprocess.run([*fetchd, "--poll"], env=env, capture_output=True, check=True)
            began = time.monotonic()
            wait_for(
                lambda: (work / "daemon.log").read_text().count("No mail for") >= accounts,
                600,
                "the second cycle",
            )
            second = time.monotonic() - began
            rss_second, peak = memory_mb(daemon.pid)
            subprocess.run([*fetchd, "--quit"], env=env, capture_output=True, check=True)
            daemon.wait(30)
        finally:
            if daemon.poll() is None:
                daemon.kill()
            mta.stop()
            dovecot.stop()
    print(f"{accounts} accounts ({accounts // 2} IMAP, {accounts - accounts // 2} POP3), STARTTLS")
    print(f"first cycle (delivers {2 * accounts} messages): {first:.2f} s, RSS {rss_first:.1f} MB")
    print(f"idle window {idle_seconds:.0f} s: {idle_cpu:.2f} CPU seconds")
    print(f"second cycle (forced, no new mail): {second:.2f} s, RSS {rss_second:.1f} MB")
    print(f"peak RSS (VmHWM): {peak:.1f} MB; --status: {succeeded} of {len(rows)} delivered mail")


if __name__ == "__main__":
    main()
