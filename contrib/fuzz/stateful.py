#!/usr/bin/env python3
"""Stateful fuzzing of fetchd's POP3 and IMAP clients (issue 14, item 2).

Each case, from its seed alone: a mailbox of a few messages (dot lines, long lines, sometimes
one over 256 KiB, so IMAP fetches it in parts and POP3 streams it), on the test suite's fake
POP3 or IMAP server; a mutating proxy in front of it; an aiosmtpd sink; and the real ``fetchd``
command polling through the proxy into the sink (``timeout 2``). The proxy plays the server's
valid dialogue and applies one or two mutations on the first connection:

- ``drop``: both connections closed at a random byte offset of the server's stream;
- ``stall``: the server's stream stops there, the connection kept open;
- ``inject``: an extra line (a status, an untagged response, a wrong tag, garbage) before a
  response;
- ``number``: a number in a response replaced (huge, negative, off by one; an IMAP literal's
  size among them);
- ``tag``: an IMAP tagged response under another tag, or a POP3 ``+OK``/``-ERR`` flipped;
- ``duplicate``: a response sent twice; ``reorder``: a response swapped with the next one.

Nothing is changed inside a message (a POP3 body, an IMAP literal) but its end: a server that
sends a valid dialogue with other content cannot be told from one that holds other mail. Then
fetchd polls again through a clean proxy (recovery), and the case checks:

1. each run ends within its timeout, with one of fetchmail's exit codes, without a traceback
   or an internal error;
2. nothing is deleted on the server that the sink had not accepted in full before;
3. every message the sink accepted is an original byte for byte after the Received line
   (after a desynchronising mutation, ``inject``/``tag``/``duplicate``/``reorder``, a POP3
   message may carry a server line before it, as a server could have sent it: then it must
   hold the whole original);
4. after the clean poll every message was accepted exactly once and the server is empty.

    nice -n 10 python contrib/fuzz/stateful.py --seconds 1800 --jobs 2 --seed 1 --out fuzz-out
    python contrib/fuzz/stateful.py --replay 1000123      # one case again, fetchd's -v shown

Each finding is printed with its seed; the exit status is 1 when anything was found.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fetchd.errors import ExitCode  # noqa: E402
from tests.fakes.imapserver import FakeIMAPServer  # noqa: E402
from tests.fakes.pop3server import FakePOP3Server  # noqa: E402
from tests.support.mta import Sink, running_mta  # noqa: E402

EXIT_CODES = {int(code) for code in ExitCode}
FETCHD_TIMEOUT = 2  # the rc file's `timeout`: every stall costs this much
RUN_TIMEOUT = 45.0  # a run of fetchd longer than this is a hang
DESYNC = {"inject", "tag", "duplicate", "reorder"}
KINDS = ["none", "drop", "drop", "stall", "inject", "inject", "number", "number", "tag"]
KINDS += ["duplicate", "reorder"]
WEIRD_NUMBERS = [b"-1", b"0", b"4294967296", b"18446744073709551616", b"9" * 30, b"1" * 5000]

POP3_INJECTS = [b"+OK", b"-ERR injected", b"+OK 99999999999999999999 1", b".", b"..", b""]
POP3_INJECTS += [b"+OK 1 -5", b"1 2", b"-ERR [IN-USE] busy", b"\x00\xff garbage", b"+ "]
IMAP_INJECTS = [b"* 3 EXPUNGE", b"* 99 EXISTS", b"* OK [UIDVALIDITY 7] changed", b"* BYE"]
IMAP_INJECTS += [b"A999 OK done", b"+ go ahead", b"* 1 FETCH (UID 1 FLAGS (\\Deleted))", b")"]
IMAP_INJECTS += [b"* 1 FETCH (UID 1 BODY[] {-1}", b"* SEARCH 1 2 3 4 5 6 7 8 9", b"garbage"]
IMAP_INJECTS += [b"* 1 FETCH (UID 99999999999 RFC822.SIZE 5)", b"* NO [ALERT] injected"]


# --- the case ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutation:
    kind: str
    at: int  # the response (or, for drop and stall, the byte offset) where it applies
    payload: bytes = b""


@dataclass
class Case:
    seed: int
    proto: str
    messages: list[bytes]
    mutations: list[Mutation]

    @property
    def desync(self) -> bool:
        return any(m.kind in DESYNC for m in self.mutations)

    def describe(self) -> str:
        sizes = ",".join(str(len(m)) for m in self.messages)
        kinds = " ".join(
            f"{m.kind}@{m.at}{':' + repr(m.payload) if m.payload else ''}" for m in self.mutations
        )
        return f"{self.proto} messages={sizes} {kinds}"


def make_case(seed: int) -> Case:
    rng = random.Random(seed)
    proto = rng.choice(["pop3", "imap"])
    messages = [_message(rng, seed, i) for i in range(rng.randint(1, 5))]
    if rng.random() < 0.15:
        messages[rng.randrange(len(messages))] = _message(rng, seed, 99, rng.randint(260, 700))
    total = sum(map(len, messages)) + 600
    mutations = []
    for _ in range(1 if rng.random() < 0.8 else 2):
        kind = rng.choice(KINDS)
        if kind in ("drop", "stall"):
            at = rng.randrange(total)
        else:
            at = rng.randrange(12 + 2 * len(messages))
        injects = POP3_INJECTS if proto == "pop3" else IMAP_INJECTS
        payload = b""
        if kind == "inject":
            payload = rng.choice(injects)
        elif kind == "number":
            payload = rng.choice([*WEIRD_NUMBERS, b"+1", b"-1d"])  # +1/-1d: off by one
        mutations.append(Mutation(kind, at, payload))
    return Case(seed, proto, messages, mutations)


def _message(rng: random.Random, seed: int, index: int, kib: int = 0) -> bytes:
    lines = [
        f"Subject: fuzz {seed} {index}".encode(),
        f"Message-ID: <{seed}.{index}@fuzz.test>".encode(),
        b"",
    ]
    target = kib * 1024 if kib else rng.choice([0, 10, 200, 3000])
    size = 0
    while size < target or len(lines) < 4:
        choice = rng.random()
        if choice < 0.1:
            line = rng.choice([b".", b"..", b".hidden", b". ", b"From me", b""])
        elif choice < 0.15:
            line = b"x" * rng.randint(500, 900)
        else:
            words = rng.randint(1, 12)
            line = b" ".join(
                rng.choice([b"mail", b"dot", b"+OK", b"* 1", b"{5}", b"a1"]) for _ in range(words)
            )
        lines.append(line)
        size += len(line) + 2
    return b"\r\n".join(lines) + b"\r\n"


# --- the mutating proxy -----------------------------------------------------------------------


class Framer:
    """Cuts a server's stream into responses, and says which bytes are message content."""

    def __init__(self, proto: str) -> None:
        self.proto = proto
        self.buffer = b""
        self.commands: list[bytes] = []  # POP3: the client's commands not yet answered
        self.multiline: bytes | None = None  # POP3: the command whose multi-line reply runs

    def client_sent(self, data: bytes) -> None:
        if self.proto == "pop3":
            self.commands.extend(
                line.split(b" ")[0].upper() + (b" ARG" if b" " in line.strip() else b"")
                for line in data.split(b"\r\n")
                if line
            )

    def units(self, data: bytes) -> list[tuple[bytes, bool]]:
        """Complete units of the stream so far: (bytes, mutable), mutable = outside content."""
        self.buffer += data
        out: list[tuple[bytes, bool]] = []
        while True:
            unit = self._pop3() if self.proto == "pop3" else self._imap()
            if unit is None:
                return out
            out.append(unit)

    def rest(self) -> bytes:
        rest, self.buffer = self.buffer, b""
        return rest

    def _pop3(self) -> tuple[bytes, bool] | None:
        end = self.buffer.find(b"\n")
        if end < 0:
            return None
        line, self.buffer = self.buffer[: end + 1], self.buffer[end + 1 :]
        if self.multiline is not None:
            if line.rstrip(b"\r\n") == b".":
                self.multiline = None
                return line, True
            return line, self.multiline not in (b"RETR ARG", b"TOP ARG")
        command = self.commands.pop(0) if self.commands else b""
        if line.startswith(b"+OK") and command in (
            b"CAPA",
            b"LIST",
            b"UIDL",
            b"RETR ARG",
            b"TOP ARG",
        ):
            self.multiline = command
        return line, True

    def _imap(self) -> tuple[bytes, bool] | None:
        """A whole response: its lines and literals; mutable in its text only (the caller
        mutates the first line, whose literal sizes are part of the text)."""
        position = 0
        while True:
            end = self.buffer.find(b"\r\n", position)
            if end < 0:
                return None
            match = re.search(rb"\{(\d+)\+?\}\Z", self.buffer[position:end])
            if match is None:
                unit, self.buffer = self.buffer[: end + 2], self.buffer[end + 2 :]
                return unit, True
            literal_end = end + 2 + int(match.group(1))
            if len(self.buffer) < literal_end:
                return None
            position = literal_end


