"""The POP3 client: a thin asyncio-streams loop around ``fetchd.pop3.protocol``.

Every wait has the account's timeout as its deadline, the TLS handshake included. With RFC 2449
PIPELINING, several RETR and DELE commands are in flight at once; replies still arrive, and are
read, strictly in order.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping, Sequence
from typing import TypeVar

import structlog

from fetchd.auth import kerberos, sasl
from fetchd.errors import (
    AuthError,
    CredentialsRejectedError,
    DNSError,
    FetchdError,
    FetchdTimeoutError,
    ProtocolError,
    SocketError,
    TLSError,
    connect_error,
)
from fetchd.net.plugin import Connector
from fetchd.net.tls import (
    Security,
    TLSSettings,
    check_peer,
    clear_password_error,
    make_context,
    no_starttls_error,
    server_hostname,
)
from fetchd.pop3.protocol import (
    MAX_DIGITS,
    MAX_LINE,
    BodyDecoder,
    MultilineDecoder,
    Reply,
    apop_timestamp,
    encode_command,
    error_for,
    parse_capabilities,
    parse_listing,
    parse_reply,
    shown,
)

log = structlog.get_logger("fetchd.pop3")

PIPELINE_WINDOW = 8  # commands in flight with PIPELINING: enough to hide the round trip
PIPELINE_BYTES = 1 << 20  # ... and about this much mail, by the sizes LIST gave
READ_CHUNK = 256 << 10  # a message is read in chunks of at most this many octets
# The stream's buffer (asyncio stops reading from the socket at twice this): small, so a message
# the deliverer takes slower than the server sends it waits in the kernel, not in our memory.
STREAM_LIMIT = 128 << 10
_T = TypeVar("_T")


class POP3Client:
    """One POP3 session; make it with ``POP3Client.connect``. Not reusable after an error."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        host: str,
        timeout: float,
        *,
        encrypted: bool,
    ) -> None:
        self.host = host
        self.timeout = timeout
        self.encrypted = encrypted
        self.capabilities: dict[str, tuple[str, ...]] = {}
        self.greeting: Reply | None = None
        self._reader = reader
        self._writer = writer
        self._unread = b""  # read past the end of a message: the start of the next reply

    # --- connecting -----------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int | None,
        *,
        tls: TLSSettings,
        timeout: float = 300.0,
        connector: Connector | None = None,
    ) -> POP3Client:
        """Connect, read the greeting, set up TLS as ``tls`` asks, learn the capabilities.

        ``connector``: the connection comes from a plugin command, not from TCP to host:port.
        """
        security = tls.security()
        context = make_context(tls) if security is not Security.PLAIN else None
        if port is None:
            port = 995 if security is Security.TLS else 110
        try:
            async with asyncio.timeout(timeout):
                sock = await connector() if connector is not None else None
                reader, writer = await asyncio.open_connection(
                    None if sock else host,
                    None if sock else port,
                    sock=sock,
                    limit=STREAM_LIMIT,
                    ssl=context if security is Security.TLS else None,
                    server_hostname=server_hostname(tls, host)
                    if security is Security.TLS
                    else None,
                    ssl_handshake_timeout=timeout if security is Security.TLS else None,
                )
        except TimeoutError:
            raise FetchdTimeoutError(f"{host}:{port}: no connection within {timeout:g} s") from None
        except socket.gaierror as exc:
            raise DNSError(f"cannot resolve {host}: {exc.strerror}") from None
        except ssl.SSLError as exc:
            raise TLSError(f"{host}:{port}: TLS handshake failed: {exc.reason or exc}") from None
        except OSError as exc:
            if security is Security.TLS and isinstance(exc, ConnectionResetError | BrokenPipeError):
                # Connected, then dropped: the server hung up on the handshake (a version it
                # refuses ...).
                raise TLSError(
                    f"{host}:{port}: TLS handshake failed: the server closed the connection"
                ) from None
            raise connect_error(host, port, exc) from None
        client = cls(reader, writer, host, timeout, encrypted=security is Security.TLS)
        try:
            if security is Security.TLS:
                check_peer(writer.get_extra_info("ssl_object"), tls, host)
            greeting = await client._status()
            if not greeting.ok:
                raise error_for(greeting, "connecting", host)
            client.greeting = greeting
            await client.capa()
            if security is Security.STARTTLS:
                if "STLS" in client.capabilities:
                    assert context is not None
                    await client._starttls(context, tls)
                elif tls.required_by is not None:
                    raise no_starttls_error(tls, host, "STLS")
                # Otherwise go on in clear: nothing secret has been sent, and login() refuses
                # the password unless the entry says `sslproto ''`.
        except BaseException:
            client.close()
            raise
        return client

    async def _starttls(self, context: ssl.SSLContext, tls: TLSSettings) -> None:
        reply = await self.command("STLS")
        if not reply.ok:
            raise TLSError(
                f"{self.host}: STLS refused ({shown(reply.text)}); not continuing without TLS"
            )
        # Bytes that arrived before the handshake were not protected by it (STARTTLS
        # injection, CVE-2011-0411 and kin): refuse them rather than read them as a reply.
        if self._unread or getattr(self._reader, "_buffer", b""):  # no public way to ask
            raise TLSError(f"{self.host}: the server sent data before the TLS handshake")
        try:
            await self._wait(
                self._writer.start_tls(
                    context,
                    server_hostname=server_hostname(tls, self.host),
                    ssl_handshake_timeout=self.timeout,
                )
            )
        except ssl.SSLError as exc:
            raise TLSError(f"{self.host}: TLS handshake failed: {exc.reason or exc}") from None
        except SocketError:  # the server hung up during the handshake (a version it refuses ...)
            raise TLSError(
                f"{self.host}: TLS handshake failed: the server closed the connection"
            ) from None
        check_peer(self._writer.get_extra_info("ssl_object"), tls, self.host)
        self.encrypted = True
        self.capabilities = {}
        await self.capa()  # what the server offered before TLS means nothing now

    # --- authentication -------------------------------------------------------------------

    async def login(
        self,
        user: str,
        password: str,
        *,
        auth: str = "any",
        apop: bool = False,
        plaintext_allowed: bool = False,
        gssapi_target: str = "",
    ) -> None:
        """Authenticate as fetchmail's ``auth`` asks; never fall back to a weaker mechanism
        than the rc file names. ``gssapi_target``: the Kerberos service principal (``auth
        gssapi``/``kerberos_v5``; ``auth any`` tries it first when offered with a ticket)."""
        offered = {m.upper() for m in self.capabilities.get("SASL", ())}
        if auth in kerberos.KERBEROS_AUTH:  # no password is sent: no TLS rule to apply
            if self.capabilities and "GSSAPI" not in offered:
                raise AuthError(
                    f"{self.host} does not offer AUTH GSSAPI, which the rc file asks for; "
                    "not trying a weaker mechanism"
                )
            await self.authenticate(await kerberos.start(gssapi_target, user))
            return
        gssapi_first = auth == "any" and gssapi_target and "GSSAPI" in offered
        if gssapi_first and await self._gssapi_any(gssapi_target, user):
            return
        if not (self.encrypted or plaintext_allowed):
            raise clear_password_error(self.host)
        if apop:
            await self._apop(user, password)
        elif auth in ("any", "password"):
            await self._user_pass(user, password)
        elif auth in ("cram-md5", "xoauth2", "oauthbearer", "plain", "login"):
            name = auth.upper()
            if self.capabilities and name not in offered:
                raise AuthError(
                    f"{self.host} does not offer AUTH {name}, which the rc file "
                    "asks for; not trying a weaker mechanism"
                )
            await self.authenticate(sasl.mechanism(auth, user, password))
        else:
            raise AuthError(f"authentication {auth!r} is not supported by fetchd for POP3")

    async def _gssapi_any(self, target: str, user: str) -> bool:
        """``auth any``: GSSAPI when a ticket is there; False (go on with the password) when
        there is none or the ticket or the server refuses it before anything was settled."""
        if not await asyncio.to_thread(kerberos.has_ticket):
            return False
        try:
            await self.authenticate(await kerberos.start(target, user))
        except (CredentialsRejectedError, kerberos.StartError) as exc:
            log.info("auth.gssapi_declined", host=self.host, reason=str(exc))
            return False
        return True

    async def _user_pass(self, user: str, password: str) -> None:
        reply = await self.command("USER", user)
        if not reply.ok:
            raise error_for(reply, "USER", self.host)
        reply = await self.command("PASS", password, secret=True)
        if not reply.ok:
            raise error_for(reply, "PASS", self.host)

    async def _apop(self, user: str, password: str) -> None:
        assert self.greeting is not None
        stamp = apop_timestamp(self.greeting)
        if stamp is None:
            raise AuthError(f"{self.host} did not offer APOP (no timestamp in its greeting)")
        digest = hashlib.md5((stamp + password).encode(), usedforsecurity=False).hexdigest()
        reply = await self.command("APOP", user, digest, secret=True)
        if not reply.ok:
            raise error_for(reply, "APOP", self.host)

    async def authenticate(self, mechanism: sasl.Mechanism) -> None:
        initial = mechanism.initial_response()
        args = [mechanism.name]
        encoded = b"" if initial is None else base64.b64encode(initial) or b"="
        # RFC 5034, section 4: an initial response that would make the command line longer
        # than 255 octets goes after the server's first (empty) challenge instead.
        pending = None
        if initial is not None and len(encoded) + len(mechanism.name) + 7 > 255:
            pending, initial = encoded, None
        elif initial is not None:
            args.append(encoded.decode())
        self._send(
            encode_command("AUTH", *args),
            f"AUTH {mechanism.name}" + (" *" if initial is not None else ""),
        )
        while True:
            line = await self._line()
            if line.startswith(b"+ ") or line == b"+":
                try:
                    challenge = base64.b64decode(line[2:], validate=True)
                except ValueError:
                    raise ProtocolError(f"{self.host}: malformed AUTH challenge") from None
                if pending is not None:
                    self._send(pending + b"\r\n", "*")
                    pending = None
                    continue
                answer = mechanism.respond(challenge)
                self._send(base64.b64encode(answer) + b"\r\n", "*")
                continue
            reply = parse_reply(line)
            if not reply.ok:
                raise error_for(reply, f"AUTH {mechanism.name}", self.host)
            return

    # --- transaction ----------------------------------------------------------------------

    async def capa(self) -> None:
        reply = await self.command("CAPA")
        if reply.ok:
            self.capabilities = parse_capabilities(await self._multiline())

    async def stat(self) -> tuple[int, int]:
        reply = await self._checked("STAT")
        parts = reply.text.split()
        if len(parts) < 2 or not all(
            p.isascii() and p.isdigit() and len(p) <= MAX_DIGITS for p in parts[:2]
        ):
            raise ProtocolError(f"{self.host}: malformed STAT reply {shown(reply.text)!r}")
        return int(parts[0]), int(parts[1])

    async def list_sizes(self) -> dict[int, int]:
        await self._checked("LIST")
        return {n: int(v) for n, v in parse_listing(await self._multiline(), "LIST").items()}

    async def uidl(self) -> dict[int, str] | None:
        """Every message's UID, or None when the server has no UIDL."""
        reply = await self.command("UIDL")
        if not reply.ok:
            return None
        return parse_listing(await self._multiline(), "UIDL")

    async def retrieve(
        self, numbers: Sequence[int], sizes: Mapping[int, int] | None = None
    ) -> AsyncIterator[tuple[int, AsyncIterator[bytes]]]:
        """RETR each message, pipelined when the server allows; yield each one's body as a
        stream of dot-unstuffed chunks (ending only after the terminating dot), in order.

        The consumer reads a body before asking for the next message; whatever it leaves is
        read and dropped here. At most PIPELINE_WINDOW commands and (by the listed ``sizes``)
        about PIPELINE_BYTES of replies are in flight, and at most one chunk of a message is
        held, so memory stays bounded at any message size.
        """
        window = PIPELINE_WINDOW if "PIPELINING" in self.capabilities else 1
        sizes = sizes or {}
        pending: deque[int] = deque()
        in_flight = 0
        queue = deque(numbers)

        def send_more() -> None:
            nonlocal in_flight
            while queue and len(pending) < window and (not pending or in_flight < PIPELINE_BYTES):
                number = queue.popleft()
                self._send(encode_command("RETR", str(number)))
                pending.append(number)
                in_flight += max(sizes.get(number, 0), 0)

        send_more()
        while pending:
            number = pending.popleft()
            in_flight -= max(sizes.get(number, 0), 0)
            reply = await self._status()
            if not reply.ok:
                raise error_for(reply, f"RETR {number}", self.host)
            decoder = BodyDecoder()
            chunks = self._body_chunks(decoder)
            yield number, chunks
            async for _ in chunks:
                pass  # what the consumer did not read (a refused message)
            if not decoder.done:  # the consumer stopped at an error: nothing more to read
                raise SocketError(f"{self.host}: a message was not read to its end")
            send_more()

    async def delete(self, numbers: Iterable[int]) -> None:
        """DELE each message (pipelined when allowed); nothing is gone before QUIT."""
        window = PIPELINE_WINDOW if "PIPELINING" in self.capabilities else 1
        numbers = list(numbers)
        for start in range(0, len(numbers), window):
            batch = numbers[start : start + window]
            for number in batch:
                self._send(encode_command("DELE", str(number)))
            for number in batch:
                reply = await self._status()
                if not reply.ok:
                    raise error_for(reply, f"DELE {number}", self.host)

    async def quit(self) -> None:
        """QUIT, which makes the server perform the deletions; its +OK is the proof."""
        try:
            reply = await self.command("QUIT")
            if not reply.ok:
                raise error_for(reply, "QUIT", self.host)
        finally:
            self.close()

    def close(self) -> None:
        """Drop the connection; without QUIT the server keeps every message."""
        transport = self._writer.transport
        if not transport.is_closing():
            transport.abort()

    # --- the wire ----------------------------------------------------------------------------

    async def command(self, verb: str, *args: str, secret: bool = False) -> Reply:
        # A secret argument is shown as "*" in the dialogue (-v): PASS, APOP's digest.
        shown_as = (
            f"{verb} {args[0]} *"
            if secret and verb == "APOP"
            else (f"{verb} *" if secret else None)
        )
        self._send(encode_command(verb, *args), shown_as)
        return await self._status()

    async def _checked(self, verb: str, *args: str) -> Reply:
        reply = await self.command(verb, *args)
        if not reply.ok:
            raise error_for(reply, verb, self.host)
        return reply

    def _send(self, data: bytes, shown_as: str | None = None) -> None:
        """Write a command; ``shown_as`` replaces it in the -v dialogue when it holds a secret."""
        if self._writer.transport.is_closing():
            raise SocketError(f"{self.host}: the connection is closed")
        if log.is_enabled_for(logging.DEBUG):
            text = shown_as if shown_as is not None else shown(data.rstrip(b"\r\n"))
            log.debug("pop3.send", text=f"POP3> {text}")
        self._writer.write(data)

    async def _wait(self, awaitable: Awaitable[_T]) -> _T:
        try:
            async with asyncio.timeout(self.timeout):
                return await awaitable
        except TimeoutError:
            raise FetchdTimeoutError(f"{self.host}: no answer within {self.timeout:g} s") from None
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            if isinstance(exc, FetchdError):
                raise
            raise SocketError(f"{self.host}: the connection broke") from None

    async def _raw_line(self) -> bytes:
        """One line with its ending, from what a message's last chunk left over first."""
        start = b""
        if self._unread:
            newline = self._unread.find(b"\n")
            if newline >= 0:
                line, self._unread = self._unread[: newline + 1], self._unread[newline + 1 :]
                return line
            start, self._unread = self._unread, b""
        try:
            return start + await self._wait(self._reader.readuntil(b"\n"))
        except asyncio.LimitOverrunError:
            raise ProtocolError(f"{self.host}: a reply line exceeds every limit") from None

    async def _line(self) -> bytes:
        line = await self._raw_line()
        if len(line) > MAX_LINE:
            raise ProtocolError(f"{self.host}: a reply line of {len(line)} octets")
        line = line.rstrip(b"\r\n")
        if log.is_enabled_for(logging.DEBUG):
            log.debug("pop3.recv", text=f"POP3< {shown(line)}")
        return line

    async def _status(self) -> Reply:
        return parse_reply(await self._line())

    async def _multiline(self) -> list[bytes]:
        decoder = MultilineDecoder(limit=MAX_LINE * 1024)
        while not decoder.done:
            decoder.feed(await self._raw_line())
        return decoder.lines()

    async def _body_chunks(self, decoder: BodyDecoder) -> AsyncIterator[bytes]:
        """One message body, as it arrives; an end of file before its dot is an error."""
        while not decoder.done:
            if self._unread:
                data, self._unread = self._unread, b""
            else:
                data = await self._wait(self._reader.read(READ_CHUNK))
                if not data:
                    raise SocketError(f"{self.host}: the connection broke in a message")
            out, used = decoder.feed(data)
            if used < len(data):
                self._unread = data[used:]  # the next reply's: pipelined RETR
            if out:
                yield out
