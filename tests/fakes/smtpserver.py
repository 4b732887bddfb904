"""A scripted SMTP/LMTP listener on 127.0.0.1: it answers from a script, for the replies real
servers will not give on demand (a refused MAIL, RCPT, DATA or BDAT, LMTP per-recipient
verdicts, a 354 after every RCPT was refused) and for counting round trips.

It offers the extensions the script names (PIPELINING and CHUNKING by default), takes DATA and
BDAT (RFC 3030: a refused chunk's octets are read and discarded), and keeps a message only at
the final dot or ``BDAT n LAST``. For each command line it notes how many replies it had sent
when the read that brought the line returned (``Command.answered``): a client that pipelines
sends MAIL, every RCPT and DATA (or the first BDAT) before it got any reply, so they share one
value; one that waits for each reply does not.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class Script:
    extensions: tuple[str, ...] = ("PIPELINING", "CHUNKING", "8BITMIME")
    lmtp: bool = False
    mail: str = "250 2.1.0 Ok"
    rcpt: dict[str, str] = field(default_factory=dict)  # local part -> reply (default 250)
    data: str = "354 End data with <CR><LF>.<CR><LF>"
    data_anyway: bool = False  # 354 even with no valid recipient (against RFC 2920)
    bdat: dict[int, str] = field(default_factory=dict)  # chunk index (from 0) -> reply
    end: str = "250 2.0.0 Ok: queued"  # after the dot or BDAT LAST (SMTP)
    after_end: dict[str, str] = field(default_factory=dict)  # LMTP: local part -> reply
    silent_end: bool = False  # never answer the end of data
    # Answer a BDAT chunk only once BDAT LAST came: a client that waits for each reply stalls.
    hold_bdat: bool = False


@dataclass(frozen=True)
class Command:
    line: str
    answered: int  # replies sent before the read that brought this line returned


@dataclass
class Kept:
    sender: str
    rcpts: list[str]
    content: bytes


class ScriptedSMTP:
    def __init__(self, script: Script | None = None, path: str | None = None) -> None:
        self.script = script or Script()
        self.path = path  # a Unix socket instead of 127.0.0.1
        self.commands: list[Command] = []
        self.messages: list[Kept] = []
        self.partial: list[bytes] = []  # data of transactions that never reached their end
        self.sessions = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def __aenter__(self) -> ScriptedSMTP:
        if self.path is not None:
            self._server = await asyncio.start_unix_server(self._session, self.path)
            return self
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._open.values():
            writer.close()  # sessions still open end now, not when the loop is torn down
        await asyncio.gather(*self._open, return_exceptions=True)
        await self._server.wait_closed()

    def verbs(self) -> list[str]:
        return [c.line.split(" ", 1)[0].upper() for c in self.commands]

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = writer
        session = _Session(self, writer)
        writer.write(b"220 scripted.test ESMTP\r\n")
        try:
            while not session.closed:
                data = await reader.read(1 << 16)
                if not data:
                    break
                session.feed(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            if session.data:
                self.partial.append(bytes(session.data))
            writer.close()
            self._open.pop(task, None)


class _Session:
    def __init__(self, server: ScriptedSMTP, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.script = server.script
        self.writer = writer
        self.buffer = bytearray()
        self.held: list[str] = []
        self.replies = 0
        self.closed = False
        self.reset()

    def reset(self) -> None:
        self.sender: str | None = None
        self.rcpts: list[str] = []
        self.data = bytearray()
        self.in_data = False
        self.chunk_left = 0  # octets of the current BDAT chunk still to read
        self.chunk_last = False
        self.chunk_failed = False  # the chunk is read and discarded
        self.chunks = 0
        self.failed_bdat = False

    def reply(self, *lines: str) -> None:
        for line in lines:
            self.writer.write(line.encode() + b"\r\n")
            self.replies += 1

    def feed(self, data: bytes) -> None:
        answered = self.replies
        self.buffer += data
        while not self.closed:
            if self.chunk_left:
                take = bytes(self.buffer[: self.chunk_left])
                del self.buffer[: len(take)]
                self.chunk_left -= len(take)
                if not self.chunk_failed:
                    self.data += take
                if self.chunk_left:
                    return
                self._chunk_done()
                continue
            if self.in_data:
                start = max(0, len(self.data) - 4)
                self.data += self.buffer
                del self.buffer[:]
                if self.data.startswith(b".\r\n"):
                    cut = 0
                else:
                    found = self.data.find(b"\r\n.\r\n", start)
                    if found < 0:
                        return
                    cut = found + 2
                self.buffer = self.data[cut + 3 :]
                content = bytes(self.data[:cut]).replace(b"\r\n..", b"\r\n.")
                self.in_data = False
                self._end(content[1:] if content.startswith(b"..") else content)
                continue
            eol = self.buffer.find(b"\r\n")
            if eol < 0:
                return
            line = self.buffer[:eol].decode("utf-8", "replace")
            del self.buffer[: eol + 2]
            self.server.commands.append(Command(line, answered))
            self._command(line)

    def _valid(self) -> bool:
        return self.sender is not None and bool(self.rcpts)

    def _command(self, line: str) -> None:
        verb, _, rest = line.partition(" ")
        verb = verb.upper()
        if verb in ("EHLO", "LHLO"):
            names = ["scripted.test", *self.script.extensions]
            self.reply(*(f"250-{n}" for n in names[:-1]), f"250 {names[-1]}")
        elif verb == "MAIL":
            self.reset()
            self.reply(self.script.mail)
            if self.script.mail.startswith("250"):
                self.sender = rest.partition("<")[2].partition(">")[0]
        elif verb == "RCPT":
            address = rest.partition("<")[2].partition(">")[0]
            if self.sender is None:
                self.reply("503 5.5.1 Error: need MAIL command")
                return
            answer = self.script.rcpt.get(address.split("@")[0], "250 2.1.5 Ok")
            self.reply(answer)
            if answer.startswith("25"):
                self.rcpts.append(address)
        elif verb == "DATA":
            if self._valid() or self.script.data_anyway:
                self.reply(self.script.data)
                self.in_data = self.script.data.startswith("354")
            else:
                self.reply("554 5.5.1 Error: no valid recipients")
        elif verb == "BDAT":
            words = rest.split()
            self.chunk_left = int(words[0])
            self.chunk_last = len(words) > 1 and words[1].upper() == "LAST"
            self.chunk_failed = self.failed_bdat or not self._valid()
            if not self.chunk_left:
                self._chunk_done()
        elif verb == "RSET":
            self.reset()
            self.reply("250 2.0.0 Ok")
        elif verb == "QUIT":
            self.reply("221 2.0.0 Bye")
            self.closed = True
        else:
            self.reply("502 5.5.2 Error: command not recognized")

    def _chunk_done(self) -> None:
        index, self.chunks = self.chunks, self.chunks + 1
        if self.chunk_failed:
            self.reply("503 5.5.1 Error: no valid recipients" if not self._valid() else
                       "503 5.5.1 Error: transaction failed")  # fmt: skip
            return
        if self.chunk_last:
            answer = self.script.bdat.get(index)
            if answer is not None and not answer.startswith("250"):
                self.reply(answer)
                self.failed_bdat = True
                return
            self._end(bytes(self.data))
            return
        answer = self.script.bdat.get(index, f"250 2.0.5 {len(self.data)} octets received")
        if self.script.hold_bdat:
            self.held.append(answer)
        else:
            self.reply(answer)
        if not answer.startswith("250"):
            self.failed_bdat = True

    def _end(self, content: bytes) -> None:
        self.reply(*self.held)
        self.held = []
        if not self.script.silent_end:
            if self.script.lmtp:
                for rcpt in self.rcpts or ["nobody"]:
                    self.reply(self.script.after_end.get(rcpt.split("@")[0], "250 2.0.0 Ok"))
            else:
                self.reply(self.script.end)
        if self.script.lmtp:
            taken = [
                r
                for r in self.rcpts
                if self.script.after_end.get(r.split("@")[0], "250")[:3] == "250"
            ]
        else:
            taken = self.rcpts if self.script.end.startswith("250") else []
        if taken:
            self.server.messages.append(Kept(self.sender or "", taken, content))
        self.data = bytearray()
        self.sender, self.rcpts = None, []
