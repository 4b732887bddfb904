"""The .fetchmailrc lexer, as fetchmail's flex scanner (rcfile_l.l) reads a file: pure.

What makes it unlike a textbook lexer, and why each rule is here:
- A quoted string is ``"[^"]*"`` (or with single quotes): a backslash does not protect a quote,
  and a quote that is never closed simply starts a bare word, as in flex (the token is marked,
  so that a syntax error it causes names the line and column where the quote opens).
  fetchmail's scanner takes the longest match, so ``"a\\"b"`` is one *bare* word (six characters
  beat the four of ``"a\\"``), escapes and quotes included. We compute both lengths the same way.
- After ``user``, ``pass``, ``is``, ``to`` and ``=`` the next bare word is a string even if it
  spells a keyword or a number (flex's NAME start state): ``user keep`` names a user "keep".
  A quoted string ends that state, as does the bare word.
- Authentication types (``any``, ``cram-md5``...), protocol names (``imap``, ``POP3``...),
  ``accept`` and ``reject`` are tokens of their own everywhere but in that state, so ``folder
  imap`` is a syntax error in fetchmail and here. ``password`` is an authentication type only
  right after ``auth`` (flex's AUTH state, which noise words do not end).
- ``*`` is a string; the grammar gives it meaning in a list of local names.
- ``no`` is a word of its own before some keywords even when glued (``nokeep``), but only those
  fetchmail's scanner lists: ``nossl`` is a plain string there, so it is here.
- A number is ``-?[0-9]+`` not followed by a letter; ``10x`` is a string.
- Keywords are case-sensitive; the noise words and ``: ; ,`` separate tokens and vanish.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass

from fetchd.errors import RCSyntaxError


class Kind(enum.Enum):
    KEYWORD = "keyword"
    STRING = "string"
    NUMBER = "number"
    AUTHTYPE = "authentication type"  # value: the name fetchmail's configdump shows
    PROTOCOL = "protocol"  # value: the name in lower case
    MAP = "="
    END = "end of file"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    value: str  # the keyword's canonical name, the string's value, the number's digits
    line: int
    column: int
    text: str  # as written, for error messages
    unclosed: bool = False  # a bare word that begins with a quote never closed in the file

    @property
    def number(self) -> int:
        return int(self.value)


# Spellings -> canonical keyword. Several keywords have optional suffixes in fetchmail's scanner.
KEYWORDS: dict[str, str] = {
    word: word
    for word in [
        "set",
        "logfile",
        "daemon",
        "syslog",
        "idfile",
        "pidfile",
        "postmaster",
        "bouncemail",
        "spambounce",
        "softbounce",
        "warnings",
        "tracepolls",
        "defaults",
        "poll",
        "skip",
        "via",
        "aka",
        "service",
        "port",
        "interval",
        "timeout",
        "envelope",
        "qvirtual",
        "principal",
        "esmtpname",
        "esmtppassword",
        "fetchdomains",
        "smtpaddress",
        "smtpname",
        "antispam",
        "mda",
        "bsmtp",
        "passwordfile",
        "passwordfd",
        "lmtp",
        "interface",
        "monitor",
        "plugin",
        "plugout",
        "batchlimit",
        "fetchlimit",
        "fetchsizelimit",
        "fastuidl",
        "expunge",
        "properties",
        "is",
        "here",
        "there",
        "to",
        "keep",
        "flush",
        "limitflush",
        "fetchall",
        "rewrite",
        "forcecr",
        "stripcr",
        "pass8bits",
        "pass8",
        "dropstatus",
        "dropdelivered",
        "mimedecode",
        "mimedec",
        "idle",
        "dns",
        "checkalias",
        "uidl",
        "ssl",
        "sslkey",
        "sslcert",
        "sslproto",
        "sslcertck",
        "sslcertfile",
        "sslcertpath",
        "sslcommonname",
        "sslfingerprint",
        "limit",
        "invisible",
        "showdots",
        "no",
        "bad-header",
        "accept",
        "reject",
    ]
}
KEYWORDS.update(
    {
        "server": "poll",
        "user": "user",
        "username": "user",
        "pass": "password",
        "password": "password",
        "pass8": "pass8bits",
        "mimedec": "mimedecode",
        "proto": "protocol",
        "protocol": "protocol",
        "local": "localdomains",
        "localdomains": "localdomains",
        "auth": "authenticate",
        "authenticate": "authenticate",
        "preauth": "authenticate",
        "preauthenticate": "authenticate",
        "smtp": "smtphost",
        "smtphost": "smtphost",
        "folder": "folder",
        "folders": "folder",
        "pre": "preconnect",
        "preconnect": "preconnect",
        "post": "postconnect",
        "postconnect": "postconnect",
    }
)

# Keywords fetchmail's scanner splits off a glued "no" (nokeep = no keep). Others (nossl,
# nosyslog...) are ordinary strings there, and so a syntax error where a keyword was expected.
GLUED_NEGATIONS = frozenset(
    [
        "keep",
        "flush",
        "limitflush",
        "fetchall",
        "rewrite",
        "forcecr",
        "stripcr",
        "pass8bits",
        "pass8",
        "dropstatus",
        "dropdelivered",
        "mimedecode",
        "mimedec",
        "idle",
        "dns",
        "uidl",
        "checkalias",
        "envelope",
        "bouncemail",
        "spambounce",
    ]
)

NOISE = frozenset({"and", "with", "has", "wants", "options"})

# fetchmail 6.4's authentication type words -> the name its configdump shows.
AUTH_WORDS: dict[str, str] = {
    "any": "any",
    "gssapi": "gssapi",
    "kerberos": "kerberos_v4",
    "kerberos4": "kerberos_v4",
    "kerberos_v4": "kerberos_v4",
    "kerberos5": "kerberos_v5",
    "kerberos_v5": "kerberos_v5",
    "ssh": "ssh",
    "external": "external",
    "otp": "otp",
    "opie": "otp",
    "cram": "cram-md5",
    "cram-md5": "cram-md5",
    "msn": "msn",
    "ntlm": "ntlm",
}
# fetchmail 7's OAuth2 types: words only after `auth`, so that where fetchmail 6.4 reads them as
# plain strings (a folder, a host) fetchd does too.
OAUTH2_AUTH_WORDS = frozenset({"oauthbearer", "xoauth2"})
# Protocol names, each in lower or upper case only (``Imap`` is a plain string).
PROTOCOL_WORDS = frozenset(
    ["auto", "pop2", "sdps", "pop3", "imap", "apop", "rpop", "etrn", "odmr", "kpop"]
)


class _State(enum.Enum):
    INITIAL = 0
    NAME = 1  # after user/pass/is/to/=: the next bare word is a string, whatever it spells
    AUTH = 2  # after auth: `password` is an authentication type


# Keywords that put the scanner in a state; every other token but a noise word leaves the
# state as it was (flex's rules only change it where they say so).
_STATE_AFTER = {
    "user": _State.NAME,
    "password": _State.NAME,
    "is": _State.NAME,
    "to": _State.NAME,
    "authenticate": _State.AUTH,
}

_SEPARATORS = " \t\r\n;:,"
_BARE_END = "=;:, \t\r\n"
_NUMBER = re.compile(r"-?[0-9]+")


def tokenize(text: str, filename: str) -> list[Token]:
    """The whole file as tokens, ending with an END token."""
    tokens: list[Token] = []
    position, line, line_start = 0, 1, 0
    state = _State.INITIAL
    length = len(text)

    def column() -> int:
        return position - line_start + 1

    while True:
        # Whitespace, separators and comments.
        while position < length:
            char = text[position]
            if char == "\n":
                line += 1
                line_start = position + 1
                position += 1
            elif char in _SEPARATORS or text.startswith("\\\n", position):
                position += 1
            elif char == "#":
                end = text.find("\n", position)
                position = length if end < 0 else end
            else:
                break
        if position >= length:
            tokens.append(Token(Kind.END, "", line, column(), "end of file"))
            return tokens

        start, start_line, start_column = position, line, column()
        char = text[position]
        bare_end = _bare_word_end(text, position)
        quoted_end = _quoted_end(text, position) if char in "\"'" else -1

        if char == "=" and bare_end == position:
            tokens.append(Token(Kind.MAP, "=", line, start_column, "="))
            position += 1
            state = _State.NAME
            continue
        if quoted_end > 0 and quoted_end >= bare_end:
            raw = text[start + 1 : quoted_end - 1]
            value = unescape(raw, filename, start_line, start_column)
            written = text[start:quoted_end]
            tokens.append(Token(Kind.STRING, value, start_line, start_column, written))
            state = _State.INITIAL
        else:
            word = text[start:bare_end]
            found = _classify(word, state, filename, start_line, start_column, text, bare_end)
            if char in "\"'" and quoted_end < 0 and found:
                found[0] = dataclasses.replace(found[0], unclosed=True)
            tokens.extend(found)
            if found:  # a noise word adds no token and leaves the state as it was
                state = _state_after(found[-1], state)
        # Line counting for strings that span lines.
        end = quoted_end if quoted_end > 0 and quoted_end >= bare_end else bare_end
        newlines = text.count("\n", start, end)
        if newlines:
            line += newlines
            line_start = text.rfind("\n", start, end) + 1
        position = end


def _state_after(token: Token, state: _State) -> _State:
    if state is _State.NAME or token.kind is Kind.AUTHTYPE:
        return _State.INITIAL
    if token.kind is Kind.KEYWORD and token.value in _STATE_AFTER:
        return _STATE_AFTER[token.value]
    return state


def _bare_word_end(text: str, position: int) -> int:
    end = position
    while end < len(text) and text[end] not in _BARE_END:
        end += 1
    return end


def _quoted_end(text: str, position: int) -> int:
    """End (exclusive) of the quoted string starting at ``position``, or -1 if unterminated."""
    close = text.find(text[position], position + 1)
    return -1 if close < 0 else close + 1


def _classify(
    word: str, state: _State, filename: str, line: int, column: int, text: str, end: int
) -> list[Token]:
    if state is _State.NAME:
        return [Token(Kind.STRING, unescape(word, filename, line, column), line, column, word)]
    if state is _State.AUTH and word in ("password", "pass"):
        # `pass(word)?` is a keyword in fetchmail's other states only; in AUTH, `password`
        # names the type and `pass` is a plain string.
        kind = Kind.AUTHTYPE if word == "password" else Kind.STRING
        return [Token(kind, word, line, column, word)]
    if word in AUTH_WORDS:
        return [Token(Kind.AUTHTYPE, AUTH_WORDS[word], line, column, word)]
    if state is _State.AUTH and word in OAUTH2_AUTH_WORDS:
        return [Token(Kind.AUTHTYPE, word, line, column, word)]
    if word.lower() in PROTOCOL_WORDS and word in (word.lower(), word.upper()):
        return [Token(Kind.PROTOCOL, word.lower(), line, column, word)]
    if word in KEYWORDS:
        return [Token(Kind.KEYWORD, KEYWORDS[word], line, column, word)]
    if word.startswith("no") and word[2:] in GLUED_NEGATIONS:
        return [
            Token(Kind.KEYWORD, "no", line, column, "no"),
            Token(Kind.KEYWORD, KEYWORDS[word[2:]], line, column + 2, word[2:]),
        ]
    if word in NOISE:
        return []
    # flex's number rule carries one character of trailing context that must not be a letter;
    # at the very end of the file there is none, and the word is a string.
    if _NUMBER.fullmatch(word) and end < len(text):
        return [Token(Kind.NUMBER, word, line, column, word)]
    return [Token(Kind.STRING, unescape(word, filename, line, column), line, column, word)]


_ESCAPE = re.compile(r"\\([xX][0-9a-fA-F]{0,2}|0[0-7]{0,2}|[1-9][0-9]{0,2}|\n|.|\Z)", re.DOTALL)
_SIMPLE = {"n": "\n", "t": "\t", "b": "\b", "r": "\r"}


def unescape(raw: str, filename: str, line: int, column: int) -> str:
    """fetchmail's escapes: \\n \\t \\b \\r, \\xhh hex, \\0oo octal, \\nnn decimal, \\ + newline.
    As in fetchmail's C strings, a NUL (``\\0``, or ``\\x`` with no digits) ends the value, and
    a backslash at the very end is dropped."""

    def one(match: re.Match[str]) -> str:
        body = match.group(1)
        if body in ("\n", ""):
            return ""
        if body in _SIMPLE:
            return _SIMPLE[body]
        if body[0] in "xX":
            return chr(int(body[1:] or "0", 16))
        if body[0] == "0":
            return chr(int(body, 8))
        if body[0].isdigit():
            code = int(body, 10)
            if code > 255:
                raise RCSyntaxError(filename, line, column, f"escape \\{body} is out of range")
            return chr(code)
        return body

    return _ESCAPE.sub(one, raw).split("\0", 1)[0] if "\\" in raw else raw
