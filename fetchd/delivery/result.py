"""What one delivery attempt came to: one type for every way of delivering."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Outcome:
    """Implements fetchd.poll.DeliveryResult.

    ``delivered``: the MTA, MDA or file took the message. ``may_delete``: it may leave the
    server (delivered, bounced, or discarded by rule). ``code``: the SMTP-like reply code, which
    tells a permanent refusal (5xx) from a temporary one, when there is one.
    """

    delivered: bool
    may_delete: bool
    reason: str
    code: int | None = None
