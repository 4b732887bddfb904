"""The daemon's control socket: versioned JSON lines over a private Unix socket.

A request is one line ``{"v": 1, "cmd": "quit" | "poll" | "status" | "reload", "account": ...}``
and gets one line back ``{"v": 1, "ok": true, ...}``. Requests are size- and time-limited, and
the peer must be our own uid (SO_PEERCRED), whatever the file mode says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from fetchd.errors import FetchdError

log = structlog.get_logger("fetchd.control")

VERSION = 1
MAX_REQUEST = 4096
REQUEST_TIMEOUT = 5.0
COMMANDS = frozenset({"quit", "poll", "status", "reload"})

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def parse_request(line: bytes) -> dict[str, Any]:
    """A request line, checked; ValueError says what is wrong."""
    if len(line) > MAX_REQUEST:
        raise ValueError("request too long")
    try:
        request = json.loads(line)
    except RecursionError:  # "[[[[...": the C decoder recurses once per level
        raise ValueError("request nested too deeply") from None
    if not isinstance(request, dict) or request.get("v") != VERSION:
        raise ValueError(f'expected a JSON object with "v": {VERSION}')
    if request.get("cmd") not in COMMANDS:
        raise ValueError(f"unknown command; expected one of {sorted(COMMANDS)}")
    account = request.get("account")
    if account is not None and (not isinstance(account, str) or len(account) > 256):
        raise ValueError("account must be a short string")
    return request


def _peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return int(uid)


class ControlServer:
    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_socket()):
            raise FetchdError(f"{self.path} exists and is not a socket; not replacing it")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # stale: we hold the daemon lock, so no daemon serves it
        old_mask = os.umask(0o177)
        try:
            # The stream limit makes an over-long line fail at MAX_REQUEST, not at 64 KiB.
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST
            )
        finally:
            os.umask(old_mask)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            if sock is None or _peer_uid(sock) != os.geteuid():
                await self._reply(writer, {"ok": False, "error": "permission denied"})
                return
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    line = await reader.readuntil(b"\n")
                request = parse_request(line)
            except (
                TimeoutError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                ValueError,
            ) as exc:
                await self._reply(writer, {"ok": False, "error": f"bad request: {exc}"[:200]})
                return
            await self._reply(writer, await self._handler(request))
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _reply(self, writer: asyncio.StreamWriter, answer: dict[str, Any]) -> None:
        writer.write(json.dumps({"v": VERSION, **answer}).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()


def request(
    path: Path, cmd: str, account: str | None = None, timeout: float = 30.0
) -> dict[str, Any] | None:
    """Send one request to the daemon; None when no daemon listens there."""
    message = {"v": VERSION, "cmd": cmd}
    if account is not None:
        message["account"] = account
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        sock.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data) if data else {"ok": False, "error": "no answer"}
    return answer if isinstance(answer, dict) else {"ok": False, "error": "bad answer"}
