"""SMTP/LMTP transactions in fewer round trips: the commands of a PIPELINING (RFC 2920) group,
CHUNKING's (RFC 3030) BDAT lines, and ``Exchange``, the verdict on the replies as they arrive.
Pure: no I/O (fetchd.delivery.smtpwire writes and reads).

Rules (RFC 2920 3.1, RFC 3030 2 and 4.2, RFC 2033 4.2), and fetchmail's outcomes exactly as
fetchd.delivery.smtp applies them to one command at a time:
- MAIL FROM, every RCPT TO and DATA go out as one group, and DATA's 354 is awaited before the
  body. With CHUNKING the group is MAIL, the RCPTs and the first ``BDAT n`` with its octets; more
  ``BDAT n`` follow without waiting, and ``BDAT n LAST`` (or the final dot) only once the source
  has said the message is complete.
- Replies come in the order of the commands, one each; the final dot or BDAT LAST gets one, or
  for LMTP one per accepted recipient (one when none was accepted).
- A refused MAIL decides, whatever follows (the RCPTs then get 503). A refused RCPT is
  remembered (the last one, as the one-at-a-time path keeps it); when every RCPT was refused,
  that refusal decides, and what DATA or BDAT got after it is read and ignored. A refused DATA
  or BDAT decides at its stage. Once decided, no more of the message is sent.
- After the end of data: a temporary refusal (4xx) decides before a permanent one, the replies
  to the end of data before the RCPT refusal; every recipient must have the message.
- A 354 to DATA after a decided refusal (a server that ignored RFC 2920) leaves the connection
  mid-DATA: ``end_data`` says so, and the caller drops the connection rather than send a dot.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from fetchd.errors import DeliveryError

_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")

ACCEPTED = (250, 251)  # 251: "user not local; will forward", an acceptance (RFC 5321 3.4)

# What a reply answers: END is the final dot or BDAT LAST.
Kind = Literal["MAIL", "RCPT", "DATA", "BDAT", "END"]

STAGES: dict[Kind, str] = {
    "MAIL": "MAIL FROM",
    "RCPT": "RCPT TO",
    "DATA": "DATA",
    "BDAT": "BDAT",
    "END": "end of DATA",
}


class Reply(Protocol):
    """A server reply: aiosmtplib's SMTPResponse has this shape."""

    @property
    def code(self) -> int: ...

    @property
    def message(self) -> str: ...


def command(*words: bytes) -> bytes:
    """One command line. Addresses were checked when chosen; a control character here would let
    a header smuggle a command, so it is refused."""
    if any(_CONTROL.search(word) for word in words):
        raise DeliveryError("refusing an SMTP command with a control character", permanent=True)
    return b" ".join(words) + b"\r\n"


def envelope(sender: str, options: Sequence[str], rcpts: Sequence[str]) -> list[bytes]:
    """MAIL FROM with its options, then one RCPT TO per recipient."""
    mail = command(b"MAIL", b"FROM:<" + sender.encode() + b">", *(o.encode() for o in options))
    return [mail, *(command(b"RCPT", b"TO:<" + rcpt.encode() + b">") for rcpt in rcpts)]


def envelope_kinds(recipients: int) -> list[Kind]:
    """What the replies to ``envelope()``'s lines answer."""
    rcpt: Kind = "RCPT"
    return ["MAIL", *([rcpt] * recipients)]


def bdat(size: int, *, last: bool) -> bytes:
    """The BDAT line for a chunk of ``size`` octets (RFC 3030 2)."""
    return b"BDAT %d LAST\r\n" % size if last else b"BDAT %d\r\n" % size


@dataclass(frozen=True, slots=True)
class Refused:
    """The reply that decides a refused transaction, and the stage it answered."""

    code: int
    message: str
    stage: str


class Exchange:
    """The replies of one transaction, in the order of its commands.

    ``sent`` notes each command as it goes out, ``received`` each reply as it comes in;
    ``awaiting`` counts the replies still owed, ``decided`` is the refusal known so far (stop
    sending the message), and ``result`` the verdict once nothing is owed.
    """

    def __init__(self, recipients: int, *, lmtp: bool, chunking: bool = False) -> None:
        if recipients < 1:
            raise ValueError("a transaction needs a recipient")
        self._recipients = recipients
        self._lmtp = lmtp
        self._end_stage = "BDAT LAST" if chunking else STAGES["END"]
        self._owed: deque[Kind] = deque()
        self._rcpts_answered = 0
        self._accepted = 0
        self._at_rcpt: Refused | None = None
        self._ends: list[Refused] = []
        self._ends_answered = 0
        self.decided: Refused | None = None
        self.end_data = False

    def sent(self, kind: Kind) -> None:
        if self.ended:
            raise ValueError("nothing is sent after the end of data")
        self._owed.append(kind)

    @property
    def ended(self) -> bool:
        return "END" in self._owed or self._ends_answered > 0

    @property
    def awaiting(self) -> int:
        """Replies still owed; the end of data's count is known once every RCPT was answered."""
        owed = len(self._owed)
        if owed == 1 and self._owed[0] == "END":
            return self._end_replies() - self._ends_answered
        return owed

    def _end_replies(self) -> int:
        """LMTP: one per accepted recipient; one when the transaction had already failed."""
        return max(1, self._accepted) if self._lmtp and self.decided is None else 1

    def received(self, reply: Reply) -> None:
        if not self._owed:
            raise ValueError(f"a reply nobody asked for: {reply.code}")
        kind = self._owed[0]
        if kind != "END":
            self._owed.popleft()
        code = reply.code
        if kind == "MAIL":
            if code != 250:
                self._decide(Refused(code, reply.message, STAGES["MAIL"]))
        elif kind == "RCPT":
            self._rcpts_answered += 1
            if code in ACCEPTED:
                self._accepted += 1
            else:
                self._at_rcpt = Refused(code, reply.message, STAGES["RCPT"])
            if self._rcpts_answered == self._recipients and not self._accepted:
                assert self._at_rcpt is not None
                self._decide(self._at_rcpt)
        elif kind == "DATA":
            if code == 354:
                self.end_data = self.decided is not None
            else:
                self._decide(Refused(code, reply.message, STAGES["DATA"]))
        elif kind == "BDAT":
            if code != 250:
                self._decide(Refused(code, reply.message, STAGES["BDAT"]))
        else:
            self._ends_answered += 1
            if code != 250:
                self._ends.append(Refused(code, reply.message, self._end_stage))
            if self._ends_answered >= self._end_replies():
                self._owed.popleft()

    def _decide(self, refusal: Refused) -> None:
        if self.decided is None:
            self.decided = refusal

    def result(self) -> Refused | None:
        """None when every recipient has the message; else the refusal that decides."""
        if self.awaiting:
            raise ValueError("replies are still owed")
        if self.decided is not None:
            return self.decided
        if not self._ends_answered:
            raise ValueError("the end of data was never answered")
        candidates = [*self._ends, *([self._at_rcpt] if self._at_rcpt else [])]
        temporary = [refusal for refusal in candidates if 400 <= refusal.code < 500]
        if temporary:
            return temporary[0]
        return candidates[0] if candidates else None
