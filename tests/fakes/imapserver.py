"""A small scripted IMAP server for fault tests: one mailbox, on 127.0.0.1, port 0.

It speaks enough IMAP4rev1 for fetchd and for the stdlib ``imaplib`` (its contract test proves
that): CAPABILITY, STARTTLS, LOGIN (quoted or literal), AUTHENTICATE PLAIN, SELECT, UID SEARCH,
UID FETCH (partial ``BODY.PEEK[]<offset.length>`` too), UID STORE, UID EXPUNGE, EXPUNGE, NOOP,
LOGOUT, and IDLE when "IDLE" is among the capabilities (``idle_push``: a line sent 0.1 s into
an IDLE). Misbehaviour is switched on per test:
- ``greeting``: the first line, e.g. ``b"* PREAUTH hi"``;
- ``after_starttls_ok``: bytes written in the same packet as STARTTLS's OK (injection);
- ``replace[name]``: raw bytes sent instead of the normal reply (``{tag}`` is replaced);
- ``interleave[name]``: bytes sent after each untagged line of the normal reply;
- ``stall``: command names after which the server goes silent (but keeps the connection);
- ``hang_up``: command names after which the server closes the connection;
- ``cut_uid``/``cut_at``/``cut_stalls``: while sending message ``cut_uid``, after ``cut_at``
  octets of the message (in whichever FETCH part holds that octet) the server closes the
  connection, or with ``cut_stalls`` goes silent and keeps it;
- ``huge_literal``: BODY[] (or BODY[]<origin>, answering a partial fetch) is announced as a
  literal of that many octets (2 GiB, say) and filler is streamed until the client hangs up;
- ``idle_dead``: after IDLE's continuation the server is silent and ignores DONE, as a peer that
  vanished without closing (a NAT timeout, a pulled cable) looks to the client.
Command names are upper-case and include ``UID`` (``"UID FETCH"``).
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from dataclasses import dataclass, field

CAPABILITIES = ("IMAP4rev1", "UIDPLUS", "AUTH=PLAIN")


@dataclass
class FakeMessage:
    """One message in the fake mailbox."""

    uid: int
    body: bytes
    flags: set[str] = field(default_factory=set)


@dataclass
class FakeIMAPServer:
    """A one-mailbox IMAP server; ``await start()``, then connect to ``port``."""

    messages: list[FakeMessage] = field(default_factory=list)
    user: str = "alice"
    password: str = "secret"
    uidvalidity: int = 42
    capabilities: tuple[str, ...] = CAPABILITIES
    starttls_context: ssl.SSLContext | None = None  # offer STARTTLS with this server context
    greeting: bytes | None = None
    after_starttls_ok: bytes = b""
    replace: dict[str, bytes] = field(default_factory=dict)
    interleave: dict[str, bytes] = field(default_factory=dict)
    stall: set[str] = field(default_factory=set)
    hang_up: set[str] = field(default_factory=set)  # close the connection after these commands
    implicit_tls_context: ssl.SSLContext | None = None  # TLS from the first byte (port 993)
    idle_push: bytes = b""
    idle_dead: bool = False
    size_lies: int = 0  # add this to every RFC822.SIZE reported
    cut_uid: int | None = None  # break off while sending this message's octets ...
    cut_at: int = 0  # ... once this many of them (from its start) are out ...
    cut_stalls: bool = False  # ... by going silent instead of closing the connection
    # BODY[] announced as a literal of this many octets, then filler streamed until the client
    # hangs up (or it is all sent): a server trying to exhaust the client's memory.
    huge_literal: int | None = None
    received: list[bytes] = field(default_factory=list)  # command lines, literals excluded
    wire: bytearray = field(default_factory=bytearray)  # every octet received, as received
    port: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> int:
        """Listen on 127.0.0.1 and return the port."""
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", 0, ssl=self.implicit_tls_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    def add(self, body: bytes, flags: set[str] | None = None) -> FakeMessage:
        """Append a message with the next UID."""
        uid = max((m.uid for m in self.messages), default=0) + 1
        message = FakeMessage(uid, body, set(flags or ()))
        self.messages.append(message)
        return message

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await _Session(self, reader, writer).run()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): asyncio's stream callback would log a cancelled handler as an error
        finally:
            self._handlers.discard(task)
            writer.close()


class _Session:
    def __init__(
        self, server: FakeIMAPServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.authenticated = False
        self.selected = False
        self.tls = False

    async def run(self) -> None:
        server = self.server
        self.write(server.greeting or b"* OK fake IMAP ready")
        while True:
            line = await self.reader.readuntil(b"\r\n")
            server.wire += line
            line = await self._with_literals(line[:-2])
            tag, _, rest = line.partition(b" ")
            words = rest.split(b" ")
            name = words[0].upper().decode()
            if name == "UID" and len(words) > 1:
                name = "UID " + words[1].upper().decode()
                words = words[1:]
            server.received.append(line if name not in ("LOGIN",) else tag + b" LOGIN ***")
            if name in server.replace:
                self.write(server.replace[name].replace(b"{tag}", tag).rstrip(b"\r\n"))
            else:
                done = await self._command(name, tag.decode(), words[1:])
                if done:
                    return
            await self.writer.drain()
            if name in server.hang_up:
                return
            if name in server.stall:
                await asyncio.Event().wait()

    async def _with_literals(self, line: bytes) -> bytes:
        while (match := re.search(rb"\{(\d+)\}\Z", line)) is not None:
            self.write(b"+ go ahead")
            data = await self.reader.readexactly(int(match.group(1)))
            rest = await self.reader.readuntil(b"\r\n")
            self.server.wire += data + rest
            rest = rest[:-2]
            line = line[: match.start()] + b'"' + data + b'"' + rest
        return line

    def write(self, line: bytes) -> None:
        self.writer.write(line + b"\r\n")

    def untagged(self, name: str, line: bytes) -> None:
        self.write(line)
        if name in self.server.interleave:
            self.writer.write(self.server.interleave[name])

    def caps(self) -> bytes:
        names = list(self.server.capabilities)
        if self.server.starttls_context is not None and not self.tls:
            names.append("STARTTLS")
        return " ".join(names).encode()

    async def _command(self, name: str, tag: str, args: list[bytes]) -> bool:
        ok = f"{tag} OK {name} completed".encode()
        if name == "CAPABILITY":
            self.untagged(name, b"* CAPABILITY " + self.caps())
        elif name == "NOOP":
            pass
        elif name == "LOGOUT":
            self.write(b"* BYE logging out")
            self.write(ok)
            await self.writer.drain()
            return True
        elif name == "STARTTLS":
            context = self.server.starttls_context
            if context is None or self.tls:
                ok = f"{tag} BAD no STARTTLS".encode()
            else:
                self.writer.write(ok + b"\r\n" + self.server.after_starttls_ok)
                await self.writer.drain()
                await self.writer.start_tls(context)
                self.tls = True
                return False
        elif name == "LOGIN":
            user, password = _unquote(args[0]), _unquote(b" ".join(args[1:]))
            ok = self._login(tag, user, password) or ok
        elif name == "AUTHENTICATE":
            ok = await self._authenticate(tag, args) or ok
        elif name in ("SELECT", "EXAMINE"):
            self.selected = True
            self.untagged(name, b"* FLAGS (\\Seen \\Deleted)")
            self.untagged(name, b"* %d EXISTS" % len(self.server.messages))
            self.untagged(name, b"* OK [UIDVALIDITY %d] ok" % self.server.uidvalidity)
            ok = f"{tag} OK [READ-WRITE] selected".encode()
        elif name == "UID SEARCH":
            ok = self._search(name, tag, args) or ok
        elif name == "UID FETCH":
            items = b" ".join(args[1:]).upper()
            if self.server.huge_literal is not None and b"BODY" in items:
                uid = min(_uids(args[0]) & {m.uid for m in self.server.messages})
                origin = re.search(rb"\]<(\d+)\.", items)
                section = b"BODY[]<%s>" % origin.group(1) if origin else b"BODY[]"
                await self._stream_huge_literal(uid, section, self.server.huge_literal)
            elif self._fetch(name, _uids(args[0]), items):
                await self.writer.drain()
                if self.server.cut_stalls:
                    await asyncio.Event().wait()
                self.writer.transport.abort()
                raise ConnectionError("cut on purpose")
        elif name == "UID STORE":
            self._store(_uids(args[0]), args[1].upper(), b" ".join(args[2:]))
        elif name == "IDLE" and "IDLE" in self.server.capabilities:
            self.write(b"+ idling")
            await self.writer.drain()
            if self.server.idle_dead:
                await asyncio.Event().wait()
            waiting = asyncio.ensure_future(self.reader.readuntil(b"\r\n"))
            if self.server.idle_push:
                done, _ = await asyncio.wait({waiting}, timeout=0.1)
                if not done:
                    self.write(self.server.idle_push)
                    await self.writer.drain()
            if (await waiting).strip().upper() != b"DONE":
                ok = f"{tag} BAD expected DONE".encode()
        elif name in ("UID EXPUNGE", "EXPUNGE"):
            only = _uids(args[0]) if args else None
            self._expunge(name, only)
        else:
            ok = f"{tag} BAD unknown command".encode()
        self.write(ok)
        return False

    def _login(self, tag: str, user: bytes, password: bytes) -> bytes | None:
        if user.decode() == self.server.user and password.decode() == self.server.password:
            self.authenticated = True
            return None
        return f"{tag} NO [AUTHENTICATIONFAILED] invalid credentials".encode()

    async def _authenticate(self, tag: str, args: list[bytes]) -> bytes | None:
        if args[0].upper() != b"PLAIN":
            return f"{tag} NO unsupported mechanism".encode()
        if len(args) > 1:
            encoded = args[1]
        else:
            self.write(b"+ ")
            await self.writer.drain()
            encoded = (await self.reader.readuntil(b"\r\n"))[:-2]
        _, user, password = base64.b64decode(encoded).split(b"\0")
        return self._login(tag, user, password)

    def _search(self, name: str, tag: str, args: list[bytes]) -> bytes | None:
        words = [a.upper() for a in args]
        esearch = words[:2] == [b"RETURN", b"(ALL)"]
        if esearch:
            words = words[2:]
        found = [m.uid for m in self.server.messages if _matches(m, words)]
        if esearch:
            all_part = b" ALL " + ",".join(map(str, found)).encode() if found else b""
            self.untagged(name, f'* ESEARCH (TAG "{tag}") UID'.encode() + all_part)
        else:
            self.untagged(name, b"* SEARCH" + b"".join(b" %d" % uid for uid in found))
        return None

    async def _stream_huge_literal(self, uid: int, section: bytes, size: int) -> None:
        number = next(n for n, m in enumerate(self.server.messages, 1) if m.uid == uid)
        self.writer.write(b"* %d FETCH (UID %d %s {%d}\r\n" % (number, uid, section, size))
        chunk = (b"X" * 998 + b"\r\n") * 64
        sent = 0
        while sent < size and not self.writer.transport.is_closing():
            piece = chunk[: size - sent]
            self.writer.write(piece)
            sent += len(piece)
            await self.writer.drain()
        self.writer.write(b")\r\n")

    def _fetch(self, name: str, uids: set[int], items: bytes) -> bool:
        """The FETCH replies; True when ``cut_uid``'s cut fell in them (written up to it)."""
        partial = re.search(rb"BODY(?:\.PEEK)?\[\]<(\d+)\.(\d+)>", items)
        for number, message in enumerate(self.server.messages, start=1):
            if message.uid not in uids:
                continue
            parts = [b"UID %d" % message.uid]
            if b"RFC822.SIZE" in items:
                parts.append(b"RFC822.SIZE %d" % (len(message.body) + self.server.size_lies))
            if b"FLAGS" in items:
                parts.append(b"FLAGS (" + " ".join(sorted(message.flags)).encode() + b")")
            start, data = 0, b""
            if b"BODY" in items:
                if b"PEEK" not in items:
                    message.flags.add("\\Seen")
                if partial is None:
                    data = message.body
                    parts.append(b"BODY[] {%d}\r\n" % len(data) + data)
                else:
                    start = int(partial.group(1))
                    data = message.body[start : start + int(partial.group(2))]
                    parts.append(b"BODY[]<%d> {%d}\r\n" % (start, len(data)) + data)
            reply = b"* %d FETCH (" % number + b" ".join(parts) + b")"
            cut = self.server.cut_at - start
            if message.uid == self.server.cut_uid and data and 0 <= cut < len(data):
                self.writer.write(reply[: len(reply) - 1 - len(data) + cut])
                return True
            self.untagged(name, reply)
        return False

    def _store(self, uids: set[int], change: bytes, flags: bytes) -> None:
        names = set(flags.strip(b"()").decode().split())
        for message in self.server.messages:
            if message.uid in uids:
                if change.startswith(b"+"):
                    message.flags |= names
                elif change.startswith(b"-"):
                    message.flags -= names
                else:
                    message.flags = names

    def _expunge(self, name: str, only: set[int] | None) -> None:
        number = 1
        for message in list(self.server.messages):
            if "\\Deleted" in message.flags and (only is None or message.uid in only):
                self.server.messages.remove(message)
                self.untagged(name, b"* %d EXPUNGE" % number)
            else:
                number += 1


def _matches(message: FakeMessage, words: list[bytes]) -> bool:
    result = True
    negate = False
    for word in words:
        if word == b"NOT":
            negate = True
            continue
        flag = {b"SEEN": "\\Seen", b"DELETED": "\\Deleted"}.get(word.removeprefix(b"UN"))
        if flag is None:
            value = word == b"ALL"
        else:
            value = (flag in message.flags) != word.startswith(b"UN")
        result = result and (value != negate)
        negate = False
    return result


def _uids(sequence: bytes) -> set[int]:
    found: set[int] = set()
    for item in sequence.decode().split(","):
        low, _, high = item.partition(":")
        top = 2**32 if high == "*" else int(high or low)
        found.update(range(int(low), top + 1) if top < 2**31 else range(int(low), 10**6))
    return found


def _unquote(data: bytes) -> bytes:
    if data.startswith(b'"') and data.endswith(b'"'):
        return re.sub(rb'\\(["\\])', rb"\1", data[1:-1])
    return data
