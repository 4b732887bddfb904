"""A throwaway POP3 server on loopback for ``fetchd --demo``: one mailbox, held in memory.

It speaks enough of RFC 1939 and 2449 (CAPA, USER/PASS, STAT, LIST, UIDL, RETR, DELE, RSET, NOOP,
QUIT, PIPELINING) for a real poll, and deletes only at QUIT, as a real server does.
"""

from __future__ import annotations

import asyncio
import hashlib


class DemoPOP3Server:
    """Serves ``messages`` to the one user ``user``/``password`` on 127.0.0.1."""

    def __init__(self, user: str, password: str, messages: list[bytes]) -> None:
        self.user, self.password = user, password
        self.messages = list(messages)
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        marked: set[int] = set()
        authorized, user = False, ""

        def reply(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        reply("+OK fetchd demo POP3 server ready")
        try:
            while line := await reader.readline():
                if not line.endswith(b"\n"):
                    break  # a partial line at EOF is not a command
                verb, _, arg = line.decode("utf-8", "replace").strip().partition(" ")
                verb = verb.upper()
                if verb == "QUIT":
                    if authorized:
                        self.messages = [
                            m for i, m in enumerate(self.messages, 1) if i not in marked
                        ]
                    reply("+OK bye")
                    break
                if verb == "CAPA":
                    reply("+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\n.")
                elif not authorized:
                    if verb == "USER":
                        user = arg
                        reply("+OK")
                    elif verb == "PASS" and user == self.user and arg == self.password:
                        authorized = True
                        reply("+OK logged in")
                    else:
                        reply("-ERR [AUTH] authentication failed")
                else:
                    reply(self._transaction(verb, arg, marked))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _transaction(self, verb: str, arg: str, marked: set[int]) -> str:
        live = {i: m for i, m in enumerate(self.messages, 1) if i not in marked}
        if verb == "STAT":
            return f"+OK {len(live)} {sum(map(len, live.values()))}"
        if verb in ("LIST", "UIDL"):

            def item(i: int) -> str:
                return str(len(live[i])) if verb == "LIST" else hashlib.sha1(live[i]).hexdigest()

            return "+OK\r\n" + "".join(f"{i} {item(i)}\r\n" for i in live) + "."
        if verb in ("NOOP", "RSET"):
            if verb == "RSET":
                marked.clear()
            return "+OK"
        number = int(arg) if arg.isdigit() else 0
        if number not in live:
            return "-ERR no such message"
        if verb == "DELE":
            marked.add(number)
            return "+OK marked"
        if verb == "RETR":
            lines = live[number].split(b"\r\n")
            if lines and lines[-1] == b"":
                lines.pop()
            body = "\r\n".join(
                ("." + ln if ln.startswith(".") else ln)
                for ln in (x.decode("latin-1") for x in lines)
            )
            return f"+OK {len(live[number])} octets\r\n{body}\r\n."
        return "-ERR unknown command"
