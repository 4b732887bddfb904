"""An IMAP client session: a thin asyncio loop around the pure reader of ``fetchd.imap.parse``.

Built on aioimaplib's ``IMAP4ClientProtocol`` (transport, tags), with its receiving side
replaced, because as shipped it cannot be trusted with a large or hostile mailbox: it recurses
once per response line (RecursionError past ~1,000 lines), scans the whole reply on every FETCH
line (quadratic), formats every received chunk into a debug string, accepts a literal of any
announced size, and finds PREAUTH by substring. Here ``data_received`` only feeds
``ResponseReader`` and queues whole responses; this module sends one command at a time and reads
its responses in order, checking every tagged reply and turning NO/BAD/BYE into our errors.

Also what aioimaplib lacks: STARTTLS on its transport (bytes buffered before the handshake are
refused: fetchmail's CVE-2021-39272 class), a PREAUTH greeting refused when TLS was asked for,
LOGIN with literals when the password needs them, AUTHENTICATE with any SASL mechanism, and a
deadline on every wait (``timeout`` seconds without a single octet from the server).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import enum
import logging
import socket
import ssl
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aioimaplib import aioimaplib  # type: ignore[import-untyped]  # ships no type information

from fetchd.errors import (
    AuthError,
    CredentialsRejectedError,
    DNSError,
    FetchdError,
    FetchdTimeoutError,
    ProtocolError,
    ServerBusyError,
    ServerError,
    SocketError,
    TLSError,
    connect_error,
)
from fetchd.imap.command import Argument, Literal, encode_astring, encode_mailbox
from fetchd.imap.parse import (
    MAX_LITERAL,
    Capability,
    Continuation,
    Count,
    Fetch,
    RawResponse,
    ResponseReader,
    Search,
    Status,
    Tagged,
    encode_sequence_set,
    parse_response,
)
from fetchd.imap.parse import (
    Response as ParsedResponse,
)
from fetchd.limits import literal_cap
from fetchd.net import keepalive
from fetchd.net.plugin import Connector
from fetchd.net.tls import clear_password_error

log = structlog.get_logger("fetchd.imap")

# Whole responses queued ahead of the reader before we stop reading the socket: memory stays
# bounded by this (plus one message) however fast the server sends.
HIGH_WATER = 2 << 20
LOW_WATER = 512 << 10
BUSY_CODES = frozenset({"INUSE", "UNAVAILABLE", "LIMIT"})


class Security(enum.Enum):
    """How the connection is protected."""

    PLAIN = "plain"  # no TLS: only when the user turned it off
    TLS = "tls"  # implicit TLS (port 993)
    STARTTLS = "starttls"  # plain connect, then STARTTLS before anything else


class NoSTARTTLSError(TLSError):
    """STARTTLS was asked for and the server does not offer it."""


class SASLMechanism(Protocol):
    """One SASL exchange as AUTHENTICATE needs it (see ``fetchd.auth.sasl``)."""

    @property
    def name(self) -> str:
        """The mechanism's registered name, e.g. ``PLAIN``."""
        ...

    def initial_response(self) -> bytes | None:
        """The client's first message, or None if the server speaks first."""
        ...

    def respond(self, challenge: bytes) -> bytes:
        """The answer to one server challenge (already base64-decoded)."""
        ...


@dataclass(frozen=True, slots=True)
class SelectedMailbox:
    """What SELECT told us."""

    name: str
    uidvalidity: int
    exists: int
    uidnext: int | None
    read_only: bool


