"""Configure structlog once: fetchmail-style lines for people, key=value lines for machines.

``set syslog`` / ``--syslog`` sends the same sentences to syslog instead (facility mail, ident
``fetchd``), as fetchmail does: one datagram per line to ``/dev/log``, or to the socket named by
``$FETCHD_SYSLOG_SOCKET`` (containers with their own syslog socket, and the tests).

Events carry a stable dotted name (``poll.count``) and keys; those meant for a person also carry
``text``, the fetchmail-style sentence. The console renderer prints that sentence (warnings and
errors prefixed ``fetchd:`` as fetchmail prefixes its own), the key=value renderer prints
everything. Values that came from a server are capped and escaped before they reach a line.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import queue
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any, Literal, TextIO

import structlog

MAX_VALUE_LENGTH = 200
QUEUE_LINES = 1000  # lines held for a blocked output before they are dropped (and counted)

Format = Literal["console", "keyvalue"]


def _cap_and_escape(value: object) -> object:
    if not isinstance(value, str | bytes):
        return value
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value
    text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return text if len(text) <= MAX_VALUE_LENGTH else text[:MAX_VALUE_LENGTH] + "..."


def _sanitize(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if key != "text":
            event[key] = _cap_and_escape(value)
    return event


# Events for machines only (journald, key=value): a terminal or syslog shows fetchmail's lines.
MACHINE_ONLY = frozenset({"poll.summary"})


def _drop_machine_only(_: Any, __: str, event: MutableMapping[str, Any]) -> Any:
    if event.get("event") in MACHINE_ONLY:
        raise structlog.DropEvent
    return event


class _ConsoleRenderer:
    """fetchmail's look: the sentence alone; warnings and errors say who is speaking."""

    def __call__(self, _: Any, method: str, event: MutableMapping[str, Any]) -> str:
        text = event.get("text") or _keyvalue(event)
        return f"fetchd: {text}" if method in ("warning", "error", "critical") else str(text)


def _keyvalue(event: MutableMapping[str, Any]) -> str:
    """``poll.count account=demo@host messages=5 ... msg="5 messages for demo ..."``."""
    name = event.get("event", "")
    fields = {key: value for key, value in event.items() if key not in ("event", "text")}
    if event.get("text"):
        fields["msg"] = _cap_and_escape(str(event["text"]))
    rest = " ".join(
        f"{key}={json.dumps(value)}"
        if isinstance(value, str) and (" " in value or not value)
        else f"{key}={value}"
        for key, value in fields.items()
        if value is not None
    )
    return f"{name} {rest}".strip()


class _Output:
    """One destination of log lines (standard output or error, a log file behind them): a line
    written to it never raises. The first failure (a pipe whose reader went away, EIO, a full
    disk) drops the output for good, and says so once on another output or syslog."""

    def __init__(self, stream: TextIO, name: str) -> None:
        self.stream, self.name = stream, name
        self.failed = False
        try:
            self._fd: int | None = stream.fileno()
        except (OSError, ValueError):  # io.StringIO and the like: no descriptor
            self._fd = None
        self.peers: list[_Output] = []  # where the notice of a failure goes first

    def write(self, line: str) -> bool:
        if self.failed:
            return False
        try:
            if self._fd is None:
                self.stream.write(line)
                self.stream.flush()
            else:
                # Straight to the descriptor: a failed write leaves nothing in the stream's
                # buffer for the interpreter to trip over at exit.
                self.stream.flush()
                data = line.encode("utf-8", "backslashreplace")
                while data:
                    data = data[os.write(self._fd, data) :]
        except (OSError, ValueError) as exc:
            self.failed = True
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            notice = f"fetchd: {self.name} failed ({reason}); its log lines are dropped\n"
            if not any(peer.write(notice) for peer in self.peers if peer is not self):
                _syslog_once(notice.strip())
            return False
        return True


def _syslog_once(text: str) -> None:
    """One warning datagram to syslog, if it listens; nothing if not."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(syslog_address())
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime())
        line = f"<{_FACILITY_MAIL | 4}>{stamp} fetchd[{os.getpid()}]: {text}"
        sock.send(line.encode("utf-8", "backslashreplace")[:MAX_SYSLOG_LINE])


class _BackgroundWriter:
    """Lines queued for a thread that writes them, so that a reader that stops reading (a
    stalled journald, a paused terminal) never blocks the event loop: when the queue is full,
    lines are dropped and counted, and the count is written once the output moves again."""

    def __init__(self, size: int = QUEUE_LINES) -> None:
        self._queue: queue.Queue[tuple[Callable[[str], object], str]] = queue.Queue(size)
        self._lock = threading.Lock()
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="fetchd-log", daemon=True)
        self._thread.start()

    def put(self, write: Callable[[str], object], line: str) -> None:
        try:
            self._queue.put_nowait((write, line))
        except queue.Full:
            with self._lock:
                self.dropped += 1

    def _run(self) -> None:
        while True:
            write, line = self._queue.get()
            try:
                with self._lock:
                    dropped, self.dropped = self.dropped, 0
                if dropped:
                    write(f"fetchd: {dropped} log lines dropped (output blocked)\n")
                write(line)
            except Exception:  # the log thread outlives any one failed line
                pass
            finally:
                self._queue.task_done()

    def flush(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)


class _SplitLogger:
    """Progress to stdout, warnings and errors to stderr, as fetchmail's own output goes."""

    def __init__(self, out: _Output, err: _Output) -> None:
        self._out, self._err = out, err

    def _write(self, output: _Output, message: str) -> None:
        if _writer is not None:
            _writer.put(output.write, message + "\n")
        else:
            output.write(message + "\n")

    def msg(self, message: str) -> None:
        self._write(self._out, message)

    def err(self, message: str) -> None:
        self._write(self._err, message)

    debug = info = msg
    warning = error = critical = exception = err


