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

import json
import logging
import os
import select
import socket
import sys
import time
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

MAX_VALUE_LENGTH = 200

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


class _SplitLogger:
    """Progress to stdout, warnings and errors to stderr, as fetchmail's own output goes."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self._out, self._err = out, err

    def _write(self, stream: TextIO, message: str) -> None:
        stream.write(message + "\n")
        stream.flush()

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

    def __init__(self, address: str, fallback: TextIO) -> None:
        self._address, self._fallback = address, fallback
        self._socket: socket.socket | None = None

    def _send(self, severity: int, message: str) -> None:
        # One line per record: control characters (a server's CR LF) cannot forge another entry.
        text = message if message.isprintable() else message.encode("unicode_escape").decode()
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime())
        line = f"<{_FACILITY_MAIL | severity}>{stamp} fetchd[{os.getpid()}]: {text}"
        data = line.encode("utf-8", "backslashreplace")[:MAX_SYSLOG_LINE]
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
            self._fallback.flush()

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __getattr__(self, method: str) -> Any:
        severity = _SEVERITY.get(method, 2)  # critical and anything else: LOG_CRIT
        return lambda message: self._send(severity, message)


_syslog_sink: _SyslogLogger | None = None  # the one in use, closed when reconfigured


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
    factory: Any = lambda *args: _SplitLogger(out, err)  # noqa: E731
    if syslog is not None:
        sink = _syslog_sink = _SyslogLogger(syslog, err)
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
