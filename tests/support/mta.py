"""A real SMTP server (aiosmtpd) in the test's event loop, keeping what it receives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Sink:
    port: int = 0
    received: list[bytes] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    pipelining: bool = False  # offer PIPELINING (aiosmtpd takes pipelined commands, unasked)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(envelope.original_content or b"")
        self.envelopes.append((envelope.mail_from or "", list(envelope.rcpt_tos)))
        return "250 queued"

    def subjects(self) -> list[str]:
        return [
            next(line for line in m.decode().split("\r\n") if line.startswith("Subject:"))
            for m in self.received
        ]

    def bodies(self) -> list[bytes]:
        """What arrived, without the Received header fetchd prepends (two continuation lines)."""
        out = []
        for message in self.received:
            assert message.startswith(b"Received: from "), message[:80]
            lines = message.split(b"\r\n")
            out.append(b"\r\n".join(lines[3:]))
        return out


@asynccontextmanager
async def running_mta(
    sink: Sink | None = None, data_size_limit: int | None = 33554432
) -> AsyncIterator[Sink]:
    """``data_size_limit``: aiosmtpd's default (32 MiB, answered with 552), or None for none."""
    sink = sink or Sink()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(sink, decode_data=False, hostname="mta.test", data_size_limit=data_size_limit),
        "127.0.0.1",
        0,
    )
    sink.port = server.sockets[0].getsockname()[1]
    try:
        yield sink
    finally:
        server.close()
        await server.wait_closed()


@dataclass
class SlowSink(Sink):
    """An MTA that takes ``delay`` seconds per message: a poll long enough to interrupt."""

    delay: float = 0.005

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)