# syslog(3) priorities, facility LOG_MAIL (2).
_FACILITY_MAIL = 2 << 3
_SEVERITY = {"debug": 7, "info": 6, "msg": 6, "warning": 4, "error": 3, "exception": 3}
MAX_SYSLOG_LINE = 1024
DEFAULT_SYSLOG_SOCKET = "/dev/log"
SYSLOG_WAIT_SECONDS = 0.5


def syslog_address() -> str:
    return os.environ.get("FETCHD_SYSLOG_SOCKET") or DEFAULT_SYSLOG_SOCKET


class _SyslogLogger:
    """RFC 3164 lines, as libc's syslog(3) writes them. A syslog that cannot be reached, or not
    keep up, neither swallows the line nor stalls mail: the line goes to standard error."""

    def __init__(self, address: str, fallback: _Output) -> None:
        self._address, self._fallback = address, fallback
        self._socket: socket.socket | None = None
        # The log thread may still send while the main thread reconfigures: one at a time, and
        # a closed sink never opens its socket again (it would leak once the sink is dropped).
        self._lock = threading.Lock()
        self._closed = False

    def _send(self, severity: int, message: str) -> None:
        message = message.removesuffix("\n")
        # One line per record: control characters (a server's CR LF) cannot forge another entry.
        text = message if message.isprintable() else message.encode("unicode_escape").decode()
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime())
        line = f"<{_FACILITY_MAIL | severity}>{stamp} fetchd[{os.getpid()}]: {text}"
        data = line.encode("utf-8", "backslashreplace")[:MAX_SYSLOG_LINE]
        with self._lock:
            if self._closed:
                self._fallback.write(f"fetchd: {text}\n")
                return
            self._send_locked(data, text)

    def _send_locked(self, data: bytes, text: str) -> None:
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
                self._socket.connect(self._address)
            try:
                self._socket.send(data)
            except BlockingIOError:
                # syslogd is behind (Linux queues only max_dgram_qlen datagrams, often 10):
                # wait a moment for room, as libc would forever, then give up on this line.
                select.select([], [self._socket], [], SYSLOG_WAIT_SECONDS)
                self._socket.send(data)
        except OSError:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
            self._fallback.write(f"fetchd: {text}\n")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def __getattr__(self, method: str) -> Any:
        severity = _SEVERITY.get(method, 2)  # critical and anything else: LOG_CRIT
        send = functools.partial(self._send, severity)
        # In a daemon, the log thread waits for a slow syslog, not the event loop.
        return lambda message: _writer.put(send, message) if _writer is not None else send(message)


_syslog_sink: _SyslogLogger | None = None  # the one in use, closed when reconfigured
_writer: _BackgroundWriter | None = None  # the daemon's log thread, once started


def start_background_writer() -> None:
    """From here on (a daemon, after detaching: threads do not survive fork) log lines are
    written by a thread, and a blocked output holds up nothing else."""
    global _writer
    if _writer is None:
        _writer = _BackgroundWriter()


def flush(timeout: float = 2.0) -> None:
    """Wait, at most ``timeout`` seconds, for the queued lines to be written (at exit)."""
    if _writer is not None:
        _writer.flush(timeout)


def _plain_text(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    return str(event.get("text") or _keyvalue(event))


def _under_systemd() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


def configure(
    *,
    verbosity: int = 0,
    silent: bool = False,
    fmt: Format | None = None,
    stream: TextIO | None = None,
    errors: TextIO | None = None,
    syslog: str | None = None,
) -> None:
    """Set up logging for the whole process, from the command line entry point (and once more
    when the rc file asks for syslog).

    fetchmail-style lines by default (a terminal, a pipe, cron); key=value lines under systemd;
    the sentences alone to the syslog socket at ``syslog``.
    """
    out = stream or sys.stdout
    err = errors or (stream if stream is not None else sys.stderr)
    if fmt is None:
        fmt = "keyvalue" if _under_systemd() else "console"
    level = logging.WARNING if silent else logging.DEBUG if verbosity > 0 else logging.INFO
    renderer: Any = (
        _ConsoleRenderer() if fmt == "console" else (lambda _, __, event: _keyvalue(event))
    )
    global _syslog_sink
    if _syslog_sink is not None:
        _syslog_sink.close()
        _syslog_sink = None
    outputs = _Output(out, "standard output"), _Output(err, "standard error")
    outputs[0].peers = [outputs[1]]
    split = _SplitLogger(*outputs)
    factory: Any = lambda *args: split  # noqa: E731
    if syslog is not None:
        sink = _syslog_sink = _SyslogLogger(syslog, outputs[1])
        renderer, factory = _plain_text, lambda *args: sink
    structlog.configure(
        processors=[
            *([] if fmt == "keyvalue" and syslog is None else [_drop_machine_only]),
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _sanitize,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
