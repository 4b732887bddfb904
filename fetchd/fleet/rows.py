"""PostfixAdmin's ``fetchmail`` table read into fetchd's accounts, as fetchmail.pl reads it.

fetchmail.pl writes, for each ``active`` row, ``poll SRC_SERVER with proto PROTOCOL`` and
``user 'SRC_USER' there with password 'BASE64-DECODED' folder 'SRC_FOLDER' mda MDA is 'MAILBOX'
here keep fetchall ssl sslcertck sslcertpath P sslfingerprint "F" EXTRA_OPTIONS`` (each flag
only when true, ``sslcertpath`` only with ``sslcertck``), and runs fetchmail on that. Here the
same entry is made directly (fetchd.config.fragments), so the rc file's ``defaults`` entry
merges into it exactly as into a written one, and ``extra_options`` is read by the rc parser
(user options only). ``src_auth``, which fetchmail.pl leaves out, is the entry's ``auth``.
``poll_time`` (minutes) becomes the entry's ``interval`` in daemon cycles.

A row that cannot be made into an account gives a FleetRowError naming its id and column, and
the other rows are polled. The pure part (``account_from_row``) needs no database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fetchd.config.check import check_config
from fetchd.config.fragments import (
    Defaults,
    merge_user_options,
    parse_user_options,
    resolve_entry,
)
from fetchd.config.lexer import AUTH_WORDS
from fetchd.config.model import Config, Server
from fetchd.config.parser import ParseEnvironment
from fetchd.errors import ConfigError, FleetRowError, RCSyntaxError

COLUMNS = (
    "id, mailbox, src_server, src_auth, src_user, src_password, src_folder, poll_time, "
    "fetchall, keep, protocol, usessl, sslcertck, sslcertpath, sslfingerprint, mda, extra_options"
)
SELECT_ACTIVE = f"SELECT {COLUMNS} FROM fetchmail WHERE active ORDER BY id"

# PostfixAdmin's protocol values that fetchd polls -> the name the rc parser stores.
PROTOCOLS = {"POP3": "POP3", "IMAP": "IMAP", "AUTO": "auto"}

# In extra_options, which whoever may edit the row writes: nothing that runs a command or
# writes a file as the user fetchd runs as, and no second password source.
REFUSED_EXTRA = {
    "preconnect": "it would run a command for whoever may edit the row",
    "postconnect": "it would run a command for whoever may edit the row",
    "mda": "the mda column says which MDA to use",
    "bsmtp": "it would write a file for whoever may edit the row",
    "password": "the password is the src_password column",
    "passwordfile": "the password is the src_password column",
    "passwordfd": "the password is the src_password column",
}


@dataclass(frozen=True, slots=True)
class FleetAccount:
    """One active row as an account: its id, and the poll entry it means (one user)."""

    row_id: int
    poll_time: int  # minutes between polls, as the row says
    server: Server
    # A digest of the row as read: workers tell a changed row (poll it at once) from one
    # another worker has just polled. The table holds the password itself; this adds nothing.
    fingerprint: str = ""

    @property
    def label(self) -> str:
        user = self.server.users[0]
        return f"{user.remote}@{self.server.pollname}"


def _text(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    return "" if value is None else str(value).strip()


def _password(row_id: int, stored: str) -> str:
    """PostfixAdmin keeps ``src_password`` base64-encoded; the clear text, never quoted."""
    try:
        return base64.b64decode(stored, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise FleetRowError(
            row_id, "src_password is not base64 (PostfixAdmin stores it so); not polled"
        ) from None


def account_from_row(
    row: Mapping[str, Any], defaults: Defaults, env: ParseEnvironment, cycle_seconds: int
) -> FleetAccount:
    """The account a row means, or FleetRowError naming the row and what is wrong."""
    row_id = int(row["id"])
    server_host, remote, mailbox = (_text(row, c) for c in ("src_server", "src_user", "mailbox"))
    for column, value in (("src_server", server_host), ("src_user", remote), ("mailbox", mailbox)):
        if not value:
            raise FleetRowError(row_id, f"{column} is empty; not polled")
    protocol = PROTOCOLS.get(_text(row, "protocol").upper())
    if protocol is None:
        raise FleetRowError(
            row_id,
            f"protocol {_text(row, 'protocol')!r} is not polled by fetchd (POP3, IMAP, AUTO)",
        )
    auth_word = _text(row, "src_auth").lower() or "password"
    auth = "password" if auth_word == "password" else AUTH_WORDS.get(auth_word)
    if auth is None:
        raise FleetRowError(row_id, f"src_auth {auth_word!r} is not an authentication type")
    poll_time = int(row.get("poll_time") or 0)
    server_options: dict[str, Any] = {
        "protocol": protocol,
        "auth": auth,
        # poll_time minutes, in daemon cycles: every K-th cycle polls this row.
        "interval": max(1, math.ceil(max(poll_time, 0) * 60 / max(cycle_seconds, 1))),
    }
    user_options: dict[str, Any] = {
        "remote": remote,
        "password": _password(row_id, _text(row, "src_password")),
    }
    if folder := _text(row, "src_folder"):
        user_options["mailboxes"] = [folder]
    if mda := _text(row, "mda"):
        user_options["mda"] = mda
    for column, option in (("keep", "keep"), ("fetchall", "fetchall"), ("usessl", "ssl")):
        if row.get(column):
            user_options[option] = True
    if row.get("sslcertck"):
        user_options["sslcertck"] = True
        if path := _text(row, "sslcertpath"):
            user_options["sslcertpath"] = path
    if fingerprint := _text(row, "sslfingerprint"):
        user_options["sslfingerprint"] = fingerprint
    extra = row.get("extra_options") or ""
    if extra.strip():
        try:
            options = parse_user_options(extra, "extra_options", env, REFUSED_EXTRA)
        except RCSyntaxError as exc:
            where = f"extra_options line {exc.line}, column {exc.column}"
            raise FleetRowError(row_id, f"{where}: {exc.message}; not polled") from None
        user_options = merge_user_options(user_options, options)
    server = resolve_entry(
        server_host, server_options, user_options, [mailbox], defaults, env, line=row_id
    )
    try:
        check_config(Config(f"fetchmail row {row_id}", servers=(server,)))
    except ConfigError as exc:
        raise FleetRowError(row_id, str(exc).split(": ", 1)[-1]) from None
    digest = hashlib.sha256(repr(sorted(row.items())).encode()).hexdigest()
    return FleetAccount(row_id, poll_time, server, digest)


def accounts_from_rows(
    rows: Sequence[Mapping[str, Any]], defaults: Defaults, env: ParseEnvironment, cycle_seconds: int
) -> tuple[list[FleetAccount], list[FleetRowError]]:
    """Every row's account; the rows that cannot be one, each as its error."""
    accounts: list[FleetAccount] = []
    errors: list[FleetRowError] = []
    for row in rows:
        try:
            accounts.append(account_from_row(row, defaults, env, cycle_seconds))
        except FleetRowError as exc:
            errors.append(exc)
    return accounts, errors
