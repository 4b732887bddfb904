"""``plugin`` and ``plugout``: a command that makes the connection (ssh, a proxy), as fetchmail
runs one.

The command is split on blanks and run directly (no shell), with a word that is exactly ``%h``
replaced by the host and ``%p`` by the port or service, fetchmail's rules. Its standard input and
output are one end of a socket pair; fetchd speaks the protocol (TLS included, if the rc file
asks for it) on the other end as on a TCP connection. Its standard error is our own.

A plugin is only a transport: the TLS and password rules are those of the host it reaches. A
plugin that already protects the link (ssh) still needs ``sslproto ''`` for a password to cross it
without TLS, which says so in the rc file.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable

from fetchd.children import kill_and_reap
from fetchd.errors import ConfigError, SocketError

# Opens one connection: the socket to speak the protocol on.
Connector = Callable[[], Awaitable[socket.socket]]

EXIT_GRACE = 5.0  # seconds a plugin gets to end by itself once its connection is closed


def plugin_argv(command: str, host: str, port: str) -> list[str]:
    """The command's words, ``%h`` and ``%p`` words replaced."""
    words = [host if w == "%h" else port if w == "%p" else w for w in command.split()]
    if not words:
        raise ConfigError("the plugin command is empty")
    return words


class PluginLinks:
    """The connections one poll made through a plugin command, and their processes."""

    def __init__(self, command: str, what: str = "plugin") -> None:
        self.command = command
        self.what = what
        self._processes: list[asyncio.subprocess.Process] = []

    async def connect(self, host: str, port: str) -> socket.socket:
        """A socket connected to a new run of the command."""
        argv = plugin_argv(self.command, host, port)
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=theirs.fileno(), stdout=theirs.fileno(), start_new_session=True
            )
        except OSError as exc:
            ours.close()
            raise SocketError(
                f"cannot run the {self.what} {argv[0]!r}: {exc.strerror or exc}"
            ) from None
        finally:
            theirs.close()
        self._processes.append(process)
        return ours

    async def aclose(self) -> None:
        """Once the connections are closed, each command ends (end of file on its input); one
        that does not within EXIT_GRACE seconds is killed. None is left unwaited."""
        processes, self._processes = self._processes, []
        try:
            for process in processes:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(EXIT_GRACE):
                        await process.wait()
        finally:  # also when a stopping daemon cancels us meanwhile
            for process in processes:
                if process.returncode is None:
                    await kill_and_reap(process)
