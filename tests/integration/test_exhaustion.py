"""Issue 14 item 4: fetchd under exhausted resources. A real fetchd process, started with a
resource limit (address space, descriptors), a full or read-only state disk, or a stepped wall
clock (libfaketime), polls fake servers in the test's event loop into a real SMTP sink
(aiosmtpd). Each case must end in a clear error for the account concerned (account and stage
named), delete nothing that was not recorded, and leave the other accounts polling."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from fetchd.demo.pop3server import DemoPOP3Server
from tests.fakes.imapserver import FakeIMAPServer
from tests.fakes.pop3server import FakePOP3Server, Faults
from tests.support.mta import Sink, running_mta
from tests.support.tools import in_ci, require_tool

GOOD = [f"Subject: good {i}\r\n\r\nbody {i}\r\n".encode() for i in range(3)]
ADDRESS_SPACE = 512 * 1024 * 1024


@dataclass
class Child:
    code: int
    out: str


def _limits(**limits: int) -> Callable[[], None]:
    def apply() -> None:
        for name, value in limits.items():
            resource.setrlimit(getattr(resource, name), (value, value))

    return apply


def child_environment(home: Path, state_home: Path | None = None) -> dict[str, str]:
    return {
        "HOME": str(home),
        "XDG_STATE_HOME": str(state_home or home / "state"),
        "XDG_RUNTIME_DIR": str(home / "run"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "FETCHD_SYSLOG_SOCKET": str(home / "syslog.sock"),
    }


async def start_fetchd(
    home: Path,
    rc: str,
    *args: str,
    state_home: Path | None = None,
    env: dict[str, str] | None = None,
    private_run: bool = False,
    **limits: int,
) -> asyncio.subprocess.Process:
    """``fetchd -N -f RC ARGS`` started in a child process with the given rlimits.

    A daemon (``private_run``) gets a /run of its own (a mount namespace with a tmpfs there):
    as root fetchd refuses to start while /var/run/fetchmail.pid names a live fetchmail, and
    another test on this machine may be running one."""
    rcfile = home / "fetchmailrc"
    rcfile.write_text(rc)
    rcfile.chmod(0o600)
    isolate = (
        ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs tmpfs /run && exec "$@"', "sh"]
        if private_run and os.geteuid() == 0
        else []
    )
    return await asyncio.create_subprocess_exec(
        *isolate,
        sys.executable,
        "-m",
        "fetchd",
        "-N",
        "-f",
        str(rcfile),
        *args,
        env=child_environment(home, state_home) | (env or {}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        preexec_fn=_limits(**limits),
    )


async def run_fetchd(
    home: Path,
    rc: str,
    *args: str,
    timeout: float = 60,
    state_home: Path | None = None,
    **limits: int,
) -> Child:
    """``fetchd -N -f RC ARGS`` run to its end in a child process with the given rlimits; its
    exit code and combined output."""
    process = await start_fetchd(home, rc, *args, state_home=state_home, **limits)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Child(process.returncode, out.decode(errors="replace"))


def pop3_entry(port: int, user: str, password: str, sink: Sink) -> str:
    return (
        f"poll 127.0.0.1 via 127.0.0.1 proto pop3 port {port}\n"
        f'  user {user} password "{password}" is joe here smtphost 127.0.0.1/{sink.port}'
        " sslproto ''\n"
    )


@pytest.fixture
async def good_pop3() -> AsyncIterator[DemoPOP3Server]:
    server = DemoPOP3Server("good", "pw-good", list(GOOD))
    await server.start()
    yield server
    await server.stop()


def assert_clean(out: str) -> None:
    assert "Traceback" not in out, out
    assert "MemoryError" not in out, out


def imap_entry(name: str, port: int, user: str, password: str, sink: Sink) -> str:
    return (
        f"poll {name} via 127.0.0.1 proto imap port {port}\n"
        f'  user {user} password "{password}" is joe here smtphost 127.0.0.1/{sink.port}'
        " sslproto ''\n"
    )


async def test_an_endless_pop3_message_listed_at_10_12_octets_under_512_mb(
    tmp_path: Path, good_pop3: DemoPOP3Server
) -> None:
    """A POP3 server whose STAT and LIST say 10**12 octets and whose RETR never ends, to a
    fetchd limited to 512 MB of address space: the message streams to the MDA in bounded
    memory until the 512 MiB cap, then that account fails with a clear error naming it, its
    message is neither delivered nor deleted, and the next account's mail is delivered."""
    hostile = FakePOP3Server(
        [b"Subject: huge\r\n\r\nx\r\n"],
        "evil",
        "pw-evil",
        Faults(list_size=10**12, endless_retr=True),
    )
    delivered = tmp_path / "mda-out"
    async with hostile, running_mta() as sink:
        rc = pop3_entry(hostile.port, "evil", "pw-evil", sink).replace(
            "poll 127.0.0.1 via", "poll hostile via"
        ).replace(f"smtphost 127.0.0.1/{sink.port}", f"mda 'cat > {delivered}'") + pop3_entry(
            good_pop3.port, "good", "pw-good", sink
        ).replace("poll 127.0.0.1 via", "poll good via")
        child = await run_fetchd(tmp_path, rc, timeout=120, RLIMIT_AS=ADDRESS_SPACE)
    print(child.out)
    assert_clean(child.out)
    assert "evil@hostile" in child.out and "larger than 536870912 octets" in child.out
    assert len(sink.received) == 3
    assert len(hostile.messages) == 1 and not any(c.startswith("DELE") for c in hostile.commands)
    assert len(good_pop3.messages) == 0


