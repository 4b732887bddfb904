"""How large an IMAP literal this process can hold: the protocol cap, lowered to fit its
address-space limit.

Messages stream (fetchd.message), but an IMAP literal is still read whole by the response
parser: a small message fetched in a batch, or one part of a large one. A server that answers
with a literal far larger than asked (900 MiB, under the 1 GiB protocol cap) would turn the
parser's buffer into a ``MemoryError`` inside the event loop's read callback: a traceback, and
every other account's poll lost with it. Under ``RLIMIT_AS`` (``ulimit -v``; systemd's
``MemoryMax`` does not set it) the cap is a quarter of the limit (the buffer, its copy, and
headroom), so the refusal is a clear ``ProtocolError`` for the account concerned, raised before
any of the literal is read.
"""

from __future__ import annotations

import resource

SHARE_OF_ADDRESS_SPACE = 4  # a literal may take 1/4 of it: buffer, its copy, headroom
FLOOR = 1 << 20  # never below this: a tiny limit must not refuse ordinary mail


def literal_cap(protocol_cap: int) -> int:
    """``protocol_cap``, or less when the address-space limit could not hold it."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return protocol_cap
    return max(min(protocol_cap, soft // SHARE_OF_ADDRESS_SPACE), FLOOR)
