"""Between the poll and a deliverer: fetchmail's header check (``bad-header``) and header
edits for every message (fetchd.delivery.rewrite) and, for a multidrop account, who each
message is for (fetchd.delivery.multidrop) and the duplicate check.

Recipients are chosen from the header as ``rewrite`` left it: ``To: joe`` has become
``To: joe@server`` by then, and so goes to joe, as with fetchmail.

fetchmail drops a message whose header is the same as the previous one's when no envelope
recipient told them apart: a server that delivered one message once per recipient into the
shared mailbox. The header is compared as fetchmail keeps it, after its edits and without the
first Return-Path (unless an MDA delivers, which gets the Return-Path): copies from a list that
encodes each recipient in its bounce address (VERP) differ only there. fetchmail leaves such a
copy on the server (and passes one on at each later poll); fetchd deletes it at once. It
remembers the previous header per account, across polls of a daemon, and so do we.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from fetchd.delivery.headers import bad_header_line
from fetchd.delivery.multidrop import MultidropRules, header_digest, route
from fetchd.delivery.result import Outcome
from fetchd.delivery.rewrite import drop_return_path, edit_headers
from fetchd.message import Message, as_message

_last_digest: dict[str, bytes] = {}  # per account: the previous multidrop message's header


class RecipientDeliverer(Protocol):
    async def deliver(
        self,
        message: Message,
        *,
        ready: Callable[[], Awaitable[None]] | None = None,
        recipients: tuple[str, ...] | None = None,
    ) -> Any: ...


class RoutingDeliverer:
    """Implements fetchd.poll.Deliverer around an SMTP, LMTP, MDA or Maildir deliverer."""

    def __init__(
        self,
        inner: RecipientDeliverer,
        *,
        account: str,
        rules: MultidropRules | None,
        dropstatus: bool,
        dropdelivered: bool,
        rewrite_host: str | None = None,
        accept_bad_header: bool = False,
        mda: bool = False,
    ) -> None:
        self.inner = inner
        self._mda = mda
        self._accept_bad_header = accept_bad_header
        self._account = account
        self._rules = rules
        self._rewrite_host = rewrite_host
        self._dropstatus = dropstatus
        self._dropdelivered = dropdelivered

    async def deliver(
        self, message: bytes | Message, *, ready: Callable[[], Awaitable[None]] | None = None
    ) -> Any:
        """The header decides (the body streams past untouched to the inner deliverer)."""
        message = as_message(message)
        data = message.head
        if not self._accept_bad_header and (line := bad_header_line(data)) is not None:
            # fetchmail's bad-header reject: not delivered. fetchmail then deletes it; we keep
            # it, so that nothing leaves the server undelivered.
            return Outcome(
                False,
                False,
                f"header line {line} is not a header field ('bad-header accept' delivers such "
                "mail)",
                550,
            )
        recipients: tuple[str, ...] | None = None
        warning: str | None = None
        digest: bytes | None = None
        rewrite_host = self._rewrite_host
        if self._rules is not None:
            # fetchmail's reply_hack runs on each header line as it is read, before recipients
            # are chosen from it; Delivered-To and Status go after that (an envelope header may
            # be a Delivered-To line).
            data = edit_headers(
                data, rewrite_host=rewrite_host, dropstatus=False, dropdelivered=False
            )
            rewrite_host = None
            routing = route(data, self._rules)
            kept = edit_headers(
                data,
                rewrite_host=None,
                dropstatus=self._dropstatus,
                dropdelivered=self._dropdelivered,
            )
            digest = header_digest(kept if self._mda else drop_return_path(kept))
            if not routing.from_envelope and digest == _last_digest.get(self._account):
                return Outcome(
                    False, True, "the same message as the previous one (multidrop); deleted"
                )
            if not routing.recipients:
                return Outcome(False, False, "for no local user, and the postmaster is empty; kept")
            recipients, warning = routing.recipients, routing.warning
        data = edit_headers(
            data,
            rewrite_host=rewrite_host,
            dropstatus=self._dropstatus,
            dropdelivered=self._dropdelivered,
            warning=warning,
        )
        outcome = await self.inner.deliver(
            message.with_head(data), ready=ready, recipients=recipients
        )
        if digest is not None and outcome.may_delete:
            # Only a message that has left for good counts as "the previous one": a copy kept
            # after a failed delivery is fetched again, and must then be delivered, not dropped.
            _last_digest[self._account] = digest
        return outcome

    async def aclose(self) -> None:
        closer = getattr(self.inner, "aclose", None)
        if closer is not None:
            await closer()
