"""A real fetchd daemon process: polling, --poll, --status, --quit, signals, reload, the lock,
and the control socket's permissions. Servers run in the test's event loop (demo POP3 server,
aiosmtpd), so they outlive the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fetchd.daemon.supervisor import RC_CHECK_SECONDS
from fetchd.demo.pop3server import DemoPOP3Server
from tests.support.fetchmail import fetchmail_binary, oracle_user
from tests.support.mta import Sink, running_mta
from tests.support.tools import in_ci, require_tool

SECRET = "daemon-Secret-9"
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ from Python 3.10 on Linux; spelled out for mypy
MESSAGES = [f"Subject: m{i}\r\n\r\nbody {i}\r\n".encode() for i in range(5)]


@dataclass
class Setup:
    home: Path
    pop: DemoPOP3Server
    sink: Sink
    rc: Path
    run_dir: Path | None = None  # XDG_RUNTIME_DIR; default HOME/run
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "XDG_STATE_HOME": str(self.home / "state"),
            "XDG_RUNTIME_DIR": str(self.run_dir or self.home / "run"),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            # Never the machine's own syslog: a test that wants one binds this path.
            "FETCHD_SYSLOG_SOCKET": str(self.home / "syslog.sock"),
        } | self.extra_env

    def write_rc(self, extra: str = "") -> None:
        self.rc.write_text(
            f"set daemon 3600\npoll 127.0.0.1 proto pop3 port {self.pop.port}\n"
            f'  user demo password "{SECRET}" is joe here smtphost 127.0.0.1/{self.sink.port}'
            f" sslproto '' {extra}\n"  # the demo server speaks no TLS
        )
        self.rc.chmod(0o600)

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fetchd",
            "-N",
            "-f",
            str(self.rc),
            *args,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )

    async def cli(self, *args: str, cwd: Path | None = None) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fetchd",
            *args,
            env=self.env,
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode is not None
        return process.returncode, out.decode()


async def until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def status_until(setup: Setup, condition: object, timeout: float = 10.0) -> str:
    """``fetchd --status`` until its table shows what ``condition`` wants: a poll's figures
    are filled in when it ends, a moment after its last delivery."""
    deadline = time.monotonic() + timeout
    while True:
        code, out = await setup.cli("--status")
        assert code == 0, out
        if condition(out):  # type: ignore[operator]
            return out
        assert time.monotonic() < deadline, f"--status never showed it:\n{out}"
        await asyncio.sleep(0.1)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    pop = DemoPOP3Server("demo", SECRET, list(MESSAGES))
    await pop.start()
    async with running_mta() as sink:
        setup = Setup(tmp_path, pop, sink, tmp_path / "fetchmailrc")
        setup.write_rc()
        yield setup
    await pop.stop()


async def read_until(process: asyncio.subprocess.Process, marker: str, timeout: float = 20) -> str:
    """The daemon's output up to and including the first line holding ``marker``; pass it on
    to ``stop``'s output, which holds only what came after."""
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(timeout):
        while not lines or marker not in lines[-1]:
            line = await process.stdout.readline()
            assert line, f"the daemon ended before printing {marker!r}: {''.join(lines)}"
            lines.append(line.decode())
    return "".join(lines)


async def stop(process: asyncio.subprocess.Process) -> str:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(process.communicate(), 20)
    return out.decode()


async def test_poll_status_wake_and_quit(setup: Setup) -> None:
    daemon = await setup.start()
    try:
        await until(lambda: len(setup.sink.received) == 5)
        await until(lambda: (setup.home / "run" / "fetchd" / "control.sock").exists())
        out = await status_until(setup, lambda out: "demo@127.0.0.1" in out and " 5 " in out)
        setup.pop.messages.append(b"Subject: late\r\n\r\nlate\r\n")
        code, out = await setup.cli("--poll")
        assert code == 0 and "awakened" in out
        await until(lambda: len(setup.sink.received) == 6, timeout=5)
        code, out = await setup.cli("--quit")
        assert code == 0, out
        assert await asyncio.wait_for(daemon.wait(), 10) == 0
        assert not (setup.home / "run" / "fetchd" / "control.sock").exists()
        code, out = await setup.cli("--quit")
        assert code == 8 and "no other fetchd is running" in out
    finally:
        await stop(daemon)
        if setup.run_dir is not None:
            shutil.rmtree(setup.run_dir, ignore_errors=True)


