"""A throwaway SMTP server on loopback for ``fetchd --demo``: it keeps what it is given."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(frozen=True)
class Received:
    """One message as the sink got it."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes


class DemoSMTPSink:
    """Accepts every message on 127.0.0.1 and stores it in ``received``."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0, limit=1 << 26)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sender, recipients = "", list[str]()

        def reply(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        reply("220 localhost fetchd demo SMTP sink")
        try:
            while line := await reader.readline():
                command = line.decode("utf-8", "replace").strip()
                verb = command[:4].upper()
                if verb == "EHLO":
                    reply("250-localhost\r\n250-8BITMIME\r\n250 PIPELINING")
                elif verb == "HELO":
                    reply("250 localhost")
                elif verb == "MAIL":
                    sender, recipients = command[10:].strip(), []
                    reply("250 OK")
                elif verb == "RCPT":
                    recipients.append(command[8:].strip())
                    reply("250 OK")
                elif verb == "DATA":
                    reply("354 end with <CRLF>.<CRLF>")
                    await writer.drain()
                    self.received.append(
                        Received(sender, tuple(recipients), await _read_data(reader))
                    )
                    reply("250 OK queued")
                elif verb == "QUIT":
                    reply("221 bye")
                    break
                else:
                    reply("250 OK" if verb in ("RSET", "NOOP") else "502 not implemented")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


async def _read_data(reader: asyncio.StreamReader) -> bytes:
    data = await reader.readuntil(b"\r\n.\r\n")
    lines = data[: -len(b".\r\n")].split(b"\r\n")
    return b"\r\n".join(ln[1:] if ln.startswith(b".") else ln for ln in lines)
