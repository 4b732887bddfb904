"""Multidrop: who, of the local users, a message from a shared mailbox is for. Pure.

fetchmail 6.4's rules (transact.c: readheaders, find_server_names, map_name; checked against
the real fetchmail):

1. The envelope recipient, when the server recorded it:
   - ``envelope "X-Original-To"`` (or Delivered-To, Envelope-To...): the first header whose name
     starts with that text, after skipping ``envelope N`` of them; every address in it counts.
     If that header is there but names nobody of ours, the message goes to the postmaster;
   - the default, ``Received``: the first Received line (after the skip count) whose ``by``
     host is the mail server (its name, ``via`` or an ``aka``) gives its ``for <address>``;
   - ``no envelope``: this step is skipped.
2. Otherwise the headers are guessed from: Resent-To/Cc/Bcc if there are any, else To, Cc, Bcc
   and Apparently-To, in header order.
3. Each address (``qvirtual`` prefix removed) is ours when: it is named whole in the local names
   (``"joe@example.org" = jdoe``); its domain is a ``localdomains`` domain (or below one), and
   then it is passed on whole; or its domain is the mail server's name or an ``aka`` (or below
   one) and its local part is a local name (``remote = local`` maps it), or any local part with
   ``is * here``.
4. Nobody of ours: the postmaster, with fetchmail's X-Fetchmail-Warning header.

fetchd does not look names up in the DNS (fetchmail's ``dns``): a server name counts by the
names the rc file gives it. A recipient named twice gets one copy.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email.utils import getaddresses

from fetchd.config.model import LocalName
from fetchd.delivery.headers import header_block, headers

_GUESS = ("to", "cc", "bcc", "apparently-to")
_RESENT = ("resent-to", "resent-cc", "resent-bcc")
_RECEIVED_BY_FOR = re.compile(
    r"\bby\s+([^\s;()]+).*?\bfor\s+<?([^\s<>;]+@[^\s<>;]+)>?", re.I | re.S
)


@dataclass(frozen=True, slots=True)
class MultidropRules:
    server_names: tuple[str, ...]  # the poll name, ``via``, and ``aka`` entries
    localnames: tuple[LocalName, ...] = ()
    wildcard: bool = False
    envelope: str | None = "Received"
    envskip: int = 0
    qvirtual: str | None = None
    localdomains: tuple[str, ...] = ()
    postmaster: str = "postmaster"


@dataclass(frozen=True, slots=True)
class Routing:
    recipients: tuple[str, ...]  # local names, or whole addresses (localdomains)
    to_postmaster: bool = False
    warning: str | None = None  # X-Fetchmail-Warning, when it went to the postmaster
    from_envelope: bool = False  # recipients came from an envelope header


def _below(domain: str, names: tuple[str, ...]) -> bool:
    domain = domain.lower().rstrip(".")
    return any(domain == n or domain.endswith("." + n) for n in (x.lower() for x in names))


def _addresses(values: list[str]) -> list[str]:
    return [address for _, address in getaddresses(values) if address]


def _envelope(fields: list[tuple[str, str]], rules: MultidropRules) -> list[str] | None:
    """The envelope addresses; None when the envelope header is absent (then: guess)."""
    if rules.envelope is None:
        return None
    wanted = rules.envelope.lower()
    if wanted == "received":
        received = [value for name, value in fields if name == "received"][rules.envskip :]
        for value in received[:1]:
            match = _RECEIVED_BY_FOR.search(value)
            if match and _below(match.group(1), rules.server_names):
                return [match.group(2)]
        return None
    matching = [value for name, value in fields if name.startswith(wanted)][rules.envskip :]
    return _addresses(matching[:1]) if matching else None


# What a recipient taken from a header may contain to reach an RCPT TO or an MDA's %T: a
# hostile To: header must not make an address the MTA would refuse (stalling the mailbox at
# that message) or an option for the MDA.
_SAFE_RECIPIENT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]+")


def _map(address: str, rules: MultidropRules) -> str | None:
    """The local recipient for one address, or None when it is not ours."""
    mapped = _map_unchecked(address, rules)
    if mapped is None or mapped.startswith("-") or not _SAFE_RECIPIENT.fullmatch(mapped):
        return None
    return mapped


def _map_unchecked(address: str, rules: MultidropRules) -> str | None:
    if rules.qvirtual and address.lower().startswith(rules.qvirtual.lower()):
        address = address[len(rules.qvirtual) :]
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return None
    for name in rules.localnames:
        if isinstance(name, tuple) and "@" in name[0] and name[0].lower() == address.lower():
            return name[1]
    if _below(domain, rules.localdomains):
        return address
    if not _below(domain, rules.server_names):
        return None
    for name in rules.localnames:
        remote, mapped = name if isinstance(name, tuple) else (name, name)
        if remote.lower() == local.lower():
            return mapped
    return local if rules.wildcard else None


def route(message: bytes, rules: MultidropRules) -> Routing:
    fields = headers(message)
    envelope = _envelope(fields, rules)
    candidates = envelope
    if candidates is None:
        resent = [value for name, value in fields if name in _RESENT]
        guessed = resent or [value for name, value in fields if name in _GUESS]
        candidates = _addresses(guessed)
    found: list[str] = []
    rejected: list[str] = []
    for address in candidates:
        mapped = _map(address, rules)
        if mapped is None:
            rejected.append(address)
        elif mapped.lower() not in (f.lower() for f in found):
            found.append(mapped)
    if found:
        return Routing(tuple(found), from_envelope=envelope is not None)
    warning = (
        f"recipient address {rejected[0]} didn't match any local name"
        if len(rejected) == 1
        else "no recipient addresses matched declared local names"
    )
    return Routing(
        (rules.postmaster,) if rules.postmaster else (),
        to_postmaster=True,
        warning=warning,
        from_envelope=envelope is not None,
    )


def header_digest(message: bytes) -> bytes:
    """What fetchmail compares to spot the same message fetched twice in a row."""
    return hashlib.md5(header_block(message), usedforsecurity=False).digest()
