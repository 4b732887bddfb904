"""Soak run: a real ``fetchd -d`` daemon for an hour (by default) while everything around it fails.

    python contrib/soak/soak.py [--duration 3600] [--accounts 100] ... (from the project root;
    --help lists every interval)

What it does (issue 14, item 3):
- one private Dovecot (the test suite's, tests/support/dovecot.py) with ACCOUNTS mailboxes,
  polled by one daemon (``fetchd -d INTERVAL -N``, a child process) over POP3 and IMAP with
  STARTTLS and a verified certificate, some IMAP accounts in IDLE;
- mail written into random mailboxes all along (Maildir, as a local delivery agent does), each
  message with a Message-ID of its own;
- Dovecot stopped and started again every ``--dovecot-restart-every`` seconds;
- the MTA (aiosmtpd in this process) answering 451 for ``--mta-fault-length`` seconds every
  ``--mta-fault-every`` seconds;
- SIGHUP every ``--reload-every`` seconds, and the rc file rewritten every ``--rc-edit-every``
  seconds, one account removed or the removed one added back (the daemon sees the new mtime);
- ``fetchd --poll ACCOUNT`` and ``fetchd --status`` run one after another by another process;
- every ``--sample-every`` seconds the daemon's RSS, descriptors and threads from /proc/PID,
  and its asyncio tasks from ``fetchd --status --json``.
At the end, with the faults off, it wakes the daemon until every mailbox is empty (at most
``--drain`` seconds), stops it with ``fetchd --quit`` and checks the criteria of
contrib/soak/criteria.py. It prints the figures and PASS or FAIL, writes them to
OUT/report.json (with the daemon's log, each line stamped), and exits 0 only on PASS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from aiosmtpd.smtp import SMTP, Envelope, Session  # noqa: E402
from criteria import (  # noqa: E402
    Fault,
    LogLine,
    check_delivery,
    explain_errors,
    slope_per_hour,
    verdict,
)

from tests.support.dovecot import Dovecot  # noqa: E402

MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)
ERROR_LINE = re.compile(r"\blevel=(error|critical|exception)\b")
SIZES = (600, 2_000, 2_000, 6_000, 40_000)  # body octets, chosen at random per message


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--duration", type=float, default=3600, help="seconds of faults and injection")
    add("--accounts", type=int, default=100)
    add("--imap", type=float, default=0.5, help="share of the accounts on IMAP (rest POP3)")
    add("--idle", type=float, default=0.2, help="share of the accounts on IMAP with idle")
    add("--poll-interval", type=int, default=60, help="the daemon's -d interval, seconds")
    add("--inject-every", type=float, default=0.5, help="seconds between injected messages")
    add("--dovecot-restart-every", type=float, default=300)
    add("--dovecot-down", type=float, default=3, help="seconds Dovecot stays stopped")
    add("--mta-fault-every", type=float, default=900)
    add("--mta-fault-length", type=float, default=60)
    add("--reload-every", type=float, default=120, help="seconds between SIGHUPs")
    add("--rc-edit-every", type=float, default=300)
    add("--hammer-pause", type=float, default=1.0, help="seconds between --poll/--status runs")
    add("--sample-every", type=float, default=60)
    add("--warmup", type=float, default=600, help="seconds before the slopes are measured")
    add("--drain", type=float, default=300, help="at most this long to empty the mailboxes")
    add("--grace", type=float, default=60, help="error lines this long after a fault are its")
    # Thresholds: the hour polls about 6,000 times (100 accounts every 60 s, plus a poll of
    # every account at each reload and wake), so 4 MiB/h is under 700 octets a poll; a leaked
    # descriptor per Dovecot restart (12/h) or per reload (30/h) is over 6/h, while the count
    # moves by about 16 between samples with the connections open at that moment.
    add("--rss-slope-max", type=float, default=4.0, help="MiB per hour after the warm-up")
    add("--fd-slope-max", type=float, default=6.0, help="descriptors per hour after the warm-up")
    add("--seed", type=int, default=14)
    add("--out", type=Path, default=None, help="directory for report.json and daemon.log")
    add(
        "--daemon-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="also in the daemon's environment (PYTHONTRACEMALLOC=1 ...); repeatable",
    )
    add("--sink-drops", type=int, default=0, help="self-check: the MTA loses this many messages")
    return p.parse_args(argv)


@dataclass
class Account:
    name: str
    user: str
    password: str
    proto: str
    idle: bool
    maildir: Path


@dataclass
class SoakSink:
    """The MTA: counts each Message-ID it accepts; 451 while ``failing``; drops ``drops`` of
    the first messages it is given (answering 250) when asked to prove the check works."""

    failing: bool = False
    drops: int = 0
    arrived: list[str] = field(default_factory=list)
    refused: int = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.failing:
            self.refused += 1
            return "451 4.3.0 soak: injected MTA fault"
        found = MESSAGE_ID.search(envelope.original_content or b"")
        if self.drops > 0:
            self.drops -= 1
            return "250 queued"
        self.arrived.append(found.group(1).decode() if found else "<none>")
        return "250 queued"


@dataclass
class Sample:
    at: float  # seconds since the daemon started
    rss_kib: int
    fds: int
    threads: int
    tasks: int | None


def proc_sample(pid: int, at: float, tasks: int | None) -> Sample:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return Sample(
        at=round(at, 1),
        rss_kib=int(status["VmRSS"].split()[0]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=int(status["Threads"]),
        tasks=tasks,
    )


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.random = random.Random(args.seed)
        self.out: Path = args.out or Path(tempfile.mkdtemp(prefix="fetchd-soak-"))
        self.out.mkdir(parents=True, exist_ok=True)
        self.home = Path(tempfile.mkdtemp(prefix="fetchd-soak-home-"))
        (self.home / "run").mkdir(mode=0o700)
        self.rc = self.home / "fetchmailrc"
        self.dovecot = Dovecot(user="soak000", password="soak-pw-000")
        self.sink = SoakSink(drops=args.sink_drops)
        self.accounts: list[Account] = []
        self.removed: Account | None = None
        self.injected: dict[str, str] = {}  # Message-ID -> account
        self.faults: list[Fault] = []
        self.samples: list[Sample] = []
        self.log: list[LogLine] = []
        self.counts: Counter[str] = Counter()
        self.status_failures: list[str] = []
        self.soak_errors: list[str] = []  # the soak's own loops that failed
        self.began = 0.0
        self.sink_port = 0
        self.daemon: asyncio.subprocess.Process | None = None
        self.restarting: asyncio.Future[None] | None = None
        self.reader: asyncio.Task[None] | None = None
        self.last_line = ""
        self.env = {
            "HOME": str(self.home),
            "XDG_STATE_HOME": str(self.home / "state"),
            "XDG_RUNTIME_DIR": str(self.home / "run"),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "FETCHD_SYSLOG_SOCKET": str(self.home / "no-syslog.sock"),
        }

    # --- set-up --------------------------------------------------------------------------

    def make_accounts(self) -> None:
        n = self.args.accounts
        imap = round(n * self.args.imap)
        idle = min(round(n * self.args.idle), imap)
        for i in range(n):
            user, password = f"soak{i:03d}", f"soak-pw-{i:03d}"
            maildir = self.dovecot.maildir if i == 0 else self.dovecot.add_user(user, password)
            proto = "imap" if i < imap else "pop3"
            self.accounts.append(Account(f"acct{i:03d}", user, password, proto, i < idle, maildir))

    def write_rc(self) -> None:
        entries = []
        for a in self.accounts:
            if a is self.removed:
                continue
            port = self.dovecot.imap_port if a.proto == "imap" else self.dovecot.pop3_port
            entries.append(
                f"poll {a.name} via 127.0.0.1 proto {a.proto} port {port}\n"
                f'  user {a.user} password "{a.password}" is soak here\n'
                f'  sslcertfile "{self.dovecot.ca_file}" smtphost 127.0.0.1/{self.sink_port}'
                + (" idle" if a.idle else "")
                + "\n"
            )
        new = self.rc.with_suffix(".new")
        new.write_text("".join(entries))
        new.chmod(0o600)
        new.replace(self.rc)

    def inject(self, number: int) -> None:
        account = self.random.choice(self.accounts)
        mid = f"<soak.{number}.{account.name}@soak.test>"
        body = "".join(
            f"line {k} of message {number} ........................................\n"
            for k in range(self.random.choice(SIZES) // 64)
        )
        data = (
            f"From: soak@example.org\nTo: {account.user}@example.org\n"
            f"Subject: soak {number}\nMessage-ID: {mid}\n"
            f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\n\n{body}"
        ).encode()
        name = f"{time.time_ns()}.{number:07d}.soak"
        tmp = account.maildir / "tmp" / name
        tmp.write_bytes(data)
        if os.geteuid() == 0:
            os.chown(tmp, self.dovecot.uid, self.dovecot.gid)
        tmp.rename(account.maildir / "new" / name)
        self.injected[mid] = account.name

    def left_on_server(self) -> int:
        return sum(
            1 for a in self.accounts for sub in ("new", "cur") for _ in (a.maildir / sub).iterdir()
        )

    # --- the daemon and the commands run beside it ---------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.began

    async def fetchd(self, *args: str, timeout: float = 60) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fetchd", *args, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            return -1, f"no answer in {timeout} s"
        return process.returncode or 0, out.decode(errors="replace")

    async def start_daemon(self) -> None:
        """Start the daemon and wait until it answers. As root, fetchd (as fetchmail) refuses
        to start while any root fetchmail daemon runs (/var/run/fetchmail.pid): another test
        on this machine may run one for a moment, so that refusal is waited out."""
        deadline = time.monotonic() + 300
        while True:
            self.daemon = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fetchd", "-d", str(self.args.poll_interval), "-N",
                "-f", str(self.rc),
                env=self.env
                | {"INVOCATION_ID": "soak"}  # key=value lines, with level=
                | dict(item.split("=", 1) for item in self.args.daemon_env),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            self.began = time.monotonic()
            self.reader = asyncio.create_task(self.read_log(self.daemon))
            if await self.until_answering(self.daemon):
                return
            await self.reader
            if "a fetchmail daemon is running" not in self.last_line:
                raise RuntimeError(f"the daemon did not start: {self.last_line}")
            if time.monotonic() > deadline:
                raise RuntimeError("a fetchmail daemon kept the soak's daemon from starting")
            self.counts["daemon start refused: a root fetchmail daemon ran"] += 1
            await asyncio.sleep(3)

    async def read_log(self, daemon: asyncio.subprocess.Process) -> None:
        assert daemon.stdout is not None
        with (self.out / "daemon.log").open("a") as file:
            while line := await daemon.stdout.readline():
                text = line.decode(errors="replace").rstrip("\n")
                at = self.now()
                file.write(f"{at:9.2f} {text}\n")
                self.last_line = text
                if ERROR_LINE.search(text):
                    self.log.append(LogLine(at, text))

    async def until_answering(
        self, daemon: asyncio.subprocess.Process, timeout: float = 120
    ) -> bool:
        """Until the daemon's control socket answers --status (True), or the daemon ends
        (False); the soak's clock starts then."""
        deadline = time.monotonic() + timeout
        while (await self.fetchd("--status", timeout=30))[0] != 0:
            if daemon.returncode is not None:
                return False
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not answer --status in {timeout} s")
            await asyncio.sleep(0.2)
        self.began = time.monotonic()
        return True

    async def status_json(self) -> dict[str, Any] | None:
        code, out = await self.fetchd("--status", "--json", timeout=30)
        self.counts["status"] += 1
        try:
            document: dict[str, Any] = json.loads(out)
        except ValueError:
            document = {}
        if code != 0 or "daemon" not in document:
            self.status_failures.append(f"{self.now():.0f}s exit {code}: {out.strip()[:200]}")
            return None
        return document

    # --- the loops, each an asyncio task until the end of the faulted phase --------------

    async def every(self, seconds: float, first: float, action: Any) -> None:
        await asyncio.sleep(first)
        while True:
            began = time.monotonic()
            await action()
            await asyncio.sleep(max(0.0, seconds - (time.monotonic() - began)))

    async def inject_one(self) -> None:
        self.inject(len(self.injected))

    async def restart_dovecot(self) -> None:
        start = self.now()
        # Shielded: a restart under way when the faulted phase ends is waited for, not cut.
        self.restarting = asyncio.ensure_future(
            asyncio.to_thread(self.dovecot.restart, self.args.dovecot_down)
        )
        await asyncio.shield(self.restarting)
        self.faults.append(Fault("dovecot", start, self.now()))
        self.counts["dovecot restarts"] += 1

    async def mta_fault(self) -> None:
        start = self.now()
        self.sink.failing = True
        try:
            await asyncio.sleep(self.args.mta_fault_length)
        finally:
            self.sink.failing = False
            self.faults.append(Fault("mta", start, self.now()))
        self.counts["MTA fault windows"] += 1

    async def reload(self) -> None:
        assert self.daemon is not None
        self.daemon.send_signal(signal.SIGHUP)
        self.counts["SIGHUP reloads"] += 1

    async def edit_rc(self) -> None:
        if self.removed is None:
            self.removed = self.random.choice(self.accounts)
            self.counts["rc edits: account removed"] += 1
        else:
            self.removed = None
            self.counts["rc edits: account added"] += 1
        self.write_rc()

    async def hammer(self) -> None:
        present = [a for a in self.accounts if a is not self.removed]
        if self.counts["hammer"] % 2:
            await self.status_json()
        else:
            code, _ = await self.fetchd("--poll", self.random.choice(present).name, timeout=30)
            self.counts[f"--poll exit {code}"] += 1
        self.counts["hammer"] += 1

    async def sample(self) -> None:
        assert self.daemon is not None
        document = await self.status_json()
        tasks = document["daemon"].get("tasks") if document else None
        self.samples.append(proc_sample(self.daemon.pid, self.now(), tasks))
        s = self.samples[-1]
        print(
            f"{s.at:7.0f}s rss {s.rss_kib / 1024:6.1f} MiB  fds {s.fds:4d}  threads {s.threads:3d}"
            f"  tasks {s.tasks}  injected {len(self.injected):6d}  arrived "
            f"{len(self.sink.arrived):6d}  errors {len(self.log)}",
            flush=True,
        )

    # --- the run -------------------------------------------------------------------------

    async def run(self) -> int:
        a = self.args
        self.dovecot.start()
        server = await asyncio.get_running_loop().create_server(
            lambda: SMTP(self.sink, decode_data=False, hostname="mta.soak"), "127.0.0.1", 0
        )
        self.sink_port = server.sockets[0].getsockname()[1]
        try:
            self.make_accounts()
            self.write_rc()
            await self.start_daemon()
            loops = [
                self.every(a.inject_every, 0, self.inject_one),
                self.every(a.dovecot_restart_every, a.dovecot_restart_every, self.restart_dovecot),
                self.every(a.mta_fault_every, a.mta_fault_every / 2, self.mta_fault),
                self.every(a.reload_every, a.reload_every, self.reload),
                self.every(a.rc_edit_every, a.rc_edit_every / 2, self.edit_rc),
                self.every(a.hammer_pause, 2, self.hammer),
                self.every(a.sample_every, 0, self.sample),
            ]
            tasks = [asyncio.create_task(loop) for loop in loops]
            assert self.daemon is not None
            ended = asyncio.create_task(self.daemon.wait())
            await asyncio.wait({ended, *tasks}, timeout=a.duration, return_when="FIRST_COMPLETED")
            if ended.done():
                print(f"soak: the daemon ended at {self.now():.0f} s", flush=True)
                return self.report(0.0, None)
            for task in tasks:  # a new sampler goes on through the drain
                task.cancel()
            for outcome in await asyncio.gather(*tasks, return_exceptions=True):
                if not isinstance(outcome, asyncio.CancelledError | None):
                    self.soak_errors.append(repr(outcome))
            self.sink.failing = False
            if self.restarting is not None:
                await self.restarting
            if self.removed is not None:
                await self.edit_rc()
            sampler = asyncio.create_task(self.every(a.sample_every, 0, self.sample))
            drained = await self.drain()
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
            quit_code, _ = await self.fetchd("--quit", timeout=30)
            self.counts[f"--quit exit {quit_code}"] += 1
            assert self.daemon is not None
            try:
                exit_code: int | None = await asyncio.wait_for(self.daemon.wait(), 30)
            except TimeoutError:
                exit_code = None
            if self.reader is not None:
                await asyncio.wait_for(self.reader, 10)
            return self.report(drained, exit_code)
        finally:
            if self.daemon is not None and self.daemon.returncode is None:
                self.daemon.kill()
                await self.daemon.wait()
            if self.reader is not None:
                self.reader.cancel()
            server.close()
            self.dovecot.stop()

    async def drain(self) -> float:
        """Wake every account until all mail has arrived and left the server; seconds taken."""
        began = time.monotonic()
        while time.monotonic() - began < self.args.drain:
            delivered = set(self.sink.arrived)
            if all(mid in delivered for mid in self.injected) and not self.left_on_server():
                return time.monotonic() - began
            await self.fetchd("--poll", timeout=30)
            await asyncio.sleep(2)
        return time.monotonic() - began

    def report(self, drained: float, exit_code: int | None) -> int:
        a = self.args
        late = [s for s in self.samples if s.at >= a.warmup]
        rss = slope_per_hour([(s.at, s.rss_kib / 1024) for s in late])
        # A leak grows as fast in the second half; warm-up and fragmentation slow down.
        rss_second_half = slope_per_hour([(s.at, s.rss_kib / 1024) for s in late[len(late) // 2 :]])
        fds = slope_per_hour([(s.at, s.fds) for s in late])
        threads = slope_per_hour([(s.at, s.threads) for s in late])
        tasks = slope_per_hour([(s.at, s.tasks) for s in late if s.tasks is not None])
        delivery = check_delivery(self.injected, self.sink.arrived, self.left_on_server())
        errors = explain_errors(self.log, self.faults, a.grace)
        result = verdict(
            rss_slope=rss,
            rss_max=a.rss_slope_max,
            fd_slope=fds,
            fd_max=a.fd_slope_max,
            samples_after_warmup=len(late),
            delivery=delivery,
            errors=errors,
            daemon_exit=exit_code,
            status_failures=len(self.status_failures),
            soak_errors=len(self.soak_errors),
        )
        figures = {
            "arguments": {k: str(v) for k, v in vars(a).items()},
            "counts": dict(self.counts),
            "injected": delivery.injected,
            "delivered": delivery.delivered,
            "arrivals": len(self.sink.arrived),
            "refused_4xx": self.sink.refused,
            "duplicated": delivery.duplicated,
            "missing": list(delivery.missing[:50]),
            "missing_count": len(delivery.missing),
            "unexpected": list(delivery.unexpected[:50]),
            "left_on_server": delivery.left_on_server,
            "drain_seconds": round(drained, 1),
            "slopes_per_hour_after_warmup": {
                "rss_mib": round(rss, 3),
                "rss_mib_second_half": round(rss_second_half, 3),
                "fds": round(fds, 3),
                "threads": round(threads, 3),
                "tasks": round(tasks, 3),
            },
            "errors_explained": errors.explained,
            "errors_unexplained": [f"{e.at:.1f}s {e.text}" for e in errors.unexplained[:50]],
            "status_failures": self.status_failures[:50],
            "soak_errors": self.soak_errors,
            "faults": [asdict(f) for f in self.faults],
            "samples": [asdict(s) for s in self.samples],
            "checks": dict(result.checks),
            "passed": result.passed,
        }
        (self.out / "report.json").write_text(json.dumps(figures, indent=1) + "\n")
        print(f"soak: {len(self.accounts)} accounts, {a.duration:.0f} s, report in {self.out}")
        print(
            f"messages: {delivery.injected} injected, {delivery.delivered} delivered, "
            f"{sum(n - 1 for n in delivery.duplicated.values())} duplicates, "
            f"{len(delivery.missing)} missing, {len(delivery.unexpected)} unexpected, "
            f"{delivery.left_on_server} left on the server; drained in {drained:.0f} s"
        )
        print(
            f"slopes after {a.warmup:.0f} s ({len(late)} samples), per hour: RSS {rss:+.2f} MiB "
            f"({rss_second_half:+.2f} in the second half), "
            f"descriptors {fds:+.2f}, threads {threads:+.2f}, tasks {tasks:+.2f}"
        )
        print("faults and commands: " + ", ".join(f"{k} {v}" for k, v in self.counts.items()))
        print(
            f"error lines: {sum(errors.explained.values())} explained {errors.explained}, "
            f"{len(errors.unexplained)} unexplained"
        )
        for line in errors.unexplained[:10]:
            print(f"  unexplained at {line.at:.1f}s: {line.text[:300]}")
        for failure in self.soak_errors[:5]:
            print(f"  the soak itself failed: {failure}")
        for failure in self.status_failures[:5]:
            print(f"  --status failed: {failure}")
        for name, ok in result.checks.items():
            print(f"{'ok  ' if ok else 'FAIL'} {name}")
        print("PASS" if result.passed else "FAIL")
        return 0 if result.passed else 1


async def _run(soak: Soak) -> int:
    """The soak, cancelled by SIGTERM or SIGINT so that its clean-up runs (the daemon and
    Dovecot are stopped, nothing is left behind)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        return await soak.run()
    except asyncio.CancelledError:
        print("soak: stopped by a signal", flush=True)
        return 130


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(_run(Soak(arguments(argv))))


if __name__ == "__main__":
    sys.exit(main())