async def test_running_fetchd_again_wakes_the_daemon(setup: Setup) -> None:
    daemon = await setup.start()
    try:
        await until(lambda: len(setup.sink.received) == 5)
        await until(lambda: (setup.home / "run" / "fetchd" / "control.sock").exists())
        setup.pop.messages.append(b"Subject: late\r\n\r\nlate\r\n")
        # fetchmail's behaviour: `fetchmail` with no options while its daemon runs wakes it.
        shutil.copy(setup.rc, setup.home / ".fetchmailrc")
        (setup.home / ".fetchmailrc").chmod(0o600)
        code, out = await setup.cli()
        assert code == 0 and "awakened" in out
        await until(lambda: len(setup.sink.received) == 6, timeout=5)
    finally:
        await stop(daemon)
        if setup.run_dir is not None:
            shutil.rmtree(setup.run_dir, ignore_errors=True)


async def test_a_second_daemon_is_refused_with_exit_8(setup: Setup) -> None:
    daemon = await setup.start()
    try:
        await until(lambda: (setup.home / "run" / "fetchd" / "control.sock").exists())
        code, out = await setup.cli("-N", "-f", str(setup.rc))
        assert code == 8 and "another fetchd daemon is running" in out
    finally:
        await stop(daemon)
        if setup.run_dir is not None:
            shutil.rmtree(setup.run_dir, ignore_errors=True)


async def test_sigterm_stops_cleanly_and_sighup_reload_survives_a_broken_file(
    setup: Setup,
) -> None:
    daemon = await setup.start()
    await until(lambda: len(setup.sink.received) == 5)
    await until(lambda: (setup.home / "run" / "fetchd" / "control.sock").exists())
    setup.rc.write_text("poll 127.0.0.1 user\n  aka x\n")  # broken
    daemon.send_signal(signal.SIGHUP)
    output = await read_until(daemon, "reload failed, keeping the running configuration")
    code, out = await setup.cli("--status")
    assert code == 0 and "demo@127.0.0.1" in out  # still serving with the old configuration
    setup.write_rc()  # fixed again: reloaded, and the status table is a new one
    daemon.send_signal(signal.SIGHUP)
    output += await read_until(daemon, f"reloaded {setup.rc}")
    output += await stop(daemon)
    assert daemon.returncode == 0
    assert "reload failed, keeping the running configuration" in output
    assert f"reloaded {setup.rc}" in output
    assert SECRET not in output
    assert not (setup.home / "run" / "fetchd" / "control.sock").exists()


async def test_a_broken_account_does_not_hold_up_the_others(setup: Setup) -> None:
    setup.rc.write_text(
        "set daemon 3600\n"
        "poll 127.0.0.1 proto pop3 port 1 user demo password x is joe here\n"
        f"poll wrongpw via 127.0.0.1 proto pop3 port {setup.pop.port}\n"
        "  user demo password not-the-password is joe here sslproto ''\n"
        f"poll localhost proto pop3 port {setup.pop.port}\n"
        f'  user demo password "{SECRET}" is joe here smtphost 127.0.0.1/{setup.sink.port}\n'
        "  sslproto ''\n"
    )
    daemon = await setup.start()
    try:
        await until(lambda: len(setup.sink.received) == 5)
        accounts = ("demo@127.0.0.1", "demo@wrongpw", "demo@localhost")

        def all_polled(out: str) -> bool:
            rows = {line.split()[0]: line for line in out.splitlines()[2:]}
            return all(account in rows and "(" in rows[account] for account in accounts)

        out = await status_until(setup, all_polled)
        rows = {line.split()[0]: line for line in out.splitlines()[2:]}
        assert "cannot connect" in rows["demo@127.0.0.1"]
        assert "auth failed (3)" in rows["demo@wrongpw"]  # fetchmail's exit 3
        assert "mail (0)" in rows["demo@localhost"] and "not-the-password" not in out
    finally:
        await stop(daemon)
        if setup.run_dir is not None:
            shutil.rmtree(setup.run_dir, ignore_errors=True)


