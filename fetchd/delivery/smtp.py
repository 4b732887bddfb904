"""Delivery to the local MTA over SMTP (or LMTP) with aiosmtplib: one connection per poll.

Outcomes, as fetchmail decides them (fetchmail(1), sink.c), with fetchd.delivery.bounce:
- 250 after the final dot (LMTP: from every recipient): delivered; it may leave the server.
- 4xx anywhere, and 530: kept on the server for the next poll.
- an ``antispam`` code (none unless the rc file names some): discarded, told with spambounce.
- any other 5xx: ``softbounce`` (fetchmail's default) keeps it, with a warning once. With
  ``no softbounce`` a delivery status notification goes to the sender (or the postmaster) over
  the same connection, and only once the MTA accepted that does the message leave the server.
- The same outcomes when the MTA offers PIPELINING or CHUNKING and the transaction goes in
  fewer round trips (fetchd.delivery.pipelining decides, fetchd.delivery.smtpwire sends).
- No answer to the final dot (timeout, dropped link): unknown, so kept. This is the one window in
  which a message may arrive twice, never the one in which it may be lost.
If no host of the smtphost list can be reached, DeliveryError aborts the poll: nothing is deleted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiosmtplib
import structlog
from aiosmtplib.protocol import SMTPProtocol
from aiosmtplib.response import SMTPResponse

from fetchd.delivery.bounce import BouncePolicy, Notify, disposition, recipient_for
from fetchd.delivery.dsn import Refusal, build_dsn
from fetchd.delivery.headers import (
    Trace,
    envelope_sender,
    qualify,
    usable_address,
)
from fetchd.delivery.pipelining import envelope
from fetchd.delivery.result import Outcome
from fetchd.delivery.rewrite import drop_return_path
from fetchd.delivery.smtpauth import authenticate, reply_lines
from fetchd.delivery.smtpwire import Transaction, write_data
from fetchd.errors import DeliveryError, SocketError
from fetchd.message import Message, as_message
from fetchd.net.hostname import this_host
from fetchd.net.plugin import PluginLinks
from fetchd.net.tls import is_loopback

log = structlog.get_logger("fetchd.smtp")

_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class SMTPSettings:
    smtphunt: tuple[str, ...] = ("localhost",)
    recipients: tuple[str, ...] = ()  # local names; "@smtpaddress" is added unless they have "@"
    smtpaddress: str | None = None
    smtpname: str | None = None  # the whole recipient address, when set
    helo_name: str | None = None  # EHLO name; default this host's name
    antispam: tuple[int, ...] = ()  # fetchmail 6.4's default: none
    softbounce: bool = True
    bouncemail: bool = True
    spambounce: bool = False
    postmaster: str = ""  # a local name or an address; "" = nobody to tell
    bounce_host: str = "localhost"  # where LMTP's bounces go (host or host/port), as fetchmail
    batchlimit: int = 0  # messages per SMTP connection; 0 = no limit (fetchmail's batchlimit)
    timeout: float = 300.0
    pass8bits: bool = False  # BODY=8BITMIME for every message, not only 8-bit ones
    lmtp: bool = False  # RFC 2033: LHLO, and one reply per accepted recipient after the dot
    esmtp_name: str = ""  # ESMTP AUTH (esmtpname, esmtppassword): with a password only
    esmtp_password: str | None = field(default=None, repr=False)
    # The Received line; its server (fetchmail's true name) also qualifies a bare sender.
    trace: Trace = field(default_factory=Trace)
    multidrop: bool = False
    # MAIL FROM when no header names a sender: as fetchmail, the remote user (at the server's
    # true name unless it has a domain), so that a bounce goes somewhere.
    account_sender: str = ""

    def rcpt_addresses(
        self, recipients: tuple[str, ...] | None = None, listener: str = "localhost"
    ) -> list[str]:
        """RCPT TO addresses: a local name gets ``@smtpaddress``, or as in fetchmail the name
        of the SMTP listener it goes to."""
        if self.smtpname:
            return [self.smtpname]
        domain = self.smtpaddress or listener
        names = self.recipients if recipients is None else recipients
        return qualify(names, domain)


def qualified_sender(sender: str, server: str) -> str:
    """fetchmail gives a sender without a domain the mail server's name (an address literal
    in brackets), whether or not ``rewrite`` already did so in the header."""
    if not sender or "@" in sender or not server:
        return sender
    try:
        ipaddress.ip_address(server)
    except ValueError:
        return f"{sender}@{server}"
    return f"{sender}@[{server}]"


def _stays_local(smtp: aiosmtplib.SMTP, entry: str) -> bool:
    """Whether the connection to the listener stays on this machine (Unix socket, loopback)."""
    if entry.startswith("/"):
        return True
    peer = smtp.get_transport_info("peername")
    return isinstance(peer, tuple) and bool(peer) and is_loopback(str(peer[0]))


def _host_port(entry: str, lmtp: bool = False) -> tuple[str, int]:
    host, _, port = entry.partition("/")
    if port and not port.isdigit():
        raise DeliveryError(f"smtphost {entry!r}: the port after '/' must be a number")
    if lmtp and (not port or int(port) == 25):
        # fetchmail's rule, from RFC 2033: LMTP must never be spoken to an SMTP port.
        raise DeliveryError(
            f"smtphost {entry!r}: LMTP needs an explicit port other than 25 (host/port) or a "
            "Unix socket path"
        )
    return host or "localhost", int(port) if port else 25


QUIT_TIMEOUT = 5.0


async def _next_reply(protocol: SMTPProtocol, timeout: float) -> SMTPResponse:
    """The next of LMTP's per-recipient replies. aiosmtplib reads one reply per command and
    leaves whatever came in the same packet in its buffer, where no new data would wake it:
    take a reply from there first."""
    buffered = protocol._read_response_from_buffer()
    return buffered if buffered is not None else await protocol.read_response(timeout=timeout)


def _worst(replies: list[SMTPResponse]) -> SMTPResponse | None:
    """None when every recipient accepted; else the refusal that decides: a temporary one
    (the message is kept and retried) before a permanent one."""
    refusals = [reply for reply in replies if reply.code != 250]
    temporary = [reply for reply in refusals if 400 <= reply.code < 500]
    if temporary:
        return temporary[0]
    return refusals[0] if refusals else None


class SMTPDeliverer:
    """Implements fetchd.poll.Deliverer for one poll; call ``aclose`` at its end."""

    def __init__(self, settings: SMTPSettings, plugout: PluginLinks | None = None) -> None:
        self.settings = settings
        self._plugout = plugout
        self._smtp: aiosmtplib.SMTP | None = None
        self._host = ""
        self._sent = 0  # messages on the current connection, for batchlimit
        self._by = settings.helo_name or this_host()

    async def deliver(
        self,
        message: bytes | Message,
        *,
        ready: Callable[[], Awaitable[None]] | None = None,
        recipients: tuple[str, ...] | None = None,
    ) -> Outcome:
        """``recipients``: this message's local names (multidrop); default, the account's."""
        smtp = await self._connection()
        message = as_message(message)
        data = message.head  # the body streams from the source during DATA
        rcpts = self.settings.rcpt_addresses(recipients, self._listener_name())
        for rcpt in rcpts:
            if not usable_address(rcpt):
                raise DeliveryError(f"recipient {rcpt!r} is not a usable address", permanent=True)
        trace = self.settings.trace.received(
            by=self._by,
            recipient=rcpts[0] if len(rcpts) == 1 else None,
            multidrop=self.settings.multidrop,
        )
        found = envelope_sender(data)
        sender = qualified_sender(
            self.settings.account_sender if found is None else found, self.settings.trace.server
        )
        data = drop_return_path(data)  # it is the envelope now; the MTA writes its own
        options = []
        # A message larger than the read-ahead is sent on before its body has arrived: it is
        # declared 8-bit (harmless for 7-bit mail) where the MTA takes 8BITMIME.
        eight_bit = self.settings.pass8bits or message.with_head(data).maybe_8bit()
        if eight_bit and smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        if not sender.isascii() or not all(r.isascii() for r in rcpts):
            if not smtp.supports_extension("smtputf8"):
                return Outcome(False, False, "the MTA does not accept non-ASCII addresses")
            options.append("SMTPUTF8")
        pipelining = smtp.supports_extension("pipelining")
        if smtp.protocol is not None and (pipelining or smtp.supports_extension("chunking")):
            transaction = Transaction(
                smtp.protocol,
                self.settings.timeout,
                pipelining=pipelining,
                chunking=smtp.supports_extension("chunking"),
                lmtp=self.settings.lmtp,
            )
            lines = envelope(sender, options, rcpts)
            return await self._transact(
                smtp, transaction, lines, trace, message.with_head(data), sender, rcpts, ready
            )
        stage = "MAIL FROM"
        try:
            await self._command(
                smtp,
                250,
                b"MAIL",
                b"FROM:<" + sender.encode() + b">",
                *(o.encode() for o in options),
            )
            stage = "RCPT TO"
            accepted = 0
            refusal: aiosmtplib.SMTPResponseException | None = None
            for rcpt in rcpts:
                try:
                    await self._command(smtp, 250, b"RCPT", b"TO:<" + rcpt.encode() + b">")
                    accepted += 1
                except aiosmtplib.SMTPResponseException as exc:
                    refusal = exc
            if not accepted:
                assert refusal is not None
                raise refusal
            stage = "DATA"
            await self._data_start(smtp)
            stage = "end of DATA"
            replies = await self._data_send(
                smtp,
                trace,
                message.with_head(data),
                ready,
                replies=accepted if self.settings.lmtp else 1,
            )
            # A recipient refused at RCPT counts as much as one refused after the dot: the
            # message leaves the server only when every recipient has it.
            at_rcpt = [] if refusal is None else [SMTPResponse(refusal.code, refusal.message)]
            worst = _worst(replies + at_rcpt)
            if worst is not None:
                stage = "RCPT TO" if at_rcpt and worst is at_rcpt[0] else stage
                raise aiosmtplib.SMTPResponseException(worst.code, worst.message)
        except aiosmtplib.SMTPResponseException as exc:
            refused = tuple(Refusal(r, exc.code, exc.message) for r in rcpts)
            return await self._refused(smtp, exc.code, exc.message, stage, data, sender, refused)
        except (aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPServerDisconnected, OSError) as exc:
            # The state of the message is unknown: keep it, and start over with a new link.
            await self._drop()
            what = "no answer" if isinstance(exc, TimeoutError) else "connection lost"
            return Outcome(False, False, f"SMTP {what} at {stage}; kept")
        return Outcome(True, True, "delivered", 250)

    async def _transact(
        self,
        smtp: aiosmtplib.SMTP,
        transaction: Transaction,
        lines: list[bytes],
        trace: bytes,
        message: Message,
        sender: str,
        rcpts: list[str],
        ready: Callable[[], Awaitable[None]] | None,
    ) -> Outcome:
        """One message in a PIPELINING group and/or as BDAT chunks (fetchd.delivery.smtpwire),
        with the outcomes of the one-command-at-a-time path."""
        try:
            try:
                refused = await transaction.run(lines, trace, message, ready)
            except BaseException:
                # Mid-transaction (the source failed, a timeout, a cancelled poll): without
                # the final dot or BDAT LAST the MTA discards what it got. Never reuse it.
                await self._drop()
                raise
        except (aiosmtplib.SMTPException, OSError) as exc:
            what = "no answer" if isinstance(exc, TimeoutError) else "connection lost"
            if isinstance(exc, aiosmtplib.SMTPResponseException):
                what = "unreadable reply"
            return Outcome(False, False, f"SMTP {what} at {transaction.stage}; kept")
        if refused is None:
            return Outcome(True, True, "delivered", 250)
        if not transaction.reusable:
            await self._drop()
        refusals = tuple(Refusal(r, refused.code, refused.message) for r in rcpts)
        return await self._refused(
            smtp, refused.code, refused.message, refused.stage, message.head, sender, refusals
        )

    async def _command(
        self,
        smtp: aiosmtplib.SMTP,
        expected: int,
        *words: bytes,
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
        """One command on aiosmtplib's protocol. Its ``mail()``/``rcpt()`` would parse our
        addresses again with the email package, which costs more than the whole exchange;
        ours were checked when chosen (no CR, LF, NUL or spaces: see headers._valid).

        ``meanwhile`` runs, without yielding to the event loop, between sending the command
        and reading its reply: the engine writes the previous message's record there, while
        the MTA works on the command. Nothing can read the reply before ``read_response``,
        which is what aiosmtplib's own ``execute_command`` relies on too.
        """
        protocol = smtp.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("connection lost")
        if any(_CONTROL.search(word) for word in words):
            raise DeliveryError("refusing an SMTP command with a control character", permanent=True)
        debug = log.is_enabled_for(logging.DEBUG)
        if debug:
            log.debug("smtp.send", text="SMTP> " + b" ".join(words).decode("utf-8", "replace"))
        if meanwhile is None:
            reply = await protocol.execute_command(*words, timeout=self.settings.timeout)
        else:
            protocol.write(b" ".join(words) + b"\r\n")
            meanwhile()
            reply = await protocol.read_response(timeout=self.settings.timeout)
        if debug:
            for line in reply_lines(reply.code, reply.message):
                log.debug("smtp.recv", text=line)
        if reply.code != expected and not (words[0] == b"RCPT" and reply.code == 251):
            raise aiosmtplib.SMTPResponseException(reply.code, reply.message)

    # DATA with the message already CRLF-normalized: aiosmtplib's ``data()`` would normalize and
    # stuff dots again with two regular expressions over every message; with the protocol's
    # public calls we stuff in one pass and send.

    async def _data_start(self, smtp: aiosmtplib.SMTP) -> None:
        if smtp.protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("connection lost")
        start = await smtp.protocol.execute_command(b"DATA", timeout=self.settings.timeout)
        if start.code != 354:
            raise aiosmtplib.SMTPDataError(start.code, start.message)

    async def _data_send(
        self,
        smtp: aiosmtplib.SMTP,
        trace: bytes,
        message: Message,
        ready: Callable[[], Awaitable[None]] | None,
        replies: int = 1,
    ) -> list[SMTPResponse]:
        """The message as it streams from the source, then (once ``ready``) the final dot that
        commits it, only after the source's end. The replies to the dot: one for SMTP, one per
        accepted recipient for LMTP. If the source fails first, the connection is dropped
        without the dot: the MTA discards what it got."""
        protocol = smtp.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("connection lost")
        try:
            if ready is not None and not message.complete:
                # The previous record must not wait for this body to arrive.
                await ready()
                ready = None
            await write_data(protocol, trace, message)
            if ready is not None:
                await ready()
            protocol.write(b".\r\n")
            answers = [await protocol.read_response(timeout=self.settings.timeout)]
            while len(answers) < replies:
                answers.append(await _next_reply(protocol, self.settings.timeout))
        except BaseException:
            # Whatever stopped us (an error, a cancelled poll), this connection is mid-DATA:
            # without the final dot the MTA discards what it got, and after it the reply would
            # be read as the next command's. Never reuse it.
            smtp.close()
            self._smtp = None
            raise
        if log.is_enabled_for(logging.DEBUG):
            for answer in answers:
                for line in reply_lines(answer.code, answer.message):
                    log.debug("smtp.recv", text=line)
        return answers

    async def _refused(
        self,
        smtp: aiosmtplib.SMTP,
        code: int,
        text: str,
        stage: str,
        data: bytes,
        sender: str,
        refused: tuple[Refusal, ...],
    ) -> Outcome:
        reason = f"SMTP {code} at {stage}: {text[:120]}"
        try:
            await smtp.rset()
        except (aiosmtplib.SMTPException, OSError):
            await self._drop()
        settings = self.settings
        fate = disposition(
            code,
            BouncePolicy(
                softbounce=settings.softbounce,
                bouncemail=settings.bouncemail,
                spambounce=settings.spambounce,
                postmaster=settings.postmaster,
                antispam=settings.antispam,
            ),
        )
        if not fate.delete:
            how = "temporary" if code < 500 or code == 530 else "softbounce"
            # The poll engine warns about a permanent refusal once per message, not per poll.
            return Outcome(False, False, f"{reason} ({how}; kept)", code)
        if fate.notify is Notify.NOBODY:
            log.warning("smtp.spam", text=f"{reason}: discarded as spam (antispam)")
            return Outcome(False, True, reason + " (spam; discarded)", code)
        postmaster = self._qualified(settings.postmaster) if settings.postmaster else ""
        to = recipient_for(fate.notify, sender, postmaster)
        if to is None:
            return Outcome(False, False, f"{reason} (nobody to notify; kept)", code)
        notification = build_dsn(
            original=data,
            to=to,
            refusals=list(refused),
            reporting_host=self._by,
            remote_mta=self._host or "localhost",
            explanation=fate.explanation,
        )
        if not await self._notify(to, notification):
            return Outcome(False, False, f"{reason} (the bounce failed; kept)", code)
        log.warning("smtp.bounced", text=f"{reason}: bounced to {to}, deleted")
        return Outcome(False, True, f"{reason} (bounced to {to})", code)

    def _qualified(self, name: str) -> str:
        return (
            name if "@" in name else f"{name}@{self.settings.smtpaddress or self._listener_name()}"
        )

    def _listener_name(self) -> str:
        """The host of the smtphost entry in use ("localhost" for a Unix socket)."""
        if not self._host or self._host.startswith("/"):
            return "localhost"
        return self._host.partition("/")[0] or "localhost"

    async def _notify(self, to: str, notification: bytes) -> bool:
        """Send a notification with the null sender: over this SMTP connection, or for LMTP
        (which cannot relay) to the MTA on localhost, as fetchmail does."""
        if not usable_address(to):
            return False
        smtp: aiosmtplib.SMTP | None = None
        try:
            if self.settings.lmtp:
                host, port = _host_port(self.settings.bounce_host)
                smtp = aiosmtplib.SMTP(
                    hostname=host,
                    port=port,
                    timeout=self.settings.timeout,
                    local_hostname=self._by,
                    start_tls=False,
                )
                await smtp.connect()
            else:
                smtp = await self._connection()
            await smtp.sendmail("", [to], notification)
        except (aiosmtplib.SMTPException, OSError, DeliveryError) as exc:
            log.error("smtp.bounce_failed", text=f"cannot send the bounce to {to}: {exc}")
            return False
        finally:
            if self.settings.lmtp and smtp is not None:
                smtp.close()
        return True

    async def _connection(self) -> aiosmtplib.SMTP:
        limit = self.settings.batchlimit
        if self._smtp is not None and limit and self._sent >= limit:
            await self.aclose()  # fetchmail's batchlimit: a fresh connection every N messages
        if self._smtp is not None and self._smtp.is_connected:
            self._sent += 1
            return self._smtp
        self._sent = 1
        failures = []
        for entry in self.settings.smtphunt:
            try:
                smtp = await self._client(entry)
            except (DeliveryError, SocketError) as exc:  # a bad entry, a plugout that will not run
                failures.append(str(exc))
                continue
            try:
                await smtp.connect()
                # EHLO now, so the extensions are known before the first MAIL (8BITMIME...);
                # HELO when the listener is too old for EHLO, as fetchmail falls back.
                if self.settings.lmtp:
                    await self._lhlo(smtp)
                else:
                    try:
                        await smtp.ehlo()
                    except aiosmtplib.SMTPHeloError:
                        await smtp.helo()
                if self.settings.esmtp_password is not None:
                    await authenticate(
                        smtp,
                        self.settings.esmtp_name,
                        self.settings.esmtp_password,
                        local=_stays_local(smtp, entry),
                        listener=entry,
                    )
            except (aiosmtplib.SMTPException, OSError) as exc:
                failures.append(f"{entry}: {exc}")
                smtp.close()
                continue
            except DeliveryError as exc:
                failures.append(str(exc))
                smtp.close()
                continue
            self._smtp, self._host = smtp, entry
            return smtp
        what = "LMTP" if self.settings.lmtp else "SMTP"
        raise DeliveryError(f"cannot reach any {what} listener: " + "; ".join(failures))

    async def _lhlo(self, smtp: aiosmtplib.SMTP) -> None:
        """LMTP's greeting; its reply lists the extensions as EHLO's does."""
        reply = await smtp.execute_command(b"LHLO", self._by.encode("ascii", "replace"))
        if reply.code != 250:
            raise aiosmtplib.SMTPHeloError(reply.code, reply.message)
        smtp.last_ehlo_response = reply

    async def _client(self, entry: str) -> aiosmtplib.SMTP:
        if self._plugout is not None:  # fetchmail's plugout: the command makes the connection
            host, port = _host_port(entry, self.settings.lmtp)
            return aiosmtplib.SMTP(
                sock=await self._plugout.connect(host, str(port)),
                timeout=self.settings.timeout,
                local_hostname=self._by,
                start_tls=False,
            )
        if entry.startswith("/"):
            return aiosmtplib.SMTP(
                socket_path=entry,
                timeout=self.settings.timeout,
                local_hostname=self._by,
                start_tls=False,
            )
        host, port = _host_port(entry, self.settings.lmtp)
        return aiosmtplib.SMTP(
            hostname=host,
            port=port,
            timeout=self.settings.timeout,
            local_hostname=self._by,
            start_tls=False,
        )

    async def _drop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    async def aclose(self) -> None:
        if self._smtp is not None and self._smtp.is_connected:
            try:
                # A healthy MTA answers QUIT at once; a poll being stopped must not wait long.
                async with asyncio.timeout(min(self.settings.timeout, QUIT_TIMEOUT)):
                    await self._smtp.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                self._smtp.close()
        self._smtp = None
