"""RFC 5034, section 4: a POP3 AUTH line stays within 255 octets, so a long initial response
(a Kerberos ticket is about 1,000 octets in base64) waits for the server's empty challenge.
Against a strict server that refuses longer lines (a fault Dovecot does not show: it accepts
them)."""

from __future__ import annotations

import asyncio
import base64

from fetchd.auth.sasl import GSSAPI
from fetchd.net.tls import TLSSettings
from fetchd.pop3.client import POP3Client
from tests.unit.test_sasl_gssapi import ScriptedContext


async def _strict_server(lines: list[bytes], done: asyncio.Event) -> asyncio.Server:
    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK strict\r\n")
        while line := await reader.readline():
            lines.append(line)
            if len(line) > 255 and line.startswith(b"AUTH"):  # a command, not a response
                writer.write(b"-ERR line too long\r\n")
            elif line.startswith(b"CAPA"):
                writer.write(b"+OK\r\nSASL GSSAPI\r\nUIDL\r\n.\r\n")
            elif line == b"AUTH GSSAPI\r\n":
                writer.write(b"+ \r\n")
            elif line.startswith(b"AUTH GSSAPI "):
                writer.write(b"+OK short initial response taken\r\n")
            elif line.startswith(b"QUIT"):
                writer.write(b"+OK\r\n")
                break
            else:  # the token line after the empty challenge
                writer.write(b"+OK logged in\r\n")
            await writer.drain()
        writer.close()
        await writer.wait_closed()
        done.set()

    return await asyncio.start_server(session, "127.0.0.1", 0)


async def _authenticate(token: bytes) -> list[bytes]:
    lines: list[bytes] = []
    done = asyncio.Event()
    server = await _strict_server(lines, done)
    port = server.sockets[0].getsockname()[1]
    client = await POP3Client.connect("127.0.0.1", port, tls=TLSSettings(sslproto=""), timeout=5.0)
    await client.authenticate(GSSAPI(ScriptedContext(), token, "fmtest"))
    await client.quit()
    await asyncio.wait_for(done.wait(), 5)
    server.close()
    await server.wait_closed()
    return lines


async def test_long_initial_response_goes_after_the_empty_challenge() -> None:
    """A 700-octet first token: AUTH GSSAPI alone, then the token on its own line."""
    token = bytes(range(256)) * 2 + b"x" * 188
    lines = await _authenticate(token)
    assert lines[1:-1] == [b"AUTH GSSAPI\r\n", base64.b64encode(token) + b"\r\n"]


async def test_short_initial_response_stays_on_the_auth_line() -> None:
    """A first token that fits: sent with AUTH (one round trip fewer)."""
    lines = await _authenticate(b"short")
    assert lines[1:-1] == [b"AUTH GSSAPI " + base64.b64encode(b"short") + b"\r\n"]