async def test_the_control_socket_is_private_and_checks_the_peer(setup: Setup) -> None:
    # A runtime directory another user could reach, if its mode allowed (pytest's is private).
    setup.run_dir = Path(tempfile.mkdtemp(prefix="fetchd-run-"))
    setup.run_dir.chmod(0o755)
    daemon = await setup.start()
    try:
        directory = setup.run_dir / "fetchd"
        await until(lambda: (directory / "control.sock").exists())
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert stat.S_IMODE((directory / "control.sock").stat().st_mode) == 0o600
        if os.geteuid() != 0:
            pytest.skip("the peer check needs root, to connect as another user")
        require_tool("runuser", "util-linux")  # to connect as another user
        stranger = os.environ.get("FETCHD_TEST_USER", "fmtest")
        try:
            pwd.getpwnam(stranger)
        except KeyError:
            if in_ci():
                pytest.fail(f"user {stranger} is missing under CI (.ci/run creates it)")
            pytest.skip(f"the peer check needs the user {stranger!r} (FETCHD_TEST_USER)")
        # Open the way for another user on purpose: the peer check must still refuse it.
        directory.chmod(0o755)
        (directory / "control.sock").chmod(0o666)
        probe = (
            "import socket; s = socket.socket(socket.AF_UNIX); "
            f"s.connect({str(directory / 'control.sock')!r}); "
            # The refusal comes before any request is read: read it first, then try to send.
            "print(s.recv(200).decode(), flush=True); "
            's.sendall(b\'{"v": 1, "cmd": "quit"}\\n\')'
        )
        result = subprocess.run(
            ["runuser", "-u", stranger, "--", "/usr/bin/python3", "-c", probe],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert "permission denied" in result.stdout, result.stderr
        assert daemon.returncode is None  # not stopped by the stranger
    finally:
        await stop(daemon)
        if setup.run_dir is not None:
            shutil.rmtree(setup.run_dir, ignore_errors=True)


async def test_sd_notify_ready_status_watchdog_reload_and_stopping(setup: Setup) -> None:
    """What systemd sees of a ``Type=notify`` service, received on a datagram socket."""
    path = setup.home / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.setblocking(False)
    setup.extra_env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "500000"}
    messages: list[dict[str, str]] = []

    async def receive() -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(receiver, 4096)
            messages.append(dict(line.split("=", 1) for line in data.decode().split("\n")))

    receiving = asyncio.create_task(receive())
    daemon = await setup.start()
    try:
        await until(lambda: any("READY" in m for m in messages))
        ready = next(m for m in messages if "READY" in m)
        assert ready["MAINPID"] == str(daemon.pid)
        assert "polling every 3600 s" in ready["STATUS"]
        await until(lambda: any("5 messages fetched" in m.get("STATUS", "") for m in messages))
        await until(lambda: sum("WATCHDOG" in m for m in messages) >= 3, timeout=5)
        daemon.send_signal(signal.SIGHUP)
        await until(lambda: any("RELOADING" in m for m in messages))
        reloading = next(i for i, m in enumerate(messages) if "RELOADING" in m)
        assert int(messages[reloading]["MONOTONIC_USEC"]) > 0
        await until(lambda: any("READY" in m for m in messages[reloading:]))
        code, out = await setup.cli("--quit")
        assert code == 0, out
        assert await asyncio.wait_for(daemon.wait(), 10) == 0
        await until(lambda: any("STOPPING" in m for m in messages))
        assert all(SECRET not in value for m in messages for value in m.values())
    finally:
        receiving.cancel()
        receiver.close()
        await stop(daemon)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_detached_daemon_writes_its_logfile_and_pidfile_and_quits(setup: Setup) -> None:
    logfile = setup.home / "fetchd.log"
    logfile.touch()  # an existing logfile is appended to (a missing one is created 0600)
    pidfile = setup.home / "fetchmail.pid"
    setup.rc.write_text(f"set logfile {logfile}\nset pidfile {pidfile}\n" + setup.rc.read_text())
    code, out = await setup.cli("-f", str(setup.rc))  # no -N: detaches, parent exits 0
    assert code == 0, out
    lock = setup.home / "run" / "fetchd" / "lock"
    await until(lambda: len(setup.sink.received) == 5)
    daemon_pid = int(lock.read_text())
    try:
        assert _alive(daemon_pid)
        assert pidfile.read_text() == f"{daemon_pid}\n3600\n"  # fetchmail's: pid, interval
        code, out = await setup.cli("--quit")
        assert code == 0 and f"pid {daemon_pid}" in out, out
        await until(lambda: not _alive(daemon_pid))
        assert not pidfile.exists()
    finally:
        if _alive(daemon_pid):
            os.kill(daemon_pid, signal.SIGKILL)
    log = logfile.read_text()
    assert "starting fetchd" in log and "reading message demo@127.0.0.1:5 of 5" in log
    assert "fetchd daemon stopped" in log
    assert SECRET not in log


