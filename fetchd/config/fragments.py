"""Poll entries that come from outside an rc file (a row of a mail panel's table), made by the
rc parser's own rules: pure.

A row becomes what the rc parser would have made of the ``poll`` entry fetchmail.pl writes for
it: the same raw options, merged with the rc file's ``defaults`` entry (fetchmail's optmerge),
then resolved with fetchmail's defaults into the same frozen ``Server``/``User``. Free text from
the row (PostfixAdmin's ``extra_options``) is read by the rc parser's user-option grammar and
nothing else: no server option, no local names, no second entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fetchd.config.lexer import Kind, tokenize
from fetchd.config.model import LocalName, Server
from fetchd.config.parser import (
    USER_OPTIONS,
    ParseEnvironment,
    _check_defaults_come_first,
    _merge,
    _Parser,
    _RawEntry,
    _RawUser,
    _resolve,
)
from fetchd.errors import RCSyntaxError


@dataclass(frozen=True, slots=True)
class Defaults:
    """An rc file's ``defaults`` entry as written (unset settings stay unset), to merge into
    entries made elsewhere. ``None`` inside: the file has no defaults entry."""

    raw: _RawEntry | None = None


def parse_defaults(text: str, filename: str, env: ParseEnvironment) -> Defaults:
    """The ``defaults`` entry of an rc file (the whole file is checked as ``parse`` checks it)."""
    parser = _Parser(tokenize(text, filename), filename, env)
    parser.parse()
    _check_defaults_come_first(parser.entries, filename)
    entries = parser.entries
    return Defaults(entries[0] if entries and entries[0].pollname == "defaults" else None)


def parse_user_options(
    text: str, filename: str, env: ParseEnvironment, refused: Mapping[str, str] = {}
) -> dict[str, Any]:
    """User options only, in rc syntax (``limit 2000 no rewrite folder a b``), as a raw entry's
    user part holds them. Anything else is an RCSyntaxError naming ``filename``, line and
    column: a server option, ``is``/``to`` local names, ``poll``, a keyword in ``refused``
    (keyword -> why)."""
    parser = _Parser(tokenize(text, filename), filename, env)
    user = _RawUser(1)
    while True:
        token = parser.token
        word = parser.peek() if parser.is_keyword("no") else token
        if word.kind is Kind.KEYWORD and word.value in refused:
            raise RCSyntaxError(
                filename,
                word.line,
                word.column,
                f"{word.value!r} is refused here: {refused[word.value]}",
            )
        if parser.is_keyword("is", "to"):
            raise parser.error("a user option (local names are not set here)")
        if not parser.user_option(user):
            break
    if parser.token.kind is not Kind.END:
        raise parser.error("a user option")
    return user.options


def merge_user_options(first: dict[str, Any], then: Mapping[str, Any]) -> dict[str, Any]:
    """``first`` followed by ``then`` in one user description: a later setting wins, a list
    option given again adds to its list, as the rc parser reads one entry."""
    merged = dict(first)
    for name, value in then.items():
        kind = next((k for n, k in USER_OPTIONS.values() if n == name), None)
        if kind in ("list", "numbers") and name in merged:
            merged[name] = [*merged[name], *value]
        else:
            merged[name] = value
    return merged


def resolve_entry(
    pollname: str,
    server_options: Mapping[str, Any],
    user_options: Mapping[str, Any],
    localnames: Iterable[LocalName],
    defaults: Defaults,
    env: ParseEnvironment,
    *,
    line: int = 0,
) -> Server:
    """One poll entry with one user, from raw options as the parser stores them (the ``kind``
    of each option in SERVER_OPTIONS/USER_OPTIONS: ``protocol`` as the dump names it, lists as
    lists), merged with ``defaults`` and resolved as ``parse`` resolves a file's entries."""
    user = _RawUser(line, dict(user_options), list(localnames))
    entry = _RawEntry(pollname, False, line, dict(server_options), user)
    if defaults.raw is not None:
        _merge(entry, defaults.raw)
    return _resolve(entry, env)
