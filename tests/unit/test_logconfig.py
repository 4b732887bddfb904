"""The syslog sink: priorities at facility mail, one record per line, and its fallback."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from fetchd import logconfig


@pytest.fixture
def syslogd(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "log.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(2)
        yield path, sock
    logconfig.configure()


def test_priorities_and_ident(syslogd: tuple[str, socket.socket]) -> None:
    path, sock = syslogd
    logconfig.configure(syslog=path)
    log = structlog.get_logger("test")
    log.info("x.info", text="all is well")
    log.warning("x.warn", text="a warning")
    log.error("x.error", text="an error")
    info, warning, error = (sock.recv(2048).decode() for _ in range(3))
    assert info.startswith("<22>") and info.endswith(": all is well")  # LOG_MAIL|LOG_INFO
    assert warning.startswith("<20>") and warning.endswith(": a warning")  # no "fetchd:" prefix
    assert error.startswith("<19>") and "fetchd[" in error


def test_a_server_string_cannot_forge_a_second_record(syslogd: tuple[str, socket.socket]) -> None:
    path, sock = syslogd
    logconfig.configure(syslog=path)
    structlog.get_logger("test").info("x", text="reply: -ERR no\r\n<11>fake record")
    record = sock.recv(2048).decode()
    assert "\r" not in record and "\n" not in record
    assert record.endswith("reply: -ERR no\\r\\n<11>fake record")


def test_long_lines_are_capped(syslogd: tuple[str, socket.socket]) -> None:
    path, sock = syslogd
    logconfig.configure(syslog=path)
    structlog.get_logger("test").info("x", text="y" * 5000)
    assert len(sock.recv(8192)) == logconfig.MAX_SYSLOG_LINE


def test_unreachable_syslog_writes_to_stderr(tmp_path: Path) -> None:
    errors = io.StringIO()
    logconfig.configure(syslog=str(tmp_path / "absent.sock"), errors=errors)
    structlog.get_logger("test").error("x", text="cannot connect")
    logconfig.configure()
    assert errors.getvalue() == "fetchd: cannot connect\n"


def test_a_broken_output_is_dropped_once_with_one_notice() -> None:
    """A pipe whose reader went away: no exception reaches the caller, and stderr is told
    once (issue 19)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    errors = io.StringIO()
    with os.fdopen(write_end, "w") as stream:
        logconfig.configure(stream=stream, errors=errors)
        log = structlog.get_logger("test")
        log.info("x", text="first")
        log.info("x", text="second")
        log.warning("x", text="still here")
        logconfig.configure()
    assert errors.getvalue() == (
        "fetchd: standard output failed (Broken pipe); its log lines are dropped\n"
        "fetchd: still here\n"
    )


class _StalledStream(io.StringIO):
    """An output whose reader stops reading until ``resume`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.resume = threading.Event()

    def write(self, text: str) -> int:
        self.resume.wait(10)
        return super().write(text)


def test_a_blocked_output_drops_lines_and_counts_them() -> None:
    stream = _StalledStream()
    output = logconfig._Output(stream, "standard output")
    writer = logconfig._BackgroundWriter(size=2)
    for i in range(10):
        writer.put(output.write, f"line {i}\n")  # never waits for the stalled stream
    dropped = writer.dropped
    assert dropped >= 7
    stream.resume.set()
    writer.flush(5)
    lines = stream.getvalue().splitlines()
    assert f"fetchd: {dropped} log lines dropped (output blocked)" in lines
    assert len(lines) - 1 + dropped == 10


def test_a_daemon_does_not_wait_for_a_stalled_syslog(
    syslogd: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """syslogd not reading (its queue full): the log thread waits, the caller does not."""
    path, _ = syslogd
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as filler:
        filler.setblocking(False)
        filler.connect(path)
        with contextlib.suppress(BlockingIOError):
            while True:
                filler.send(b"<22>filler")
    monkeypatch.setattr(logconfig, "_writer", logconfig._BackgroundWriter())
    logconfig.configure(syslog=path, errors=io.StringIO())
    log = structlog.get_logger("test")
    began = time.monotonic()
    for i in range(20):  # each would wait SYSLOG_WAIT_SECONDS (0.5 s) in the caller
        log.info("x", text=f"line {i}")
    assert time.monotonic() - began < 2.0


def test_a_closed_syslog_sink_never_reopens_its_socket(
    syslogd: tuple[str, socket.socket],
) -> None:
    """The log thread may still hold lines for a sink that a reconfigure closed: they go to
    the fallback, and no socket is opened that nobody would close (a leak CI saw)."""
    path, sock = syslogd
    errors = io.StringIO()
    sink = logconfig._SyslogLogger(path, logconfig._Output(errors, "standard error"))
    sink._send(6, "before close")
    assert sock.recv(2048).decode().endswith(": before close")
    sink.close()
    sink._send(6, "after close")
    assert sink._socket is None
    assert errors.getvalue() == "fetchd: after close\n"