class _Protocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol with its line loop replaced by ``ResponseReader`` and a queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reader: ResponseReader) -> None:
        super().__init__(loop)
        self.reader = reader
        self.received = 0  # octets ever received: a wait that sees them grow is not stalled
        self.stop_after_tag: bytes | None = None  # pause reading after this tagged reply
        self.injected = False  # bytes came after that tagged reply, before we could react
        self._ready: deque[tuple[RawResponse, int]] = deque()
        self._queued = 0
        self._paused = False
        self._failure: FetchdError | None = None
        self._waiter: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        # No debug formatting of ``data`` here: it would cost a repr of every octet received.
        self.received += len(data)
        try:
            responses = self.reader.feed(data)
        except FetchdError as exc:
            self._fail(exc)
            return
        for index, raw in enumerate(responses):
            size = len(raw.first_line) + sum(map(len, raw.literals))
            self._ready.append((raw, size))
            self._queued += size
            if self.stop_after_tag is not None and raw.first_line.startswith(self.stop_after_tag):
                self._pause()
                self.stop_after_tag = None
                self.injected = index + 1 < len(responses) or self.reader.in_response
                break
        if self._queued > HIGH_WATER:
            self._pause()
        self._wake()

    def eof_received(self) -> bool | None:
        try:
            self.reader.feed(b"")
        except FetchdError as exc:
            self._fail(exc)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._failure is None:
            self._failure = SocketError(
                "connection to the IMAP server closed" + (f": {exc}" if exc else "")
            )
        self._wake()

    def has_ready(self) -> bool:
        """A whole response is waiting: ``next_response`` will not block."""
        return bool(self._ready)

    async def next_response(self) -> RawResponse:
        """The next whole response; the connection's failure once none are left."""
        while not self._ready:
            if self._failure is not None:
                raise self._failure
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        raw, size = self._ready.popleft()
        self._queued -= size
        if self._paused and self._queued < LOW_WATER and self.stop_after_tag is None:
            self._paused = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()
        return raw

    def has_buffered(self) -> bool:
        """Responses or partial bytes received and not yet consumed."""
        return bool(self._ready) or self.reader.in_response

    def _pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _fail(self, exc: FetchdError) -> None:
        if self._failure is None:
            self._failure = exc
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class IMAPClient:
    """One IMAP connection, made by ``IMAPClient.connect``; never reused after an error."""

    def __init__(
        self,
        protocol: _Protocol,
        host: str,
        timeout: float,
        *,
        encrypted: bool,
        plaintext_allowed: bool,
    ) -> None:
        self.host = host
        self.timeout = timeout
        self.encrypted = encrypted
        self.capabilities: frozenset[str] = frozenset()
        self.selected: SelectedMailbox | None = None
        self.preauthenticated = False
        self._protocol = protocol
        self._plaintext_allowed = plaintext_allowed
        self._server_hostname = host
        self._check_peer: Callable[[Any], None] | None = None
        self._broken: FetchdError | None = None
        self._bye: str | None = None
        self._tagged: Tagged | None = None  # the tagged reply of the command in progress
        self._pending_tag = ""

    # --- connecting ---------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        security: Security,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 300.0,
        max_literal: int = MAX_LITERAL,
        plaintext_password_allowed: bool = False,
        starttls_optional: bool = False,
        connector: Connector | None = None,
        server_hostname: str | None = None,
        check_peer: Callable[[Any], None] | None = None,
    ) -> IMAPClient:
        """Connect, read the greeting, set up TLS as ``security`` asks, learn the capabilities.

        ``plaintext_password_allowed``: the user explicitly turned TLS off, so a password may
        cross an unencrypted connection (to any host, loopback included).
        ``starttls_optional``: with STARTTLS, a server that does not offer it is used in clear
        (no password crosses unless allowed); otherwise that is a ``NoSTARTTLSError``.
        ``connector``: the connection comes from a plugin command, not from TCP to host:port.
        ``server_hostname``: the name the certificate must carry (``sslcommonname``; ``host``).
        ``check_peer``: called with the SSL object right after each handshake, before any
        command is sent over it (the ``sslfingerprint`` pin); it raises to refuse the peer.
        """
        if security is not Security.PLAIN and ssl_context is None:
            raise TLSError(f"{security.value} needs an SSL context")
        loop = asyncio.get_running_loop()
        protocol = _Protocol(loop, ResponseReader(max_literal=literal_cap(max_literal)))
        implicit = security is Security.TLS
        try:
            async with asyncio.timeout(timeout):
                tls_options: dict[str, Any] = {
                    "ssl": ssl_context if implicit else None,
                    "server_hostname": (server_hostname or host) if implicit else None,
                    "ssl_handshake_timeout": timeout if implicit else None,
                }
                if connector is None:
                    await loop.create_connection(lambda: protocol, host, port, **tls_options)
                else:
                    sock = await connector()
                    await loop.create_connection(lambda: protocol, sock=sock, **tls_options)
        except OSError as exc:  # refused, DNS, TLS, timeout: all OSError subclasses
            if implicit and isinstance(exc, ConnectionResetError | BrokenPipeError):
                raise TLSError(
                    f"{host}:{port}: TLS failed: the server closed the connection during the "
                    "handshake"
                ) from None
            raise _connect_error(exc, host, port) from exc
        assert protocol.transport is not None
        keepalive.enable(protocol.transport)
        client = cls(
            protocol,
            host,
            timeout,
            encrypted=implicit,
            plaintext_allowed=plaintext_password_allowed and security is Security.PLAIN,
        )
        client._server_hostname = server_hostname or host
        client._check_peer = check_peer
        try:
            if implicit and check_peer is not None:
                check_peer(protocol.transport.get_extra_info("ssl_object"))
            await client._greeting(security)
            if security is Security.STARTTLS:
                assert ssl_context is not None
                await client._starttls(ssl_context, optional=starttls_optional)
            if not client.capabilities:
                await client.capability()
            if "IMAP4REV1" not in client.capabilities:
                raise ProtocolError(f"{host} is not an IMAP4rev1 server")
        except BaseException:
            client.close()
            raise
        return client

    async def _greeting(self, security: Security) -> None:
        response = await self._next()
        if not isinstance(response, Status) or response.status not in ("OK", "PREAUTH", "BYE"):
            raise ProtocolError("the server's first line is not an IMAP greeting")
        if response.status == "BYE":
            raise ServerBusyError(f"server refused the connection: {_capped(response.text)}")
        if response.status == "PREAUTH":
            if security is Security.STARTTLS:
                # An already authenticated session cannot be upgraded: going on would send
                # everything in clear while the user asked for TLS (CVE-2021-39272).
                raise TLSError("server sent a PREAUTH greeting: STARTTLS is impossible, aborting")
            self.preauthenticated = True
        self._learn_capabilities(response.code)

    async def _starttls(self, context: ssl.SSLContext, *, optional: bool) -> None:
        if "STARTTLS" not in self.capabilities:
            await self.capability()
        if "STARTTLS" not in self.capabilities:
            if optional:
                return  # in clear: _require_safe_channel keeps the password back
            raise NoSTARTTLSError(f"{self.host} does not offer STARTTLS")
        protocol = self._protocol
        tag = protocol.new_tag()
        protocol.stop_after_tag = tag.encode() + b" "
        tagged = await self._execute(b"STARTTLS", tag=tag)
        _check(tagged, "STARTTLS", TLSError)
        if protocol.injected or protocol.has_buffered():
            raise TLSError("server sent data after STARTTLS before the TLS handshake; refused")
        transport = protocol.transport
        assert transport is not None
        try:
            async with asyncio.timeout(self.timeout):
                protocol.transport = await asyncio.get_running_loop().start_tls(
                    transport,
                    protocol,
                    context,
                    server_hostname=self._server_hostname,
                    ssl_handshake_timeout=self.timeout,
                )
        except (ssl.SSLError, ssl.CertificateError, TimeoutError) as exc:
            raise _connect_error(exc, self.host, None) from exc
        except OSError:  # the server hung up during the handshake (a version it refuses ...)
            raise TLSError(
                f"{self.host}: TLS failed: the server closed the connection during the handshake"
            ) from None
        if self._check_peer is not None:
            self._check_peer(protocol.transport.get_extra_info("ssl_object"))
        self.encrypted = True
        protocol._paused = False
        # What the server said before TLS may have been forged; ask again (RFC 3501 6.2.1).
        self.capabilities = frozenset()
        await self.capability()

    # --- commands -----------------------------------------------------------------------------

    async def capability(self) -> frozenset[str]:
        """Ask CAPABILITY and remember the answer."""
        found: list[frozenset[str]] = []

        def collect(response: ParsedResponse) -> None:
            if isinstance(response, Capability):
                found.append(response.names)

        _check(await self._execute(b"CAPABILITY", on_untagged=collect), "CAPABILITY")
        if not found:
            raise ProtocolError("CAPABILITY answered without a capability list")
        self.capabilities = found[-1]
        return self.capabilities

    async def login(self, user: str, password: str) -> None:
        """LOGIN, refused when the server says LOGINDISABLED or the channel is unsafe."""
        self._require_safe_channel("LOGIN")
        if "LOGINDISABLED" in self.capabilities:
            raise AuthError(f"{self.host} disables LOGIN on this connection (LOGINDISABLED)")
        try:
            arguments = [encode_astring(user), encode_astring(password)]
        except ValueError as exc:
            raise AuthError(f"user name or password cannot be sent: {exc}") from None
        tagged = await self._execute(b"LOGIN", *arguments, secret=True)
        _check(tagged, "LOGIN", CredentialsRejectedError)
        await self._after_authentication(tagged)

    async def authenticate(self, mechanism: SASLMechanism, *, sends_secret: bool = True) -> None:
        """AUTHENTICATE with ``mechanism``; AuthError if the server does not offer it.

        ``sends_secret``: the exchange reveals the password or token to a listener (PLAIN,
        LOGIN, XOAUTH2, OAUTHBEARER), so the plaintext rule applies.
        """
        name = mechanism.name.upper()
        if f"AUTH={name}" not in self.capabilities:
            raise AuthError(f"{self.host} does not offer AUTHENTICATE {name}")
        if sends_secret:
            self._require_safe_channel(f"AUTHENTICATE {name}")
        initial = mechanism.initial_response()
        arguments: list[Argument] = [name.encode()]
        if initial is not None and "SASL-IR" in self.capabilities:
            arguments.append(base64.b64encode(initial) or b"=")
            initial = None
        tagged = await self._execute(
            b"AUTHENTICATE", *arguments, secret=True, sasl=_SASLState(mechanism, initial)
        )
        _check(tagged, f"AUTHENTICATE {name}", CredentialsRejectedError)
        await self._after_authentication(tagged)

    async def select(self, folder: str) -> SelectedMailbox:
        """SELECT ``folder`` read-write; its UIDVALIDITY is required."""
        found: dict[str, int] = {}

        def collect(response: ParsedResponse) -> None:
            if isinstance(response, Status) and response.code:
                name, _, value = response.code.partition(" ")
                if (
                    name.upper() in ("UIDVALIDITY", "UIDNEXT")
                    and value.isascii()
                    and value.isdigit()
                    and len(value) <= 10  # 32 bits (RFC 3501); int() refuses 4300 digits
                ):
                    found[name.upper()] = int(value)
            elif isinstance(response, Count) and response.kind == "EXISTS":
                found["EXISTS"] = response.number

        self.selected = None
        tagged = await self._execute(b"SELECT", encode_mailbox(folder), on_untagged=collect)
        _check(tagged, f"SELECT {folder}")
        if not 1 <= found.get("UIDVALIDITY", 0) < 2**32:
            raise ProtocolError(f"SELECT {folder}: the server sent no valid UIDVALIDITY")
        self.selected = SelectedMailbox(
            folder,
            found["UIDVALIDITY"],
            found.get("EXISTS", 0),
            found.get("UIDNEXT"),
            read_only=(tagged.code or "").upper() == "READ-ONLY",
        )
        return self.selected

    async def uid_search(self, criteria: bytes) -> list[int]:
        """UIDs matching ``criteria`` (ESEARCH when offered: one compact line for any count)."""
        found: list[int] = []

        def collect(response: ParsedResponse) -> None:
            if isinstance(response, Search):
                found.extend(response.numbers)

        if "ESEARCH" in self.capabilities:
            command = [b"UID", b"SEARCH", b"RETURN", b"(ALL)", criteria]
        else:
            command = [b"UID", b"SEARCH", criteria]
        _check(await self._execute(*command, on_untagged=collect), "UID SEARCH")
        return found

    async def uid_fetch(self, uids: Iterable[int], items: bytes) -> AsyncGenerator[Fetch, None]:
        """UID FETCH: yield each FETCH response (even unsolicited ones) as soon as it is whole."""
        tag = self._protocol.new_tag()
        await self._send(tag, [b"UID", b"FETCH", encode_sequence_set(uids).encode(), items])
        async with contextlib.aclosing(self._responses(tag)) as responses:
            async for response in responses:
                if isinstance(response, Fetch):
                    yield response
                else:
                    self._untagged(response)
        assert self._tagged is not None
        _check(self._tagged, "UID FETCH")

    async def uid_store(self, uids: Iterable[int], change: bytes, flags: bytes) -> None:
        """UID STORE ``change`` (e.g. ``+FLAGS.SILENT``) ``flags`` on ``uids``."""
        sequence = encode_sequence_set(uids).encode()
        tagged = await self._execute(b"UID", b"STORE", sequence, change, flags)
        _check(tagged, "UID STORE")

    async def uid_expunge(self, uids: Iterable[int]) -> None:
        """UID EXPUNGE (UIDPLUS): remove exactly these UIDs if they carry \\Deleted."""
        if "UIDPLUS" not in self.capabilities:
            raise ProtocolError("UID EXPUNGE needs the UIDPLUS capability")
        sequence = encode_sequence_set(uids).encode()
        _check(await self._execute(b"UID", b"EXPUNGE", sequence), "UID EXPUNGE")

    async def expunge(self) -> None:
        """EXPUNGE: remove every message of the mailbox that carries \\Deleted."""
        _check(await self._execute(b"EXPUNGE"), "EXPUNGE")

    async def noop(self) -> None:
        """NOOP (lets the server report changes)."""
        _check(await self._execute(b"NOOP"), "NOOP")

    async def idle(self, wait: float) -> bool:
        """RFC 2177 IDLE for up to ``wait`` seconds; True when the server reported a change.

        Any EXISTS, RECENT, EXPUNGE or FETCH ends it at once. A timeout is not an error: it is
        the renewal (servers drop an IDLE after 30 minutes). A connection that died silently
        shows when DONE gets no tagged reply within the server timeout.
        """
        if "IDLE" not in self.capabilities:
            raise ProtocolError(f"{self.host} does not support IDLE")
        tag = self._protocol.new_tag()
        await self._send(tag, [b"IDLE"])
        response = await self._next()
        while not isinstance(response, Continuation):
            if isinstance(response, Tagged):
                self._tagged = self._own(response)
                _check(self._tagged, "IDLE", None)
                raise ProtocolError(f"{self.host} ended IDLE before it began")
            self._untagged(response)
            response = await self._next()
        changed = False
        try:
            async with asyncio.timeout(wait):
                while not changed:
                    raw = await self._protocol.next_response()
                    parsed = parse_response(raw)
                    self._untagged(parsed)
                    changed = isinstance(parsed, Count | Fetch)
        except TimeoutError:
            pass
        except FetchdError as exc:
            self._break(exc)
            raise
        self._write(b"DONE\r\n")
        async with contextlib.aclosing(self._responses(tag)) as responses:
            async for item in responses:
                self._untagged(item)
        assert self._tagged is not None
        _check(self._tagged, "IDLE", None)
        return changed

    async def logout(self) -> None:
        """LOGOUT and close; a server that hangs up first is fine, the session is over anyway."""
        try:
            if self._broken is None:
                await self._execute(b"LOGOUT")
        except SocketError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Drop the connection at once (no LOGOUT): the server commits nothing more."""
        transport = self._protocol.transport
        if transport is not None and not transport.is_closing():
            transport.abort()
        if self._broken is None:
            self._broken = SocketError("IMAP connection closed")

    # --- the command loop ---------------------------------------------------------------------

    async def _execute(
        self,
        *words: Argument,
        tag: str | None = None,
        on_untagged: Callable[[ParsedResponse], None] | None = None,
        secret: bool = False,
        sasl: _SASLState | None = None,
    ) -> Tagged:
        tag = tag or self._protocol.new_tag()
        await self._send(tag, list(words), secret=secret)
        async with contextlib.aclosing(self._responses(tag, sasl=sasl)) as responses:
            async for response in responses:
                self._untagged(response)
                if on_untagged is not None:
                    on_untagged(response)
        assert self._tagged is not None
        return self._tagged

    async def _send(self, tag: str, words: list[Argument], *, secret: bool = False) -> None:
        """Send a command; at each literal, wait for the server's ``+`` before its octets."""
        if self._broken is not None:
            raise self._broken
        if self._pending_tag and self._tagged is None:
            # The previous command's reply was not read to its end (its reader was dropped):
            # the stream is out of step, so this connection is done.
            self._break(ProtocolError("IMAP command abandoned before its tagged reply"))
            raise self._broken  # type: ignore[misc]
        self._tagged = None
        self._pending_tag = tag
        if log.is_enabled_for(logging.DEBUG):
            log.debug("imap.send", text=f"IMAP> {_traced(tag, words, secret=secret)}")
        line = tag.encode()
        for word in words:
            if isinstance(word, Literal):
                self._write(line + b" {%d}\r\n" % len(word.data))
                response = await self._next()
                while not isinstance(response, Continuation | Tagged):
                    self._untagged(response)
                    response = await self._next()
                if isinstance(response, Tagged):
                    self._tagged = self._own(response)
                    _check(self._tagged, "command with a literal", AuthError if secret else None)
                    raise ProtocolError("server completed a command before its literal was sent")
                line = word.data
            else:
                line += b" " + word
        self._write(line + b"\r\n")

    async def _responses(
        self, tag: str, *, sasl: _SASLState | None = None
    ) -> AsyncGenerator[ParsedResponse, None]:
        """Untagged responses until the tagged reply to ``tag`` (kept in ``_tagged``)."""
        completed = self._tagged is not None
        try:
            while not completed:
                response = await self._next()
                if isinstance(response, Tagged):
                    self._tagged = self._own(response)
                    completed = True
                elif isinstance(response, Continuation):
                    if sasl is None:
                        raise ProtocolError("server asked for a continuation we did not offer")
                    log.debug("imap.send", text="IMAP> *")  # a SASL answer: always secret
                    self._write(sasl.answer(response.text) + b"\r\n")
                else:
                    yield response
        finally:
            if not completed:
                # Abandoned mid-reply (error, cancellation, consumer stopped): the stream is
                # out of step with our commands, so the connection is never used again.
                self._break(ProtocolError("IMAP command abandoned before its tagged reply"))

    def _own(self, response: Tagged) -> Tagged:
        if response.tag != self._pending_tag:
            raise ProtocolError(f"tagged reply for unknown tag {response.tag[:20]!r}")
        if log.is_enabled_for(logging.DEBUG):
            code = f"[{response.code}] " if response.code else ""
            reply = f"{response.tag} {response.status} {code}{response.text}"
            log.debug("imap.recv", text=f"IMAP< {_capped(reply)}")
        return response

    def _untagged(self, response: ParsedResponse) -> None:
        """What any untagged response means for the session, whatever command is running."""
        if not isinstance(response, Status):
            if isinstance(response, Capability):
                self.capabilities = response.names
            return
        if response.status == "BYE":
            self._bye = response.text
            return
        code = (response.code or "").upper()
        if code.startswith("UIDVALIDITY ") and self.selected is not None:
            if code.split()[1:2] != [str(self.selected.uidvalidity)]:  # may be empty
                raise ProtocolError(
                    f"UIDVALIDITY of {self.selected.name} changed during the session"
                )
        elif code.startswith("CAPABILITY "):
            self._learn_capabilities(response.code)
        if code == "ALERT":
            log.warning("imap.alert", host=self.host, text=_capped(response.text))

    async def _next(self) -> ParsedResponse:
        protocol = self._protocol
        while True:
            if protocol.has_ready():  # no deadline needed, and arming one per line is costly
                raw = await protocol.next_response()
                break
            before = protocol.received
            try:
                async with asyncio.timeout(self.timeout):
                    raw = await protocol.next_response()
                break
            except TimeoutError:
                if protocol.received != before:
                    continue  # a long literal still arriving: not a stall
                self._break(FetchdTimeoutError(f"{self.host}: no answer for {self.timeout} s"))
                raise self._broken from None  # type: ignore[misc]
            except SocketError as exc:
                failure: FetchdError = exc
                if self._bye is not None:
                    failure = ServerError(f"server closed the session: {_capped(self._bye)}")
                self._break(failure)
                raise failure from None
        try:
            return parse_response(raw)
        except FetchdError as exc:
            self._break(exc)
            raise

    def _write(self, data: bytes) -> None:
        transport = self._protocol.transport
        if transport is None or transport.is_closing():
            self._break(SocketError("connection to the IMAP server closed"))
            raise self._broken  # type: ignore[misc]
        transport.write(data)

    def _break(self, exc: FetchdError) -> None:
        if self._broken is None:
            self._broken = exc
        transport = self._protocol.transport
        if transport is not None and not transport.is_closing():
            transport.abort()

    # --- helpers ------------------------------------------------------------------------------

    def _require_safe_channel(self, what: str) -> None:
        if self.encrypted or self._plaintext_allowed:
            return
        raise clear_password_error(self.host, f"the password ({what})")

    async def _after_authentication(self, tagged: Tagged) -> None:
        self.capabilities = frozenset()
        if (tagged.code or "").upper().startswith("CAPABILITY "):
            self._learn_capabilities(tagged.code)
        if not self.capabilities:
            await self.capability()

    def _learn_capabilities(self, code: str | None) -> None:
        if code and code.upper().startswith("CAPABILITY "):
            self.capabilities = frozenset(code.upper().split()[1:])


