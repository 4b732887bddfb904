"""Benchmark: delete mode, 2,000 messages (~100 MB), Dovecot -> MTA, side by side.

    python contrib/bench/mailbench.py [MESSAGES]      (from the project root, as root or not)
    BENCH_PROTO=imap python contrib/bench/mailbench.py    the same over IMAP
    BENCH_NO_FETCHMAIL=1 ...                         leave out fetchmail (it takes ~90 s)
    BENCH_ROUNDS=N ...                               runs per contender (default 3)
    BENCH_BEFORE=DIR ...                             also run the fetchd of another checkout
                                                     (e.g. `git archive main | tar -x -C DIR`)

Starts a private Dovecot (the test suite's) and Postfix's smtp-sink on loopback, then for each
contender refills the same mailbox and measures one poll that empties it: wall time, CPU seconds
(user + system of the process and its children) and peak RSS. Contenders: fetchd, the real
fetchmail, and two stdlib references (contrib/bench/references.py): read-and-discard, and a
naive sequential poplib-to-smtplib relay. All use POP3 without TLS on loopback.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
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


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    messages = mailbox(count)
    total = sum(map(len, messages))
    work = Path(tempfile.mkdtemp(prefix="fetchd-bench-"))
    work.chmod(0o755)
    dovecot = Dovecot(user="bench", password="bench-pw")
    dovecot.start()
    sink_port = 20000 + os.getpid() % 20000
    as_user = ["-u", "nobody"] if os.geteuid() == 0 else []  # smtp-sink refuses root
    sink = subprocess.Popen([SMTP_SINK, *as_user, f"127.0.0.1:{sink_port}", "100"])
    time.sleep(0.3)
    proto = os.environ.get("BENCH_PROTO", "pop3")
    port = dovecot.pop3_port if proto == "pop3" else dovecot.imap_port
    rc = work / "fetchmailrc"
    rc.write_text(
        f"poll 127.0.0.1 proto {proto} port {port}\n"
        f"  user bench password bench-pw is bench here nokeep sslproto ''\n"
        f"  smtphost 127.0.0.1/{sink_port}\n"
    )
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(work), "XDG_STATE_HOME": str(work / "state")}
    references = str(Path(__file__).with_name("references.py"))
    server = ["127.0.0.1", str(port), "bench", "bench-pw"]
    prefix = "" if proto == "pop3" else "imap-"
    contenders = {
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
    print(
        f"{count} messages, {total / 1e6:.1f} MB, {proto.upper()} delete mode, "
        "Dovecot -> smtp-sink; "
        f"median of {ROUNDS} runs (fetchmail: 1)"
    )
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in contenders}
    if shutil.which("fetchmail") is None or os.environ.get("BENCH_NO_FETCHMAIL"):
        del contenders["fetchmail"]
    before = os.environ.get("BENCH_BEFORE")
    if not before:
        del contenders["fetchd before"]
    # Each fetchd from its own checkout: PYTHONPATH, run from outside both (python -m puts the
    # working directory first on sys.path, ahead of PYTHONPATH).
    envs = {name: env for name in contenders}
    envs["fetchd"] = {**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    if before:
        envs["fetchd before"] = {**env, "PYTHONPATH": str(Path(before).resolve())}
    try:
        for round_ in range(ROUNDS):
            for name, command in contenders.items():
                if name == "fetchmail" and round_:
                    continue  # 40x slower than the rest: one run tells enough
                dovecot.reset()
                for message in messages:
                    dovecot.deliver(message)
                runs[name].append(measure(command, envs[name], cwd=work))
                left = len(dovecot.messages())
                if name != "read-and-discard" and left:
                    print(f"  ({name} left {left} messages on the server)")
        results = {name: _median(values) for name, values in runs.items() if values}
        print(f"{'contender':<18}{'wall s':>9}{'cpu s':>9}{'peak MB':>9}{'x discard':>11}")
        for name, (wall, cpu, rss) in results.items():
            ratio = wall / results["read-and-discard"][0]
            print(f"{name:<18}{wall:>9.2f}{cpu:>9.2f}{rss:>9.1f}{ratio:>11.2f}")
    finally:
        sink.terminate()
        sink.wait()
        dovecot.stop()
        shutil.rmtree(work, ignore_errors=True)
    if "fetchmail" in results and "fetchd" in results:
        print(
            f"fetchd is {results['fetchmail'][0] / results['fetchd'][0]:.1f}x faster than "
            f"fetchmail; {results['fetchd'][0] / results['naive relay'][0]:.2f}x the naive relay"
        )


if __name__ == "__main__":
    main()
