"""Multidrop: who, of the local users, a message from a shared mailbox is for. Pure.

fetchmail 6.4's rules (transact.c: readheaders, parse_received, find_server_names, map_name;
checkalias.c: is_host_alias; checked against the real fetchmail). The message is read after
``rewrite`` qualified its bare addresses with the server's name (``To: joe`` is
``To: joe@server`` by now), as fetchmail reads it.

1. The envelope recipient, when the server recorded it:
   - ``envelope "X-Original-To"`` (or Delivered-To, Envelope-To...): the first header whose name
     starts with that text, after skipping ``envelope N`` of them; every address in it counts.
     If that header is there but names nobody of ours, the message goes to the postmaster;
   - the default, ``Received``: the Received lines from the top (the first ``envelope N`` of
     them skipped), until one gives an address: its first ``by`` host (a word standing alone,
     lower case) must be the mail server, and a later ``for`` must be followed by an address
     with an ``@``. A line by another host, or with no such ``for``, is passed over;
   - ``no envelope``: this step is skipped.
2. Otherwise the headers are guessed from: Resent-To/Cc/Bcc if there are any, else To, Cc, Bcc
   and Apparently-To, in header order.
3. Each address (``qvirtual`` prefix removed) with an ``@`` is ours when: it is named whole in
   the local names (``"joe@example.org" = jdoe``); its domain is a ``localdomains`` domain (or
   below one), and then it is passed on whole; or its domain is the mail server and its local
   part is a local name (``remote = local`` maps it), or any local part with ``is * here``. An
   address without ``@`` is neither ours nor counted as refused.
4. Nobody of ours: the postmaster, with fetchmail's X-Fetchmail-Warning header, which names the
   refused address when exactly one address was at a host that is not the server's.

"The mail server" is its true name (the canonical name with ``dns``, else the ``via`` name or
poll name as given: a poll name reached through ``via`` does not count), an ``aka`` name, or a
host below an ``aka`` name. fetchd does not look names up in the DNS (fetchmail's ``dns``): a
server name counts by the names the rc file gives it. A recipient named twice gets one copy.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from fetchd.config.model import LocalName
from fetchd.delivery.headers import header_block, headers, parse_addresses

_GUESS = ("to", "cc", "bcc", "apparently-to")
_RESENT = ("resent-to", "resent-cc", "resent-bcc")
_C_SPACE = " \t\n\v\f\r"  # C's isspace()


@dataclass(frozen=True, slots=True)
class MultidropRules:
    server_names: tuple[str, ...]  # the server's true name: matched whole
    localnames: tuple[LocalName, ...] = ()
    wildcard: bool = False
    envelope: str | None = "Received"
    envskip: int = 0
    qvirtual: str | None = None
    localdomains: tuple[str, ...] = ()
    postmaster: str = "postmaster"
    aka: tuple[str, ...] = ()  # matched whole or as a domain above the host


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
    return [address for value in values for _, address in parse_addresses(value) if address]


def _is_server(host: str, rules: MultidropRules) -> bool:
    """fetchmail's is_host_alias without the DNS: the true name, or an aka name or below one."""
    host = host.lower()
    return host in (n.lower() for n in rules.server_names) or _below(host, rules.aka)


def _word_at(text: str, word: str, start: int) -> tuple[int, str] | None:
    """The first ``word`` at or after ``start`` with C white space either side, and the run of
    non-space characters after it (and its spaces): (where that run starts, the run)."""
    at = text.find(word, start)
    while at >= 0:
        after = at + len(word)
        if at > 0 and text[at - 1] in _C_SPACE and after < len(text) and text[after] in _C_SPACE:
            begin = after
            while begin < len(text) and text[begin] in _C_SPACE:
                begin += 1
            end = begin
            while end < len(text) and text[end] not in _C_SPACE:
                end += 1
            return begin, text[begin:end]
        at = text.find(word, at + len(word))
    return None