def _traced(tag: str, words: list[Argument], *, secret: bool) -> str:
    """A command as the -v -v dialogue shows it: a literal by its size, and a secret command's
    credentials as ``*`` (LOGIN keeps its verb, AUTHENTICATE its mechanism)."""
    kept = len(words)
    if secret:
        kept = 2 if words[:1] == [b"AUTHENTICATE"] else 1
    parts = [
        f"{{{len(word.data)}}}"
        if isinstance(word, Literal)
        else _capped(word.decode(errors="replace"))
        for word in words[:kept]
    ]
    if len(words) > kept:
        parts.append("*")
    return " ".join([tag, *parts])


class _SASLState:
    """Feeds an AUTHENTICATE exchange: base64 both ways, the initial response when asked."""

    def __init__(self, mechanism: SASLMechanism, initial: bytes | None) -> None:
        self._mechanism = mechanism
        self._initial = initial

    def answer(self, challenge: bytes) -> bytes:
        if self._initial is not None:
            initial, self._initial = self._initial, None
            return base64.b64encode(initial)
        try:
            decoded = base64.b64decode(challenge, validate=True)
        except binascii.Error:
            raise ProtocolError("AUTHENTICATE challenge is not base64") from None
        return base64.b64encode(self._mechanism.respond(decoded))


