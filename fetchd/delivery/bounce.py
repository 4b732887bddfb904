"""What happens to a message the MTA refused for good: fetchmail's rules, made safe.

fetchmail 6.4 (sink.c: handle_smtp_report, send_bouncemail), with ``no softbounce``:

- an ``antispam`` code (none by default): the message is discarded; with ``spambounce`` the
  sender (or, with ``no bouncemail``, the postmaster) is told;
- 552 (too large) and any other 5xx: the message is deleted and a delivery status notification
  goes to the sender, or with ``no bouncemail`` to the postmaster (fetchmail's manual says so;
  fetchmail itself then sends nothing);
- 553 (invalid sender): deleted; the sender cannot be told, so the postmaster is;
- 530 (STARTTLS required) and every 4xx: kept for the next poll.

``softbounce`` (fetchmail's default) keeps every refused message, antispam ones included, "as
though a temporary error had occurred", and so sends no bounce (fetchmail would send one at
every poll while the message stays).

Where fetchd is stricter than fetchmail, so that a permanent refusal never deletes silently:
a message leaves the server only once its notification was accepted by the MTA; a sender that
cannot receive bounces (the null sender, MAILER-DAEMON) is replaced by the postmaster; with
``postmaster ""`` nobody can be told, and the message is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Notify(Enum):
    NOBODY = "nobody"
    SENDER = "sender"
    POSTMASTER = "postmaster"


@dataclass(frozen=True, slots=True)
class BouncePolicy:
    softbounce: bool = True
    bouncemail: bool = True
    spambounce: bool = False
    postmaster: str = ""
    antispam: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Disposition:
    """``delete``: the message may leave the server (once ``notify`` was told, if anyone)."""

    delete: bool
    notify: Notify
    explanation: str = ""


KEEP = Disposition(delete=False, notify=Notify.NOBODY)


def can_receive_bounces(sender: str) -> bool:
    local = sender.strip("<>").lower()
    return bool(local) and local != "mailer-daemon" and not local.startswith("mailer-daemon@")


def disposition(code: int, policy: BouncePolicy) -> Disposition:
    """The fate of a message refused with ``code`` (at any stage), before notification."""
    if policy.softbounce:
        return KEEP  # fetchmail 6.4 keeps even antispam-refused mail under softbounce
    if code in policy.antispam:
        if not policy.spambounce:
            return Disposition(delete=True, notify=Notify.NOBODY)  # discarded as spam, logged
        return Disposition(
            delete=True,
            notify=Notify.SENDER if policy.bouncemail else Notify.POSTMASTER,
            explanation="A spam filter or virus scanner rejected the message.",
        )
    if not 500 <= code < 600 or code == 530:
        return KEEP
    if code == 553:
        return Disposition(
            delete=True,
            notify=Notify.POSTMASTER,
            explanation="The message has an invalid sender address (SMTP error 553).",
        )
    explanation = (
        "This message was too large (SMTP error 552)."
        if code == 552
        else "The local mail server refused the message for good."
    )
    return Disposition(
        delete=True,
        notify=Notify.SENDER if policy.bouncemail else Notify.POSTMASTER,
        explanation=explanation,
    )


def recipient_for(notify: Notify, sender: str, postmaster: str) -> str | None:
    """Who actually gets the notification; None when nobody can (the message is then kept)."""
    if notify is Notify.SENDER and can_receive_bounces(sender):
        return sender
    if notify in (Notify.SENDER, Notify.POSTMASTER) and postmaster:
        return postmaster
    return None