@pytest.mark.parametrize("size", [2 << 30, 900 << 20], ids=["2GiB", "900MiB"])
@pytest.mark.parametrize("path", ["batched", "partial"])
async def test_a_huge_imap_literal_under_512_mb(
    tmp_path: Path, good_pop3: DemoPOP3Server, size: int, path: str
) -> None:
    """An IMAP server that answers FETCH with a 2 GiB literal (over the protocol's 1 GiB) or
    a 900 MiB one (under it, over what 512 MB of address space holds), for a small message
    (fetched in a batch) or a large one (fetched in parts), to a fetchd limited to 512 MB: a
    clear error for that account, its message kept, the next account delivered."""
    hostile = FakeIMAPServer(user="evil", password="pw-evil", huge_literal=size)
    body = b"x\r\n" if path == "batched" else (b"x" * 998 + b"\r\n") * 300
    hostile.add(b"Subject: huge\r\n\r\n" + body)
    await hostile.start()
    try:
        async with running_mta() as sink:
            rc = imap_entry("hostile", hostile.port, "evil", "pw-evil", sink) + pop3_entry(
                good_pop3.port, "good", "pw-good", sink
            ).replace("poll 127.0.0.1 via", "poll good via")
            child = await run_fetchd(tmp_path, rc, RLIMIT_AS=ADDRESS_SPACE)
    finally:
        await hostile.stop()
    print(child.out)
    assert_clean(child.out)
    assert f"evil@hostile: polling INBOX: server announced a literal of {size} octets" in child.out
    fetches = [c for c in hostile.received if b"BODY.PEEK[]" in c]
    assert fetches and all((b"<0." in c) == (path == "partial") for c in fetches), fetches
    assert len(sink.received) == 3
    assert len(hostile.messages) == 1 and "\\Deleted" not in hostile.messages[0].flags
    assert len(good_pop3.messages) == 0


def recorded(state_home: Path) -> dict[str, set[str]]:
    """The UIDs the UID store holds as delivered, by user; read without writing to it."""
    path = state_home / "fetchd" / "uids.sqlite3"
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute(
            "SELECT user, uid FROM delivered JOIN accounts ON accounts.id = account_id"
        ).fetchall()
    found: dict[str, set[str]] = {}
    for user, uid in rows:
        found.setdefault(user, set()).add(uid)
    return found


def assert_deleted_were_recorded(server: FakePOP3Server, mailbox: list[bytes], store: Path) -> None:
    deleted = {server.uid(m) for m in mailbox} - {server.uid(m) for m in server.messages}
    assert deleted <= recorded(store).get(server.user, set()), deleted


@dataclass
class FaultingSink(Sink):
    """An MTA that calls ``fault`` once it has accepted ``after`` messages."""

    fault: Callable[[], None] = lambda: None
    after: int = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if len(self.received) == self.after:
            self.fault()
        return reply