async def test_a_logfile_that_cannot_be_opened_is_reported_before_detaching(
    setup: Setup,
) -> None:
    logfile = setup.home / "logdir"
    logfile.mkdir()
    setup.rc.write_text(f"set logfile {logfile}\n" + setup.rc.read_text())
    code, out = await setup.cli("-f", str(setup.rc))
    assert code != 0
    assert f"cannot open logfile {logfile}: Is a directory" in out
    assert not setup.sink.received


async def test_an_edited_rc_file_takes_effect_without_a_signal(setup: Setup) -> None:
    """fetchmail restarts itself when its rc file changes; we reload it, within seconds."""
    daemon = await setup.start()
    try:
        await until(lambda: len(setup.sink.received) == 5)
        async with running_mta() as other:
            setup.pop.messages.append(b"Subject: after the edit\r\n\r\nnew\r\n")
            setup.rc.write_text(
                setup.rc.read_text().replace(f"/{setup.sink.port}", f"/{other.port}")
            )
            # The watcher looks every few seconds; the reloaded entry polls at once.
            await until(lambda: len(other.received) == 1, timeout=RC_CHECK_SECONDS + 10)
        assert len(setup.sink.received) == 5
    finally:
        output = await stop(daemon)
    assert f"{setup.rc} changed" in output and f"reloaded {setup.rc}" in output


async def test_sigusr1_wakes_the_daemon_for_a_poll(setup: Setup) -> None:
    daemon = await setup.start()
    try:
        await until(lambda: len(setup.sink.received) == 5)
        setup.pop.messages.append(b"Subject: woken\r\n\r\nwoken\r\n")
        daemon.send_signal(signal.SIGUSR1)
        await until(lambda: len(setup.sink.received) == 6, timeout=5)
    finally:
        await stop(daemon)


async def test_under_systemd_the_lines_are_key_value(setup: Setup) -> None:
    setup.extra_env = {"JOURNAL_STREAM": "8:12345", "INVOCATION_ID": "0123456789abcdef"}
    daemon = await setup.start()
    output = ""
    try:
        await until(lambda: len(setup.sink.received) == 5)
        # The summary follows the end of the poll (QUIT): a stop before that abandons the poll.
        output = await read_until(daemon, "poll.summary ")
    finally:
        output += await stop(daemon)
    lines = output.splitlines()
    assert any(line.startswith('daemon.start level=info msg="starting fetchd') for line in lines)
    # One summary line per poll per account, with the account as a key.
    summaries = [line for line in lines if line.startswith("poll.summary ")]
    assert len(summaries) == 1, output
    assert "outcome=0 delivered=5 octets=115 " in summaries[0]
    assert "account=demo@127.0.0.1" in summaries[0]
    assert all(line.split(" ", 1)[0].count(".") == 1 for line in lines), output
    assert SECRET not in output


async def _start_on_pipe(setup: Setup, *args: str) -> tuple[asyncio.subprocess.Process, int]:
    """A daemon whose stdout and stderr are one pipe; the read end is returned to the test."""
    read_end, write_end = os.pipe()
    try:
        daemon = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fetchd",
            "-N",
            "-f",
            str(setup.rc),
            *args,
            env=setup.env,
            stdout=write_end,
            stderr=write_end,
        )
    finally:
        os.close(write_end)
    return daemon, read_end


async def _edit_rc_three_times(setup: Setup, port: int) -> None:
    """Each edit is a reload and a line (or more) to the broken output."""
    for round_ in range(3):
        setup.rc.write_text(
            setup.rc.read_text().replace(f"/{setup.sink.port}", f"/{port}") + f"# edit {round_}\n"
        )
        await asyncio.sleep(0.05)
        os.utime(setup.rc, (time.time() + round_ + 1, time.time() + round_ + 1))


async def test_a_closed_output_pipe_stops_neither_polls_nor_sigterm(setup: Setup) -> None:
    """Issue 19: the reader of the daemon's output goes away; reloads, polls and SIGTERM carry
    on as if the output were a file."""
    daemon, read_end = await _start_on_pipe(setup, "-v", "-d", "1")
    try:
        await until(lambda: len(setup.sink.received) == 5)
        os.close(read_end)  # the reader (tee, a log collector) is gone: writes now fail
        async with running_mta() as other:
            await _edit_rc_three_times(setup, other.port)
            daemon.send_signal(signal.SIGHUP)  # not waiting for the watcher
            await asyncio.sleep(1)
            for i in range(3):
                setup.pop.messages.append(f"Subject: after {i}\r\n\r\nnew\r\n".encode())
                await until(lambda i=i: len(other.received) == i + 1, timeout=RC_CHECK_SECONDS + 15)
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(daemon.wait(), 5) == 0
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await daemon.wait()