@dataclass
class ProxyStats:
    connections: int = 0
    applied: list[str] = field(default_factory=list)


class MutatingProxy:
    """Forwards 127.0.0.1:port to the server, mutating the first connection's replies."""

    def __init__(self, case: Case, upstream: int) -> None:
        self.case = case
        self.upstream = upstream
        self.mutating = True
        self.stats = ProxyStats()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> MutatingProxy:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.stats.connections += 1
        mutate = self.mutating and self.stats.connections == 1
        framer = Framer(self.case.proto)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        upward = asyncio.create_task(self._client_to_server(reader, up_writer, framer))
        try:
            await self._server_to_client(up_reader, writer, framer, mutate)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            upward.cancel()
            with contextlib.suppress(BaseException):
                await upward
            for w in (writer, up_writer):
                w.close()
            self._tasks.discard(task)

    async def _client_to_server(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, framer: Framer
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                framer.client_sent(data)
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _server_to_client(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        framer: Framer,
        mutate: bool,
    ) -> None:
        pending = list(self.case.mutations) if mutate else []
        sent = 0  # octets forwarded
        index = 0  # mutable units seen
        held: bytes | None = None  # a response held back to be sent after the next (reorder)
        while True:
            data = await reader.read(65536)
            if not data:
                writer.write((held or b"") + framer.rest())
                await writer.drain()
                return
            for unit, mutable in framer.units(data):
                out = unit
                for mutation in list(pending):
                    if mutation.kind in ("drop", "stall"):
                        continue
                    if not mutable or index < mutation.at:
                        continue
                    pending.remove(mutation)
                    out = self._apply(mutation, out)
                    self.stats.applied.append(f"{mutation.kind}@{index}")
                    if mutation.kind == "reorder":
                        held, out = out, b""
                if mutable:
                    index += 1
                if held is not None and out:
                    out, held = out + held, None
                for mutation in list(pending):
                    if mutation.kind in ("drop", "stall") and sent + len(out) > mutation.at:
                        writer.write(out[: mutation.at - sent])
                        await writer.drain()
                        self.stats.applied.append(f"{mutation.kind}@{mutation.at}")
                        if mutation.kind == "stall":
                            await asyncio.Event().wait()  # until the case ends
                        return
                writer.write(out)
                sent += len(out)
            await writer.drain()

    def _apply(self, mutation: Mutation, unit: bytes) -> bytes:
        rng = random.Random(f"{self.case.seed}/{mutation.at}/{mutation.kind}")
        first_end = unit.find(b"\r\n") if self.case.proto == "imap" else len(unit)
        line, rest = unit[:first_end], unit[first_end:]
        if mutation.kind == "inject":
            return mutation.payload + b"\r\n" + unit
        if mutation.kind == "duplicate":
            return unit + unit
        if mutation.kind == "reorder":
            return unit
        if mutation.kind == "tag":
            if self.case.proto == "pop3":
                if line.startswith(b"+OK"):
                    return b"-ERR" + line[3:] + rest
                if line.startswith(b"-ERR"):
                    return b"+OK" + line[4:] + rest
                return unit
            tag, space, after = line.partition(b" ")
            if tag in (b"*", b"+") or not space:
                return unit
            other = rng.choice([b"*", b"+", b"A1", tag + b"0", tag[:-1] or b"X", b"\x00"])
            return other + b" " + after + rest
        if mutation.kind == "number":
            runs = list(re.finditer(rb"\d+", line))
            if not runs:
                return unit
            run = rng.choice(runs)
            value = int(run.group())
            if mutation.payload == b"+1":
                new = b"%d" % (value + 1)
            elif mutation.payload == b"-1d":
                new = b"%d" % max(value - 1, 0)
            else:
                new = mutation.payload
            return line[: run.start()] + new + line[run.end() :] + rest
        return unit


# --- running a case ---------------------------------------------------------------------------


@dataclass
class Run:
    code: int | None  # None: it did not end within RUN_TIMEOUT
    out: str
    seconds: float


@dataclass
class Outcome:
    case: Case
    findings: list[str]
    runs: list[Run]
    applied: list[str]


async def run_fetchd(home: Path, rc: str, verbose: bool) -> Run:
    rcfile = home / "fetchmailrc"
    rcfile.write_text(rc)
    rcfile.chmod(0o600)
    env = {
        "HOME": str(home),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_RUNTIME_DIR": str(home / "run"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "FETCHD_SYSLOG_SOCKET": str(home / "syslog.sock"),
    }
    began = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fetchd",
        "-N",
        "-f",
        str(rcfile),
        *(["-v"] if verbose else []),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
        code: int | None = process.returncode
    except TimeoutError:
        process.kill()
        out, _ = await process.communicate()
        code = None
    return Run(code, out.decode(errors="replace"), time.monotonic() - began)


class Mailbox:
    """The fake server of a case, and what is left on it."""

    def __init__(self, case: Case) -> None:
        self.case = case
        if case.proto == "pop3":
            self.pop3 = FakePOP3Server(list(case.messages), "fz", "pw-fz")
        else:
            self.imap = FakeIMAPServer(user="fz", password="pw-fz")
            for message in case.messages:
                self.imap.add(message)

    async def start(self) -> int:
        if self.case.proto == "pop3":
            await self.pop3.__aenter__()
            return self.pop3.port
        return await self.imap.start()

    async def stop(self) -> None:
        if self.case.proto == "pop3":
            await self.pop3.__aexit__()
        else:
            await self.imap.stop()

    def remaining(self) -> list[bytes]:
        if self.case.proto == "pop3":
            return list(self.pop3.messages)
        # Flagged \Deleted but not expunged is still there (the next session expunges it).
        return [m.body for m in self.imap.messages]


def after_received(message: bytes) -> bytes:
    """What the sink got, without the Received header fetchd prepends (three lines)."""
    lines = message.split(b"\r\n")
    assert lines[0].startswith(b"Received: from "), lines[0][:80]
    return b"\r\n".join(lines[3:])


def holds(accepted: bytes, original: bytes, desync: bool) -> bool:
    return accepted == original or (desync and accepted.endswith(b"\r\n" + original))


async def run_case(case: Case, verbose: bool = False) -> Outcome:
    findings: list[str] = []
    runs: list[Run] = []
    mailbox = Mailbox(case)
    port = await mailbox.start()
    try:
        async with MutatingProxy(case, port) as proxy, running_mta(Sink()) as sink:
            with tempfile.TemporaryDirectory(prefix="fetchd-fuzz-") as tmp:
                home = Path(tmp)
                rc = (
                    f"poll fuzz via 127.0.0.1 proto {case.proto} port {proxy.port}"
                    f" timeout {FETCHD_TIMEOUT}\n"
                    f'  user fz password "pw-fz" is joe here smtphost 127.0.0.1/{sink.port}'
                    " sslproto ''\n"
                )
                for label in ("mutated", "clean"):
                    run = await run_fetchd(home, rc, verbose)
                    runs.append(run)
                    findings += check_run(label, run)
                    accepted = [after_received(m) for m in sink.received]
                    findings += check_deleted(case, mailbox.remaining(), accepted, label)
                    proxy.mutating = False
                findings += check_accepted(case, accepted)
                if runs[1].code not in (0, 1):
                    findings.append(f"clean poll: exit {runs[1].code}, expected 0 or 1")
                left = mailbox.remaining()
                if left and runs[1].code in (0, 1):
                    findings.append(f"clean poll: {len(left)} message(s) left on the server")
                applied = proxy.stats.applied
    finally:
        await mailbox.stop()
    return Outcome(case, findings, runs, applied)


def check_run(label: str, run: Run) -> list[str]:
    found = []
    if run.code is None:
        found.append(f"{label} poll: no end within {RUN_TIMEOUT:g} s")
    elif run.code not in EXIT_CODES:
        found.append(f"{label} poll: exit {run.code} is none of fetchmail's")
    if "Traceback" in run.out:
        found.append(f"{label} poll: traceback")
    if "internal error" in run.out:
        line = next(x for x in run.out.splitlines() if "internal error" in x)
        found.append(f"{label} poll: {line.strip()}")
    return found


def check_deleted(case: Case, left: list[bytes], accepted: list[bytes], label: str) -> list[str]:
    found = []
    remaining = list(left)
    for original in case.messages:
        if original in remaining:
            remaining.remove(original)
            continue
        if not any(holds(a, original, case.desync) for a in accepted):
            found.append(f"{label} poll: message {original[:40]!r} deleted, never accepted whole")
    return found


def check_accepted(case: Case, accepted: list[bytes]) -> list[str]:
    found = []
    for message in accepted:
        if not any(holds(message, original, case.desync) for original in case.messages):
            found.append(f"accepted a message that is no original: {message[:60]!r}...")
    for original in case.messages:
        copies = sum(holds(a, original, case.desync) for a in accepted)
        if copies != 1:
            found.append(f"message {original[:40]!r} accepted {copies} times")
    return found


# --- the campaign -----------------------------------------------------------------------------


async def campaign(
    seed: int,
    cases: int | None,
    seconds: float | None,
    jobs: int,
    report: Callable[[Outcome], None],
) -> tuple[int, int]:
    """Run cases seed, seed+1, ... until the budget is spent; (cases run, cases with findings)."""
    deadline = time.monotonic() + seconds if seconds else None
    counter = iter(range(seed, seed + (cases if cases is not None else 1 << 62)))
    done = found = 0

    async def worker() -> None:
        nonlocal done, found
        for case_seed in counter:
            if deadline is not None and time.monotonic() > deadline:
                return
            outcome = await run_case(make_case(case_seed))
            done += 1
            found += bool(outcome.findings)
            report(outcome)

    await asyncio.gather(*(worker() for _ in range(jobs)))
    return done, found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="the first case's seed")
    parser.add_argument("--cases", type=int, help="stop after this many cases")
    parser.add_argument("--seconds", type=float, help="stop starting cases after this long")
    parser.add_argument("--jobs", type=int, default=1, help="cases run at once")
    parser.add_argument("--out", type=Path, help="write findings and a summary here")
    parser.add_argument("--replay", type=int, help="run the case of this seed, verbosely")
    args = parser.parse_args(argv)
    if args.replay is not None:
        outcome = asyncio.run(run_case(make_case(args.replay), verbose=True))
        print(f"case {args.replay}: {outcome.case.describe()}; applied {outcome.applied}")
        for number, run in enumerate(outcome.runs, 1):
            print(f"--- run {number}: exit {run.code} in {run.seconds:.1f} s\n{run.out}")
        for finding in outcome.findings:
            print(f"FINDING seed={args.replay}: {finding}")
        return 1 if outcome.findings else 0
    if args.cases is None and args.seconds is None:
        args.cases = 100
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    codes: dict[str, int] = {}
    kinds: dict[str, int] = {}
    began = time.monotonic()

    def report(outcome: Outcome) -> None:
        for run in outcome.runs[:1]:
            codes[str(run.code)] = codes.get(str(run.code), 0) + 1
        for mutation in outcome.case.mutations:
            kinds[mutation.kind] = kinds.get(mutation.kind, 0) + 1
        for finding in outcome.findings:
            print(
                f"FINDING seed={outcome.case.seed}: {finding} [{outcome.case.describe()}]",
                flush=True,
            )
        if outcome.findings and args.out:
            record = {
                "seed": outcome.case.seed,
                "case": outcome.case.describe(),
                "applied": outcome.applied,
                "findings": outcome.findings,
                "runs": [
                    {"code": r.code, "seconds": r.seconds, "out": r.out[-4000:]}
                    for r in outcome.runs
                ],
            }
            path = args.out / f"finding-{outcome.case.seed}.json"
            path.write_text(json.dumps(record, indent=1))

    done, found = asyncio.run(campaign(args.seed, args.cases, args.seconds, args.jobs, report))
    elapsed = time.monotonic() - began
    summary = {
        "cases": done,
        "cases_with_findings": found,
        "seconds": round(elapsed, 1),
        "first_seed": args.seed,
        "exit_codes_of_mutated_polls": codes,
        "mutations": kinds,
    }
    print(json.dumps(summary))
    if args.out:
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
