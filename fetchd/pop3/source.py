"""POP3Source: one POP3 mailbox as a ``MailSource`` for the poll engine.

Deletions are only marks until QUIT's +OK; ``abort`` drops the connection without QUIT, and the
server rolls every mark back (RFC 1939, section 6). A server without UIDL cannot tell us which
messages are new, nor which one a crash left delivered but undeleted: message numbers shift between
sessions. We refuse such a server with a clear error rather than risk deleting the wrong message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from fetchd.errors import ProtocolError
from fetchd.message import Message, read_message
from fetchd.net.plugin import Connector
from fetchd.net.tls import TLSSettings
from fetchd.pop3.client import POP3Client
from fetchd.source import MessageInfo


@dataclass(frozen=True, slots=True)
class POP3Account:
    """What it takes to open one POP3 mailbox."""

    host: str
    port: int | None
    user: str
    password: str = field(repr=False)
    label: str
    tls: TLSSettings = field(default_factory=TLSSettings)
    timeout: float = 300.0
    auth: str = "any"
    apop: bool = False
    gssapi_target: str = ""  # the Kerberos service principal (fetchd.auth.kerberos)


class POP3Source:
    label: str

    def __init__(self, client: POP3Client, label: str) -> None:
        self.client = client
        self.label = label

    async def list_messages(self) -> Sequence[MessageInfo]:
        sizes = await self.client.list_sizes()
        uids = await self.client.uidl()
        if uids is None:
            raise ProtocolError(
                f"{self.label}: the server does not support UIDL, which fetchd needs to know "
                "which messages it has delivered"
            )
        if set(uids) != set(sizes):
            raise ProtocolError(f"{self.label}: LIST and UIDL name different messages")
        return [MessageInfo(n, uids[n], sizes[n]) for n in sorted(sizes)]

    async def retrieve(
        self, messages: Sequence[MessageInfo]
    ) -> AsyncIterator[tuple[MessageInfo, Message]]:
        """Each message once its header is in; its body streams from the connection."""
        by_number = {m.number: m for m in messages}
        sizes = {m.number: m.size for m in messages}
        async for number, chunks in self.client.retrieve([m.number for m in messages], sizes):
            yield by_number[number], await read_message(chunks)

    async def delete(self, messages: Sequence[MessageInfo]) -> None:
        await self.client.delete(m.number for m in messages)

    async def commit(self) -> None:
        await self.client.quit()

    async def abort(self) -> None:
        self.client.close()


async def open_pop3(account: POP3Account, connector: Connector | None = None) -> POP3Source:
    """Connect (through ``connector``, a plugin, when given) and log in; the caller owns the
    session (commit or abort)."""
    client = await POP3Client.connect(
        account.host, account.port, tls=account.tls, timeout=account.timeout, connector=connector
    )
    try:
        if account.auth == "ssh":  # fetchmail's: the tunnel that started the server logged in
            return POP3Source(client, account.label)
        await client.login(
            account.user,
            account.password,
            auth=account.auth,
            apop=account.apop,
            plaintext_allowed=account.tls.disabled,
            gssapi_target=account.gssapi_target,
        )
    except BaseException:
        client.close()
        raise
    return POP3Source(client, account.label)