def _pipe_fill(read_end: int) -> int:
    """How many bytes wait in the pipe, unread."""
    return int.from_bytes(fcntl.ioctl(read_end, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)


async def test_a_reader_that_stops_reading_holds_up_neither_status_nor_mail(setup: Setup) -> None:
    """Issue 19: a stdout that blocks (journald stalled, a paused terminal) does not block the
    daemon: ``--status`` answers, mail is delivered, SIGTERM ends it."""
    daemon, read_end = await _start_on_pipe(setup, "-v", "-d", "1")
    try:
        fcntl.fcntl(read_end, F_SETPIPE_SZ, 4096)  # one page: full after a few polls
        await until(lambda: len(setup.sink.received) == 5)
        await until(lambda: _pipe_fill(read_end) > 3500, timeout=60)  # never read
        await asyncio.sleep(1.5)  # a poll or two more, each writing into the full pipe
        code, out = await setup.cli("--status")
        assert code == 0 and "demo@127.0.0.1" in out, out
        setup.pop.messages.append(b"Subject: while blocked\r\n\r\nnew\r\n")
        await until(lambda: len(setup.sink.received) == 6, timeout=15)
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(daemon.wait(), 10) == 0
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await daemon.wait()
        os.close(read_end)


async def test_a_log_file_on_a_full_disk_stops_nothing(setup: Setup, small_disk: Path) -> None:
    """Issue 19: a detached daemon whose log file cannot grow (ENOSPC) polls, reloads and stops
    as one whose disk has room, and says once, on syslog, that its log is gone."""
    logfile = small_disk / "fetchd.log"
    logfile.touch()
    filler = os.open(small_disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    with contextlib.suppress(OSError):
        while True:
            os.write(filler, b"x" * 4096)
    os.close(filler)
    syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    syslog.bind(setup.env["FETCHD_SYSLOG_SOCKET"])
    syslog.setblocking(False)
    setup.rc.write_text(f"set logfile {logfile}\n" + setup.rc.read_text())
    code, out = await setup.cli("-v", "-d", "1", "-f", str(setup.rc))  # detaches
    assert code == 0, out
    await until(lambda: len(setup.sink.received) == 5)
    daemon_pid = int((setup.home / "run" / "fetchd" / "lock").read_text())
    try:
        async with running_mta() as other:
            await _edit_rc_three_times(setup, other.port)
            os.kill(daemon_pid, signal.SIGHUP)  # not waiting for the watcher
            await asyncio.sleep(1)
            for i in range(3):
                setup.pop.messages.append(f"Subject: after {i}\r\n\r\nnew\r\n".encode())
                await until(lambda i=i: len(other.received) == i + 1, timeout=RC_CHECK_SECONDS + 15)
        os.kill(daemon_pid, signal.SIGTERM)
        await until(lambda: not _alive(daemon_pid), timeout=5)
    finally:
        if _alive(daemon_pid):
            os.kill(daemon_pid, signal.SIGKILL)
    records = []
    with contextlib.suppress(BlockingIOError):
        while True:
            records.append(syslog.recv(2048).decode())
    syslog.close()
    assert any("failed (No space left on device); its log lines are dropped" in r for r in records)
    assert logfile.stat().st_size == 0


async def test_a_detached_daemon_without_a_logfile_logs_to_syslog(setup: Setup) -> None:
    """Issue 10 item 7: no logfile and no ``set syslog``: syslog, not the void, and the
    terminal is told so before the daemon detaches."""
    syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    syslog.bind(setup.env["FETCHD_SYSLOG_SOCKET"])
    syslog.setblocking(False)
    records: list[str] = []

    def received(text: str) -> bool:
        with contextlib.suppress(BlockingIOError):
            while True:
                records.append(syslog.recv(2048).decode())
        return any(text in record for record in records)

    try:
        code, out = await setup.cli("-f", str(setup.rc))  # no -N: detaches
        assert code == 0, out
        assert out == "fetchd: no logfile set: the daemon logs to syslog (facility mail)\n"
        await until(lambda: len(setup.sink.received) == 5)
        await until(lambda: received("reading message demo@127.0.0.1:5 of 5"))
        code, out = await setup.cli("--quit")
        assert code == 0, out
        await until(lambda: received("fetchd daemon stopped"))
    finally:
        syslog.close()
        lock = setup.home / "run" / "fetchd" / "lock"
        with contextlib.suppress(OSError, ValueError):
            pid = int(lock.read_text())
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert any(r.startswith("<22>") and "starting fetchd" in r for r in records), records
    assert all(SECRET not in r for r in records)


async def test_a_missing_logfile_is_created_private(setup: Setup) -> None:
    """Issue 10 item 7: ``-L FILE`` that does not exist yet is created, mode 0600."""
    logfile = setup.home / "new.log"
    code, out = await setup.cli("-L", str(logfile), "-f", str(setup.rc))  # detaches
    assert code == 0, out
    await until(lambda: len(setup.sink.received) == 5)
    daemon_pid = int((setup.home / "run" / "fetchd" / "lock").read_text())
    try:
        code, out = await setup.cli("--quit")
        assert code == 0, out
        await until(lambda: not _alive(daemon_pid))
    finally:
        if _alive(daemon_pid):
            os.kill(daemon_pid, signal.SIGKILL)
    assert stat.S_IMODE(logfile.stat().st_mode) == 0o600
    assert "fetchd daemon stopped" in logfile.read_text()


# --- issue 10: reloads of a detached daemon, commands while it runs, a running fetchmail -----

OTHER_SECRET = "other-Secret-7"


def _entry(name: str, port: int, user: str, secret: str, sink: Sink) -> str:
    return (
        f"poll {name} via 127.0.0.1 proto pop3 port {port}\n"
        f'  user {user} password "{secret}" is joe here smtphost 127.0.0.1/{sink.port}'
        " sslproto ''\n"  # the demo server speaks no TLS
    )


async def _daemon_pid(setup: Setup) -> int:
    lock = setup.home / "run" / "fetchd" / "lock"
    await until(lambda: lock.exists() and lock.read_text().strip().isdigit())
    await until(lambda: (setup.home / "run" / "fetchd" / "control.sock").exists())
    return int(lock.read_text())


async def test_a_detached_daemon_with_a_relative_rc_path_reloads_by_sighup_and_by_edit(
    setup: Setup,
) -> None:
    """``fetchd -f my.rc`` detaches into ``/``; a SIGHUP and an edit of the file still reload
    it, and the account each adds gets its mail delivered."""
    second = DemoPOP3Server("second", OTHER_SECRET, [b"Subject: second\r\n\r\n2\r\n"])
    third = DemoPOP3Server("third", OTHER_SECRET, [b"Subject: third\r\n\r\n3\r\n"])
    await second.start()
    await third.start()
    (setup.home / "fetchd.log").touch()
    # Every path relative; no -N: it detaches and works in /.
    relative = ("-f", setup.rc.name, "-L", "fetchd.log", "--pidfile", "fetchd.pid")
    code, out = await setup.cli(*relative, cwd=setup.home)
    assert code == 0, out
    pid = await _daemon_pid(setup)
    try:
        await until(lambda: len(setup.sink.received) == 5)
        with setup.rc.open("a") as rc:
            rc.write(_entry("second", second.port, "second", OTHER_SECRET, setup.sink))
        os.kill(pid, signal.SIGHUP)
        await until(lambda: len(setup.sink.received) == 6)
        assert b"Subject: second" in setup.sink.received[-1]
        with setup.rc.open("a") as rc:  # no signal: the watcher sees the edit
            rc.write(_entry("third", third.port, "third", OTHER_SECRET, setup.sink))
        await until(lambda: len(setup.sink.received) == 7, timeout=RC_CHECK_SECONDS + 15)
        assert b"Subject: third" in setup.sink.received[-1]
        out = await status_until(setup, lambda out: "third@third" in out)
        assert f"rc file {setup.rc}" in out and f"pid {pid}" in out
        assert (setup.home / "fetchd.pid").read_text().split()[0] == str(pid)
        code, out = await setup.cli("--quit")
        assert code == 0, out
        await until(lambda: not _alive(pid))
        assert not (setup.home / "fetchd.pid").exists()
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        await second.stop()
        await third.stop()
    log = (setup.home / "fetchd.log").read_text()
    assert log.count(f"reloaded {setup.rc}") == 2 and f"{setup.rc} changed" in log, log
    assert "reload failed" not in log and OTHER_SECRET not in log


async def test_a_failed_reload_is_in_status_and_a_plain_fetchd_still_wakes(setup: Setup) -> None:
    """A broken file keeps the running configuration and says so in ``--status``; a plain
    ``fetchd`` still wakes the daemon; a later good file without the account drops its row."""
    second = DemoPOP3Server("second", OTHER_SECRET, [])
    await second.start()
    setup.rc.write_text(
        setup.rc.read_text() + _entry("second", second.port, "second", OTHER_SECRET, setup.sink)
    )
    daemon = await setup.start()
    try:
        await until(lambda: len(setup.sink.received) == 5)
        await status_until(setup, lambda out: "no mail (1)" in out and "mail (0)" in out)
        good = setup.rc.read_text()
        setup.rc.write_text("poll 127.0.0.1 user\n  aka x\n")  # broken
        daemon.send_signal(signal.SIGHUP)
        out = await status_until(setup, lambda out: "reload failed at " in out)
        assert f"{setup.rc}:" in out and "still running the previous configuration" in out
        assert "demo@127.0.0.1" in out and "second@second" in out
        code, out = await setup.cli("--status", "--json")
        assert code == 0, out
        document = json.loads(out)
        assert document["daemon"]["reload_error"].startswith(f"{setup.rc}:")
        assert document["daemon"]["reload_failed_at"] <= time.time()
        setup.pop.messages.append(b"Subject: late\r\n\r\nlate\r\n")
        code, out = await setup.cli()  # plain: wakes it, with the old configuration
        assert code == 0 and "awakened" in out, out
        await until(lambda: len(setup.sink.received) == 6)
        setup.rc.write_text(good.split("poll second")[0])  # good again, without "second"
        daemon.send_signal(signal.SIGHUP)
        out = await status_until(setup, lambda out: "second@second" not in out)
        assert "reload failed" not in out
        code, out = await setup.cli("--status", "--json")
        assert json.loads(out)["daemon"]["reload_error"] is None
    finally:
        output = await stop(daemon)
        await second.stop()
    assert "reload failed, keeping the running configuration" in output
    assert SECRET not in output and OTHER_SECRET not in output


async def test_status_json_gives_the_daemon_and_outcomes_for_scripts(setup: Setup) -> None:
    daemon = await setup.start()
    try:
        await until(lambda: len(setup.sink.received) == 5)
        await status_until(setup, lambda out: "mail (0)" in out)
        code, out = await setup.cli("--status", "--json")
        assert code == 0, out
        document = json.loads(out)
        info = document["daemon"]
        assert info["pid"] == daemon.pid and info["rcfile"] == str(setup.rc)
        assert info["version"] and 0 <= info["uptime"] < 600
        [account] = document["accounts"]
        assert account["account"] == "demo@127.0.0.1"
        assert (account["outcome"], account["outcome_text"], account["messages"]) == (0, "mail", 5)
        code, out = await setup.cli("--status")
        assert f"daemon, pid {daemon.pid}, up " in out.splitlines()[0]
        code, out = await setup.cli("--json")
        assert code == 5 and "--json goes with --status" in out
    finally:
        await stop(daemon)


async def test_commands_while_a_daemon_runs_are_fetchmails(setup: Setup) -> None:
    """-V, --configdump, --help, --version print; options that would poll are refused (exit
    8); --poll, --status and a plain fetchd talk to the daemon."""
    daemon = await setup.start()
    try:
        await until(lambda: len(setup.sink.received) == 5)
        await until(lambda: (setup.home / "run" / "fetchd" / "control.sock").exists())
        shutil.copy(setup.rc, setup.home / ".fetchmailrc")
        (setup.home / ".fetchmailrc").chmod(0o600)
        for args in (("-V",), ("--version",), ("-V", "-f", str(setup.rc))):
            code, out = await setup.cli(*args)
            assert code == 0 and "This is fetchd release" in out and "awakened" not in out, out
        for args in (("--configdump",), ("--configdump", "-f", str(setup.rc))):
            code, out = await setup.cli(*args)
            assert code == 0 and "fetchmailrc" in out and "awakened" not in out, out
        code, out = await setup.cli("--help")
        assert code == 0 and "usage: fetchd" in out and "awakened" not in out
        refused = (("-k",), ("-c",), ("-a",), ("-f", str(setup.rc)), ("-d", "60"), ("127.0.0.1",))
        for args in refused:
            code, out = await setup.cli(*args)
            assert code == 8, (args, out)
            assert f"another fetchd daemon is running (pid {daemon.pid})" in out
            assert "can't accept options while a background fetchd is running" in out
            assert "use --poll, --quit or --status" in out
        assert len(setup.sink.received) == 5  # none of them polled
        code, out = await setup.cli("--status")
        assert code == 0 and "demo@127.0.0.1" in out
        setup.pop.messages.append(b"Subject: late\r\n\r\nlate\r\n")
        code, out = await setup.cli("--poll")
        assert code == 0 and "awakened" in out
        await until(lambda: len(setup.sink.received) == 6)
        code, out = await setup.cli("--quit")
        assert code == 0, out
        assert await asyncio.wait_for(daemon.wait(), 10) == 0
    finally:
        await stop(daemon)


@pytest.fixture
def fetchmail_daemon() -> Iterator[tuple[int, Path]]:
    """The real ``fetchmail -d`` running as the test user, with its pid file in its
    FETCHMAILHOME: (its pid, that directory)."""
    binary = fetchmail_binary()
    user = oracle_user()
    home = Path(tempfile.mkdtemp(prefix="fetchd-fm-"))
    rc = home / "fetchmailrc"
    rc.write_text("set daemon 3600\npoll 127.0.0.1 proto pop3 port 1 user x password y\n")
    rc.chmod(0o600)
    home.chmod(0o700)
    command = [binary, "-N"]
    if os.geteuid() == 0:
        os.chown(home, user.pw_uid, user.pw_gid)
        os.chown(rc, user.pw_uid, user.pw_gid)
        command = ["runuser", "-u", user.pw_name, "--", "env", f"HOME={home}", *command]
    env = {"HOME": str(home), "FETCHMAILHOME": str(home), "PATH": os.environ.get("PATH", "")}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    pidfile = home / "fetchmail.pid"
    try:
        deadline = time.monotonic() + 20
        while not (pidfile.exists() and pidfile.read_text().split()):
            assert process.poll() is None, "fetchmail -d did not start"
            assert time.monotonic() < deadline, "fetchmail wrote no pid file"
            time.sleep(0.1)
        pid = int(pidfile.read_text().split()[0])
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "fetchmail"
        yield pid, home
    finally:
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError, IndexError):
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGTERM)
        process.terminate()
        process.wait(20)
        shutil.rmtree(home, ignore_errors=True)