def _check(tagged: Tagged, what: str, refusal: type[FetchdError] | None = None) -> None:
    """OK passes; NO raises ``refusal`` (or ServerError/ServerBusyError); BAD is ProtocolError."""
    if tagged.status == "OK":
        return
    text = f"{what} failed: {tagged.status} {_capped(tagged.text)}"
    if tagged.status == "BAD":
        raise ProtocolError(text)
    code = (tagged.code or "").split(" ")[0].upper()
    if code in BUSY_CODES:
        raise ServerBusyError(text)
    raise (refusal or ServerError)(text)


def _connect_error(exc: OSError, host: str, port: int | None) -> FetchdError:
    where = f"{host}:{port}" if port is not None else host
    if isinstance(exc, TimeoutError):
        return FetchdTimeoutError(f"{where}: connection or TLS handshake timed out")
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return TLSError(f"{where}: TLS failed: {exc}")
    if isinstance(exc, socket.gaierror):
        return DNSError(f"{host}: cannot resolve: {exc}")
    return connect_error(host, port, exc)


def _capped(text: str, limit: int = 200) -> str:
    """Server text for messages and logs: capped and with control characters escaped."""
    shown = text[:limit].encode("ascii", "backslashreplace").decode("ascii")
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in shown)
    return shown + ("..." if len(text) > limit else "")
