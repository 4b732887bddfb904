"""Configure structlog once: fetchmail-style lines for people, key=value lines for machines.

Events carry a stable dotted name (``poll.count``) and keys; those meant for a person also carry
``text``, the fetchmail-style sentence. The console renderer prints that sentence (warnings and
errors prefixed ``fetchd:`` as fetchmail prefixes its own), the key=value renderer prints
everything. Values that came from a server are capped and escaped before they reach a line.
"""

from __future__ import annotations

import logging
import os
import sys
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


class _ConsoleRenderer:
    """fetchmail's look: the sentence alone; warnings and errors say who is speaking."""

    def __call__(self, _: Any, method: str, event: MutableMapping[str, Any]) -> str:
        text = event.get("text") or _keyvalue(event)
        return f"fetchd: {text}" if method in ("warning", "error", "critical") else str(text)


def _keyvalue(event: MutableMapping[str, Any]) -> str:
    name = event.get("event", "")
    rest = " ".join(
        f"{key}={value!r}" if isinstance(value, str) and " " in value else f"{key}={value}"
        for key, value in event.items()
        if key not in ("event", "text")
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


def _under_systemd() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


def configure(
    *,
    verbosity: int = 0,
    silent: bool = False,
    fmt: Format | None = None,
    stream: TextIO | None = None,
    errors: TextIO | None = None,
) -> None:
    """Set up logging for the whole process; call once, from the command line entry point.

    fetchmail-style lines by default (a terminal, a pipe, cron); key=value lines under systemd.
    """
    out = stream or sys.stdout
    err = errors or (stream if stream is not None else sys.stderr)
    if fmt is None:
        fmt = "keyvalue" if _under_systemd() else "console"
    level = logging.WARNING if silent else logging.DEBUG if verbosity > 0 else logging.INFO
    renderer: Any = (
        _ConsoleRenderer() if fmt == "console" else (lambda _, __, event: _keyvalue(event))
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _sanitize,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *args: _SplitLogger(out, err),
        cache_logger_on_first_use=False,
    )
