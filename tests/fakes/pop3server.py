"""A scripted POP3 server on 127.0.0.1 for what real servers will not do: faults on demand.

It serves one mailbox (deleting only at QUIT, as RFC 1939 says) and can be told to stall, drop
the connection or go silent at a chosen octet of a message, answer -ERR with a response code,
inject bytes after STLS, send malformed listings, or leave out UIDL. It records every command
it received.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from dataclasses import dataclass, field


@dataclass
class Faults:
    pipelining: bool = True
    stls: ssl.SSLContext | None = None  # offer STLS with this server context
    inject_after_stls: bytes = b""  # sent right after "+OK Begin TLS"
    refuse_stls: bool = False
    stall_on: str | None = None  # verb after which the server goes silent
    cut_retr: int | None = None  # close the connection in the middle of RETR of this message
    cut_at: int | None = None  # ... after this many bytes of the reply (default: half)
    cut_stalls: bool = False  # ... and go silent there, the connection kept, instead
    uidl_skips: int | None = None  # leave this message out of UIDL
    size_lies: int = 0  # add this to every size LIST reports
    long_line: bool = False  # answer STAT with a line longer than any limit
    errors: dict[str, str] = field(default_factory=dict)  # verb -> "-ERR ..." line
    no_uidl: bool = False
    bad_list_line: bytes | None = None
    greeting: bytes = b"+OK fake POP3 ready <1896.697170952@fake.example>"
    list_size: int | None = None  # LIST and STAT report this size per message (10**12: huge)
    endless_retr: bool = False  # RETR's reply never ends: one long line after another
    sasl: tuple[str, ...] = ("PLAIN",)


class FakePOP3Server:
    def __init__(
        self,
        messages: list[bytes],
        user: str = "u",
        password: str = "p",
        faults: Faults | None = None,
    ) -> None:
        self.messages = list(messages)
        self.user, self.password = user, password
        self.faults = faults or Faults()
        self.commands: list[str] = []
        self.sessions = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FakePOP3Server:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def uid(self, message: bytes) -> str:
        return hashlib.sha256(message).hexdigest()[:32]

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        faults = self.faults
        marked: set[int] = set()
        authorized = False
        user = ""

        def send(data: bytes) -> None:
            writer.write(data + b"\r\n")

        send(faults.greeting)
        try:
            while line := await reader.readline():
                command = line.decode("utf-8", "replace").rstrip("\r\n")
                verb, _, arg = command.partition(" ")
                verb = verb.upper()
                self.commands.append(verb if verb in ("PASS", "AUTH", "APOP") else command)
                if faults.stall_on == verb:
                    await asyncio.sleep(3600)
                if verb in faults.errors:
                    send(faults.errors[verb].encode())
                elif verb == "CAPA":
                    caps = [b"+OK", b"USER", b"TOP"]
                    if not faults.no_uidl:
                        caps.append(b"UIDL")
                    if faults.pipelining:
                        caps.append(b"PIPELINING")
                    if faults.stls is not None and writer.get_extra_info("ssl_object") is None:
                        caps.append(b"STLS")
                    caps.append(b"SASL " + " ".join(faults.sasl).encode())
                    send(b"\r\n".join([*caps, b"."]))
                elif verb == "STLS" and faults.stls is not None:
                    if faults.refuse_stls:
                        send(b"-ERR not now")
                        continue
                    send(
                        b"+OK Begin TLS"
                        + (b"\r\n" + faults.inject_after_stls if faults.inject_after_stls else b"")
                    )
                    await writer.drain()
                    await writer.start_tls(faults.stls)
                elif verb == "USER":
                    user = arg
                    send(b"+OK")
                elif verb == "APOP":
                    name, _, digest = arg.partition(" ")
                    stamp = faults.greeting.decode().split()[-1]
                    good = hashlib.md5((stamp + self.password).encode()).hexdigest()
                    authorized = name == self.user and digest == good
                    send(b"+OK" if authorized else b"-ERR [AUTH] APOP failed")
                elif verb == "PASS":
                    authorized = user == self.user and arg == self.password
                    send(b"+OK" if authorized else b"-ERR [AUTH] invalid login")
                elif verb == "QUIT":
                    if authorized:
                        self.messages = [
                            m for i, m in enumerate(self.messages, 1) if i not in marked
                        ]
                    send(b"+OK bye")
                    await writer.drain()
                    break
                elif not authorized:
                    send(b"-ERR not authorized")
                else:
                    await self._transaction(verb, arg, marked, send, writer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _listed_size(self, message: bytes) -> int:
        if self.faults.list_size is not None:
            return self.faults.list_size
        return len(message) + self.faults.size_lies

    async def _transaction(self, verb: str, arg: str, marked: set[int], send, writer) -> None:  # type: ignore[no-untyped-def]
        live = {i: m for i, m in enumerate(self.messages, 1) if i not in marked}
        if verb == "STAT":
            if self.faults.long_line:
                send(b"+OK " + b"9" * 100_000)
                return
            huge = self.faults.list_size
            octets = sum(map(len, live.values())) if huge is None else huge * len(live)
            send(f"+OK {len(live)} {octets}".encode())
        elif verb == "LIST":
            lines = [f"{i} {self._listed_size(m)}".encode() for i, m in live.items()]
            if self.faults.bad_list_line is not None:
                lines.append(self.faults.bad_list_line)
            send(b"\r\n".join([b"+OK", *lines, b"."]))
        elif verb == "UIDL":
            if self.faults.no_uidl:
                send(b"-ERR no UIDL here")
            else:
                lines = [
                    f"{i} {self.uid(m)}".encode()
                    for i, m in live.items()
                    if i != self.faults.uidl_skips
                ]
                send(b"\r\n".join([b"+OK", *lines, b"."]))
        elif verb == "RETR" and arg.isdigit() and int(arg) in live and self.faults.endless_retr:
            send(b"+OK here it comes")
            filler = b"X" * 998 + b"\r\n"
            chunk = filler * 64
            while not writer.transport.is_closing():
                writer.write(chunk)
                await writer.drain()
        elif verb == "RETR" and arg.isdigit() and int(arg) in live:
            number = int(arg)
            body = b"\r\n".join(
                b"." + ln if ln.startswith(b".") else ln
                for ln in live[number].removesuffix(b"\r\n").split(b"\r\n")
            )
            data = b"+OK\r\n" + body + b"\r\n."
            if self.faults.cut_retr == number:
                cut = len(data) // 2 if self.faults.cut_at is None else self.faults.cut_at
                writer.write(data[:cut])
                await writer.drain()
                if self.faults.cut_stalls:
                    await asyncio.sleep(3600)
                writer.transport.abort()
                raise ConnectionError("cut on purpose")
            send(data)
        elif verb == "DELE" and arg.isdigit() and int(arg) in live:
            marked.add(int(arg))
            send(b"+OK marked")
        elif verb in ("NOOP", "RSET"):
            if verb == "RSET":
                marked.clear()
            send(b"+OK")
        else:
            send(b"-ERR no such message or command")