def received_for(line: str, rules: MultidropRules) -> str | None:
    """The envelope address one Received line gives, as fetchmail's parse_received reads it:
    None when its ``by`` host is not the mail server or it has no ``for`` address."""
    text = " " + line
    start = 0
    while (found := _word_at(text, "by", start)) is not None:  # the first ``by`` not an address
        begin, host = found
        if "@" not in host:
            break
        start = begin + len(host)
    else:
        return None
    if not _is_server(host, rules):
        return None
    start = begin + len(host)
    while (found := _word_at(text, "for", start)) is not None:
        begin, token = found
        if "@" in token:
            break
        start = begin + len(token)
    else:
        return None
    rest = text[begin:]
    closing = rest.startswith("<")
    rest = rest[1:] if closing else rest
    while rest.startswith("@"):  # a source route
        rest = rest.partition(":")[2]
    address = []
    for char in rest:
        if char == ";" or (char == ">" if closing else char in _C_SPACE):
            break
        if char in _C_SPACE:
            return None  # white space inside the brackets: not an address
        address.append(char)
    return "".join(address) or None


def _envelope(fields: list[tuple[str, str]], rules: MultidropRules) -> list[str] | None:
    """The envelope addresses; None when the envelope header is absent (then: guess)."""
    if rules.envelope is None:
        return None
    wanted = rules.envelope.lower()
    if wanted == "received":
        for value in [value for name, value in fields if name == "received"][rules.envskip :]:
            if (address := received_for(value, rules)) is not None:
                return [address]
        return None
    matching = [value for name, value in fields if name.startswith(wanted)][rules.envskip :]
    return _addresses(matching[:1]) if matching else None


# What a recipient taken from a header may contain to reach an RCPT TO or an MDA's %T: a
# hostile To: header must not make an address the MTA would refuse (stalling the mailbox at
# that message) or an option for the MDA.
_SAFE_RECIPIENT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]+")


class _Foreign:
    """_map's answer for an address at a host that is not ours."""


_FOREIGN = _Foreign()


def _map(address: str, rules: MultidropRules) -> str | _Foreign | None:
    """The local recipient for one address; _FOREIGN when its host is not ours (fetchmail's
    XMIT_REJECT); None when it is ours but for nobody here, or has no host."""
    mapped = _map_unchecked(address, rules)
    if isinstance(mapped, _Foreign) or mapped is None:
        return mapped
    if mapped.startswith("-") or not _SAFE_RECIPIENT.fullmatch(mapped):
        return None
    return mapped


def _map_unchecked(address: str, rules: MultidropRules) -> str | _Foreign | None:
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return None
    for name in rules.localnames:
        if isinstance(name, tuple) and "@" in name[0] and name[0].lower() == address.lower():
            return name[1]
    if _below(domain, rules.localdomains):
        return address
    if not _is_server(domain, rules):
        return _FOREIGN
    for name in rules.localnames:
        remote, mapped = name if isinstance(name, tuple) else (name, name)
        if remote.lower() == local.lower():
            return mapped
    return local if rules.wildcard else None


def _strip_qvirtual(address: str, rules: MultidropRules) -> str:
    if rules.qvirtual and address.lower().startswith(rules.qvirtual.lower()):
        return address[len(rules.qvirtual) :]
    return address


def route(message: bytes, rules: MultidropRules) -> Routing:
    fields = headers(message)
    envelope = _envelope(fields, rules)
    candidates = envelope
    if candidates is None:
        resent = [value for name, value in fields if name in _RESENT]
        guessed = resent or [value for name, value in fields if name in _GUESS]
        candidates = _addresses(guessed)
    found: list[str] = []
    foreign: list[str] = []
    for address in (_strip_qvirtual(a, rules) for a in candidates):
        mapped = _map(address, rules)
        if isinstance(mapped, _Foreign):
            foreign.append(address)
        elif mapped is not None and mapped.lower() not in (f.lower() for f in found):
            found.append(mapped)
    if found:
        return Routing(tuple(found), from_envelope=envelope is not None)
    # fetchmail names the refused address only when exactly one was at a foreign host.
    warning = (
        f"recipient address {foreign[0]} didn't match any local name"
        if len(foreign) == 1
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