@dataclass
class Ext4:
    """A small ext4 on a loop device, mounted ``errors=remount-ro``; ``fail`` raises a file
    system error, and the kernel turns it read-only under every open file, as after a disk
    fault (tmpfs cannot: its remount is refused while files are open for writing)."""

    mountpoint: Path
    device: str

    def fail(self) -> None:
        trigger = Path("/sys/fs/ext4") / Path(self.device).name / "trigger_fs_error"
        trigger.write_text("1")


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[Ext4]:
    if os.geteuid() != 0:
        pytest.skip("mounting a loop device needs root")
    require_tool("mkfs.ext4", "e2fsprogs")
    image, mountpoint = tmp_path / "ext4.img", tmp_path / "ext4"
    mountpoint.mkdir()
    with image.open("wb") as file:
        file.truncate(4 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    subprocess.run(
        ["mount", "-o", "loop,errors=remount-ro", str(image), str(mountpoint)], check=True
    )
    try:
        device = subprocess.run(
            ["findmnt", "-n", "-o", "SOURCE", str(mountpoint)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        yield Ext4(mountpoint, device)
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)  # the loop device goes too


async def poll_two_into_a_broken_store(
    tmp_path: Path, store: Path, sink: FaultingSink
) -> tuple[Child, FakePOP3Server, FakePOP3Server]:
    first = FakePOP3Server(list(MAILBOX), "first", "pw-first")
    second = FakePOP3Server(list(GOOD), "second", "pw-second")
    async with first, second, running_mta(sink):
        rc = pop3_entry(first.port, "first", "pw-first", sink) + pop3_entry(
            second.port, "second", "pw-second", sink
        ).replace("poll 127.0.0.1 via", "poll localhost via")
        child = await run_fetchd(tmp_path, rc, state_home=store)
    print(child.out, child.code, len(sink.received))
    assert_clean(child.out)
    assert_deleted_were_recorded(first, MAILBOX, store)
    assert_deleted_were_recorded(second, GOOD, store)
    # The next account is tried, and stops as clearly: the store is the same file.
    assert re.search(r"^fetchd: second@localhost: (polling|locking): ", child.out, re.M)
    assert child.code == 23  # StateError's exit code
    return child, first, second


MAILBOX = [f"Subject: full {i}\r\n\r\n{'y' * 70}\r\n".encode() for i in range(60)]


@pytest.mark.parametrize("small_disk", ["160k"], indirect=True)
async def test_the_state_disk_fills_up_while_polling(small_disk: Path, tmp_path: Path) -> None:
    """The UID store on a 160 KiB tmpfs that fills up in the middle of a poll of 60 messages:
    the account stops with a clear error naming it and the store, every message deleted on the
    server was recorded first, and the next account is tried (it fails alike, so it deletes
    nothing either)."""
    sink = FaultingSink()
    child, _, _ = await poll_two_into_a_broken_store(tmp_path, small_disk, sink)
    assert "malformed" not in child.out
    assert "first@127.0.0.1: polling: UID store" in child.out
    assert "cannot record 1 delivered UID(s) of first@127.0.0.1: database or disk is full" in (
        child.out
    )
    assert 10 <= len(sink.received) < 60


async def test_the_state_disk_turns_read_only_while_polling(ext4: Ext4, tmp_path: Path) -> None:
    """The UID store's file system turns read-only after 10 deliveries (an ext4 error with
    errors=remount-ro): the account stops with a clear error naming it and the store, what
    was deleted was recorded, and the next account is tried and deletes nothing."""
    sink = FaultingSink(fault=ext4.fail, after=10)
    child, _, _ = await poll_two_into_a_broken_store(tmp_path, ext4.mountpoint, sink)
    assert "first@127.0.0.1: polling: UID store" in child.out
    assert 10 <= len(sink.received) <= 12


async def test_a_state_disk_full_from_the_start(small_disk: Path, tmp_path: Path) -> None:
    """A 64 KiB tmpfs has room for the new store's file but not for its WAL: the store is
    created whole or the error says the disk is full (it used to leave an empty file that
    every later run called "malformed, restore it from a backup"), and a lock file whose pid
    cannot be written is still a lock (it was an internal error that ended the run)."""
    sink = FaultingSink()
    child, _, _ = await poll_two_into_a_broken_store(tmp_path, small_disk, sink)
    assert "malformed" not in child.out and "internal error" not in child.out
    assert "first@127.0.0.1: polling: UID store" in child.out
    assert "database or disk is full" in child.out
    assert not sink.received  # no store, no delivery: nothing could be recorded


async def test_a_daemon_with_100_accounts_under_64_descriptors(tmp_path: Path) -> None:
    """One daemon (``set daemon``) polling 100 POP3 accounts on 100 servers with
    RLIMIT_NOFILE 64: every message is delivered once and deleted, no account fails for
    want of a descriptor, and SIGTERM ends it with exit 0."""
    servers = [
        DemoPOP3Server(f"u{i}", f"pw-{i}", [f"Subject: n{i}\r\n\r\nbody {i}\r\n".encode()])
        for i in range(100)
    ]
    for server in servers:
        await server.start()
    try:
        async with running_mta() as sink:
            rc = "set daemon 3600\n" + "".join(
                pop3_entry(s.port, f"u{i}", f"pw-{i}", sink).replace(
                    "poll 127.0.0.1 via", f"poll h{i} via"
                )
                for i, s in enumerate(servers)
            )
            process = await start_fetchd(tmp_path, rc, private_run=True, RLIMIT_NOFILE=64)
            try:
                deadline = time.monotonic() + 30
                while any(s.messages for s in servers) and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
            finally:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                out, _ = await asyncio.wait_for(process.communicate(), 30)
    finally:
        for server in servers:
            await server.stop()
    text = out.decode(errors="replace")
    print(text)
    assert_clean(text)
    assert "Too many open files" not in text and "fetchd: u" not in text
    assert process.returncode == 0
    assert sorted(sink.subjects()) == sorted(f"Subject: n{i}" for i in range(100))
    assert not any(s.messages for s in servers)


FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


async def fetchd_cli(home: Path, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fetchd",
        *args,
        env=child_environment(home),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_the_wall_clock_stepped_back_and_forward_in_daemon_mode(tmp_path: Path) -> None:
    """A daemon polling every second while its wall clock is stepped an hour back, then a day
    forward (libfaketime reading a file, the monotonic clock left alone, as an NTP step does):
    it keeps polling about once a second across both steps (no stall, no tight loop),
    delivers mail that arrives after each step, and its uptime stays true."""
    if not os.path.exists(FAKETIME):
        if in_ci():
            pytest.fail("libfaketime is missing (.ci/run installs faketime)")
        pytest.skip("libfaketime is missing (apt-get install faketime)")
    clock = tmp_path / "faketime"
    clock.write_text("+0\n")
    skewed = {
        "LD_PRELOAD": FAKETIME,
        "FAKETIME_TIMESTAMP_FILE": str(clock),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_DONT_RESET": "1",
    }
    server = FakePOP3Server([b"Subject: before\r\n\r\nx\r\n"], "clock", "pw-clock")
    polls: list[float] = []  # monotonic time of each login, seen from here
    phases: list[int] = []  # polls in each phase: before, after the step back, after forward
    async with server, running_mta() as sink:
        rc = "set daemon 1\n" + pop3_entry(server.port, "clock", "pw-clock", sink)
        process = await start_fetchd(tmp_path, rc, env=skewed, private_run=True)
        began = time.monotonic()
        try:
            for step, mail in ((None, None), ("-1h", b"back"), ("+1d", b"forward")):
                if step is not None:
                    clock.write_text(step + "\n")
                    server.messages.append(b"Subject: %s\r\n\r\nx\r\n" % mail)
                before = len(polls)
                phase_end = time.monotonic() + 5
                while time.monotonic() < phase_end and process.returncode is None:
                    logins = server.commands.count("USER clock")
                    polls.extend([time.monotonic()] * (logins - len(polls)))
                    await asyncio.sleep(0.02)
                phases.append(len(polls) - before)
            code, status = await fetchd_cli(tmp_path, "--status", "--json")
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(process.communicate(), 30)
    text = out.decode(errors="replace")
    gaps = [round(b - a, 2) for a, b in zip([began, *polls], polls, strict=False)]
    print(text, phases, gaps)
    assert_clean(text)
    assert process.returncode == 0
    assert sorted(sink.subjects()) == ["Subject: back", "Subject: before", "Subject: forward"]
    # A poll a second plus the poll's own time (libfaketime reads its file at every clock
    # call): polls go on in each phase, no gap is a stall, and a tight loop would be hundreds.
    assert min(phases) >= 2 and max(gaps) < 3.5 and len(polls) <= 20, (phases, gaps)
    assert code == 0, status
    assert 0 <= json.loads(status)["daemon"]["uptime"] < 60
