"""Benchmark: delete mode, Dovecot -> MTA, every contender side by side in one run.

    python contrib/bench/mailbench.py [MESSAGES]      (from the project root, as root or not)
    BENCH_PROTO=imap python contrib/bench/mailbench.py    the same over IMAP
    python contrib/bench/mailbench.py --cases pop3:2000,imap:2000,pop3:50M,imap:50M
                                                     several cases in one run: N messages of the
                                                     realistic mailbox, or one message of N MB
    BENCH_NO_FETCHMAIL=1 ...                         leave out fetchmail (it takes ~90 s)
    BENCH_ROUNDS=N ...                               runs per contender (default 3)
    BENCH_BEFORE=DIR ...                             also run the fetchd of another checkout
                                                     (e.g. `git archive main | tar -x -C DIR`)

Starts a private Dovecot (the test suite's) and Postfix's smtp-sink on loopback, then for each
case and contender refills the same mailbox and measures one poll that empties it: wall time,
CPU seconds (user + system of the process and its children) and peak RSS. Contenders: fetchd,
the real fetchmail, and two stdlib references (contrib/bench/references.py): read-and-discard,
and a naive sequential relay. All without TLS on loopback. Rounds go case after case and
contender after contender, so a shared machine's load falls on all of them alike.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.support.dovecot import Dovecot

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


def mailbox(count: int, seed: int = 7) -> list[bytes]:
    """Realistic sizes: most 1-8 KiB, some 20-200 KiB, a few 1-2 MiB."""
    rng = random.Random(seed)
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"
    messages = []
    for i in range(count):
        roll = rng.random()
        size = (
            rng.randint(1024, 8192)
            if roll < 0.85
            else rng.randint(20_000, 200_000)
            if roll < 0.98
            else rng.randint(1_000_000, 2_000_000)
        )
        head = (
            f"From: sender{i}@example.org\r\nTo: alice@example.org\r\nSubject: message {i}"
            f"\r\nMessage-ID: <{i}.bench@example.org>\r\n\r\n"
        ).encode()
        body = line * (size // len(line) + 1)
        messages.append(head + body[:size])
    return messages


# Runs the command from a small process, so that its peak RSS is not inflated by the pages a
# fork of this (large: the whole mailbox is in memory) process would start with.
_WRAPPER = """
import os, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL).returncode
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as out:
    out.write(f"{code} {wall} {usage.ru_utime + usage.ru_stime} {usage.ru_maxrss / 1024}")