async def test_a_running_fetchmail_daemon_keeps_the_fetchd_daemon_out(
    setup: Setup, fetchmail_daemon: tuple[int, Path]
) -> None:
    """Two retrievers on one mailbox lose or duplicate mail: ``fetchd -d`` refuses (exit 8)
    while the user's fetchmail daemon runs, found by its pid file in either place."""
    pid, fetchmail_home = fetchmail_daemon
    planted = setup.home / ".fetchmail.pid"
    shutil.copy(fetchmail_home / "fetchmail.pid", planted)
    for extra_env in ({}, {"FETCHMAILHOME": str(fetchmail_home)}):
        if extra_env:
            planted.unlink()
        setup.extra_env = extra_env
        code, out = await setup.cli("-N", "-f", str(setup.rc), "-d", "60")
        assert code == 8, out
        assert f"pid {pid}" in out and "fetchmail --quit" in out
    assert not setup.sink.received
    assert not (setup.home / "run" / "fetchd" / "control.sock").exists()
    # One poll (no daemon) is not refused: fetchmail itself allows it beside its daemon.
    setup.extra_env = {}
    code, out = await setup.cli("-f", str(setup.rc), "-d", "0")
    assert code == 0, out
    assert len(setup.sink.received) == 5


async def test_metrics_of_a_plain_daemon_and_none_without_one(setup: Setup) -> None:
    """``fetchd -d`` with ``--metrics 127.0.0.1:0``: --status names where it listens, a scrape
    over HTTP counts the poll's 5 messages and their octets; a one-shot run refuses the flag
    (exit 5) before polling anything."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    code, out = await setup.cli("-N", "-f", str(setup.rc), "--metrics", "127.0.0.1:0", "-d", "0")
    assert code == 5 and "--metrics serves a daemon's figures" in out, out
    assert setup.sink.received == []
    daemon = await setup.start("--metrics", "127.0.0.1:0")
    try:
        await until(lambda: len(setup.sink.received) == 5)
        await status_until(setup, lambda out: "metrics: http://127.0.0.1:" in out and " 5 " in out)
        code, out = await setup.cli("--status", "--json")
        address = json.loads(out)["daemon"]["metrics"]
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        samples = {
            s.name: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith("fetchd_") and "le" not in s.labels
        }
        assert samples["fetchd_messages_total"] == 5
        assert samples["fetchd_bytes_total"] == sum(len(m) for m in MESSAGES)
        assert samples["fetchd_polls_total"] == 1
        assert SECRET not in text and "demo" not in text
    finally:
        await stop(daemon)