"""


def measure(
    command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one command and its children."""
    with tempfile.NamedTemporaryFile("r", suffix=".bench") as report:
        done = subprocess.run(
            [sys.executable, "-c", _WRAPPER, report.name, *command],
            env=env,
            cwd=cwd,
            stderr=subprocess.PIPE,
            check=False,
        )
        code, wall, cpu, rss = report.read().split()
    if int(code) != 0:
        err = done.stderr.decode(errors="replace")
        raise RuntimeError(f"{command[0]} exited {code}: {err[-2000:]}")
    return float(wall), float(cpu), float(rss)


ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def _median(values: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """Each column's own median (wall, CPU, peak RSS), not the row of the median wall time."""
    columns = [sorted(column) for column in zip(*values, strict=True)]
    wall, cpu, rss = (column[len(column) // 2] for column in columns)
    return wall, cpu, rss


@dataclass(frozen=True)
class Case:
    """One mailbox to empty: ``count`` realistic messages, or one message of ``single`` MB."""

    proto: str
    count: int = 0
    single: int = 0

    @classmethod
    def parse(cls, text: str) -> Case:
        proto, _, size = text.partition(":")
        if proto not in ("pop3", "imap") or not size:
            raise SystemExit(f"a case is pop3:N, imap:N, pop3:NM or imap:NM, not {text!r}")
        if size.upper().endswith("M"):
            return cls(proto, single=int(size[:-1]))
        return cls(proto, count=int(size))

    @property
    def name(self) -> str:
        what = f"1 x {self.single} MB" if self.single else f"{self.count} messages"
        return f"{self.proto.upper()} {what}"


def big_message(path: Path, megabytes: int) -> None:
    """One message of ``megabytes`` MB (10**6 octets) of 80-octet lines, written as Dovecot
    stores it (LF line endings), without holding it in memory."""
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor\n"
    block = line * 12_500  # 1 MB
    with path.open("wb") as out:
        out.write(
            b"From: big@example.org\nTo: alice@example.org\nSubject: one big message\n"
            b"Message-ID: <big.bench@example.org>\n\n"
        )
        for _ in range(megabytes):
            out.write(block)


class Filler:
    """Puts a case's mailbox into Dovecot's INBOX before each run."""

    def __init__(self, dovecot: Dovecot, work: Path) -> None:
        self.dovecot = dovecot
        self.work = work
        self._mailboxes: dict[int, list[bytes]] = {}
        self._files: dict[int, Path] = {}
        self._serial = 0

    def fill(self, case: Case) -> int:
        """Octets on the server (CRLF, as the server announces them)."""
        self.dovecot.reset()
        if not case.single:
            messages = self._mailboxes.setdefault(case.count, mailbox(case.count))
            for message in messages:
                self.dovecot.deliver(message)
            return sum(map(len, messages))
        source = self._files.get(case.single)
        if source is None:
            source = self._files[case.single] = self.work / f"big-{case.single}.eml"
            big_message(source, case.single)
        self._serial += 1
        target = self.dovecot.maildir / "new" / f"{time.time_ns()}.{self._serial}.bench"
        shutil.copyfile(source, target)
        if os.geteuid() == 0:
            os.chown(target, self.dovecot.uid, self.dovecot.gid)
        lines = source.read_bytes().count(b"\n")
        return source.stat().st_size + lines


def contenders(case: Case, dovecot: Dovecot, work: Path, sink_port: int) -> dict[str, list[str]]:
    port = dovecot.pop3_port if case.proto == "pop3" else dovecot.imap_port
    rc = work / f"fetchmailrc-{case.proto}"
    rc.write_text(
        f"poll 127.0.0.1 proto {case.proto} port {port}\n"
        f"  user bench password bench-pw is bench here nokeep sslproto ''\n"
        f"  smtphost 127.0.0.1/{sink_port}\n"
    )
    rc.chmod(0o600)
    references = str(Path(__file__).with_name("references.py"))
    server = ["127.0.0.1", str(port), "bench", "bench-pw"]
    prefix = "" if case.proto == "pop3" else "imap-"
    found = {
        "read-and-discard": [sys.executable, references, prefix + "discard", *server],
        "naive relay": [
            sys.executable,
            references,
            prefix + "relay",
            *server,
            "127.0.0.1",
            str(sink_port),
        ],
        "fetchd": [sys.executable, "-m", "fetchd", "-f", str(rc)],
        "fetchd before": [sys.executable, "-m", "fetchd", "-f", str(rc)],
        "fetchmail": ["fetchmail", "-f", str(rc), "--nosyslog", "-i", str(work / "fetchids")],
    }
    if shutil.which("fetchmail") is None or os.environ.get("BENCH_NO_FETCHMAIL"):
        del found["fetchmail"]
    if not os.environ.get("BENCH_BEFORE"):
        del found["fetchd before"]
    return found


def contender_env(name: str, env: dict[str, str]) -> dict[str, str]:
    """Each fetchd from its own checkout: PYTHONPATH, run from outside both (``python -m``
    puts the working directory first on sys.path, ahead of PYTHONPATH)."""
    if name == "fetchd":
        return {**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    if name == "fetchd before":
        return {**env, "PYTHONPATH": str(Path(os.environ["BENCH_BEFORE"]).resolve())}
    return env


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def report(case: Case, octets: int, runs: dict[str, list[tuple[float, float, float]]]) -> None:
    results = {name: _median(values) for name, values in runs.items() if values}
    print(f"\n{case.name}, {octets / 1e6:.1f} MB on the server")
    print(
        f"{'contender':<18}{'runs':>5}{'wall s':>9}{'cpu s':>9}{'peak MB':>9}"
        f"{'x discard':>11}{'x relay':>9}{'x fetchmail':>13}"
    )
    for name, (wall, cpu, rss) in results.items():
        ratios = []
        for other in ("read-and-discard", "naive relay", "fetchmail"):
            ratios.append(f"{wall / results[other][0]:.2f}" if other in results else "-")
        print(
            f"{name:<18}{len(runs[name]):>5}{wall:>9.2f}{cpu:>9.2f}{rss:>9.1f}"
            f"{ratios[0]:>11}{ratios[1]:>9}{ratios[2]:>13}"
        )


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--cases":
        cases = [Case.parse(text) for text in sys.argv[2].split(",")]
    else:
        count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
        cases = [Case(os.environ.get("BENCH_PROTO", "pop3"), count=count)]
    work = Path(tempfile.mkdtemp(prefix="fetchd-bench-"))
    work.chmod(0o755)
    dovecot = Dovecot(user="bench", password="bench-pw")
    dovecot.start()
    sink_port = 20000 + os.getpid() % 20000
    as_user = ["-u", "nobody"] if os.geteuid() == 0 else []  # smtp-sink refuses root
    sink = subprocess.Popen([SMTP_SINK, *as_user, f"127.0.0.1:{sink_port}", "100"])
    time.sleep(0.3)
    env = {**os.environ, "HOME": str(work), "XDG_STATE_HOME": str(work / "state")}
    filler = Filler(dovecot, work)
    print(
        f"delete mode, Dovecot -> smtp-sink, median of {ROUNDS} runs (fetchmail on the "
        f"{MAILBOX_FETCHMAIL_NOTE}); at the start: {_load()}"
    )
    runs: dict[Case, dict[str, list[tuple[float, float, float]]]] = {}
    octets: dict[Case, int] = {}
    try:
        for round_ in range(ROUNDS):
            for case in cases:
                for name, command in contenders(case, dovecot, work, sink_port).items():
                    if name == "fetchmail" and case.count and round_:
                        continue  # 40x slower than the rest on a mailbox: one run tells enough
                    octets[case] = filler.fill(case)
                    # A fresh UID store: Dovecot's UIDVALIDITY is the time in seconds, so a
                    # mailbox refilled within a second has the UIDs an earlier run recorded.
                    shutil.rmtree(work / "state", ignore_errors=True)
                    (work / "fetchids").unlink(missing_ok=True)
                    runs.setdefault(case, {}).setdefault(name, []).append(
                        measure(command, contender_env(name, env), cwd=work)
                    )
                    left = len(list((dovecot.maildir / "new").iterdir())) + len(
                        list((dovecot.maildir / "cur").iterdir())
                    )
                    if name != "read-and-discard" and left:
                        print(f"  ({case.name}: {name} left {left} messages on the server)")
            print(f"round {round_ + 1} done; {_load()}", flush=True)
        for case in cases:
            report(case, octets[case], runs[case])
    finally:
        sink.terminate()
        sink.wait()
        dovecot.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nat the end: {_load()}")


MAILBOX_FETCHMAIL_NOTE = "mailbox: 1 run"

if __name__ == "__main__":
    main()
