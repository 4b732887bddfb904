"""Random .fetchmailrc files, for the differential test against the real fetchmail.

Each file is drawn from one seed, so a failing case is reproduced by its number. The generator
knows the grammar's statements, options, spellings, noise words and separators, and with a small
probability breaks a file (a value left out, a stray word), so that rejections are compared too.
"""

from __future__ import annotations

import random

_WORDS = ["mail", "example", "joe", "x-1", "inbox", "Sent", "a.b", "host9", "q_q"]
_PROTOCOLS = [
    "auto",
    "pop3",
    "POP3",
    "imap",
    "IMAP",
    "apop",
    "rpop",
    "kpop",
    "sdps",
    "etrn",
    "odmr",
]
_AUTHS = ["any", "password", "cram-md5", "ntlm", "msn", "external", "ssh", "gssapi", "otp"]
_AUTHS += ["kerberos_v5", "kerberos_v4"]
_SERVER_FLAGS = ["dns", "checkalias", "uidl", "tracepolls"]
_USER_FLAGS = ["keep", "flush", "limitflush", "fetchall", "rewrite", "forcecr", "stripcr"]
_USER_FLAGS += ["pass8bits", "dropstatus", "dropdelivered", "mimedecode", "idle", "ssl"]
_USER_FLAGS += ["sslcertck", "lmtp"]
_GLUED = {"keep", "flush", "limitflush", "fetchall", "rewrite", "forcecr", "stripcr", "pass8bits"}
_GLUED |= {"dropstatus", "dropdelivered", "mimedecode", "idle", "dns", "uidl", "checkalias"}
_NEGATABLE_USER = set(_USER_FLAGS) - {"lmtp"}
_USER_COUNTS = ["limit", "warnings", "fetchlimit", "fetchsizelimit", "fastuidl", "batchlimit"]
_USER_COUNTS += ["expunge"]
_USER_STRINGS = ["smtpaddress", "smtpname", "mda", "bsmtp", "preconnect", "postconnect"]
_USER_STRINGS += ["sslkey", "sslcert", "sslproto", "sslcertfile", "sslcertpath"]
_USER_STRINGS += ["sslcommonname", "sslfingerprint", "properties"]
_NOISE = ["and", "with", "has", "wants", "options"]
_SET_KEYWORDS = ["daemon", "logfile", "idfile", "pidfile", "postmaster", "properties", "bouncemail"]
_SET_KEYWORDS += ["spambounce", "softbounce", "syslog", "invisible", "showdots"]
_SERVER_KINDS = ["via", "proto", "port", "service", "interval", "auth", "timeout", "envelope"]
_SERVER_KINDS += ["qvirtual", "aka", "localdomains", "plugin", "plugout", "principal"]
_SERVER_KINDS += ["esmtpname", "esmtppassword", "flag", "flag", "bad-header", "interface"]
_SERVER_KINDS += ["monitor"]


class RCGenerator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    # --- small pieces ---------------------------------------------------------------------

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def word(self) -> str:
        return self.rng.choice(_WORDS) + (str(self.rng.randint(0, 99)) if self.chance(0.3) else "")

    def string(self) -> str:
        """A value as a user writes it: bare when it can be, else quoted; now and then empty,
        or with a CR LF inside the quotes (a file edited on Windows)."""
        value = self.word()
        style = self.rng.random()
        if style < 0.04:
            return self.rng.choice(['""', "''"])
        if style < 0.06:
            return f'"{value}\r\n{self.word()}"'
        if style < 0.5:
            return f'"{value}"'
        if style < 0.6:
            return f"'{value} {self.word()}'"
        if style < 0.65:
            return f'"{value}\\t\\x41"'
        return value

    def number(self) -> str:
        """A number; now and then negative, and rarely quoted (a syntax error in fetchmail)."""
        value = str(self.rng.choice([0, 1, 2, 7, 25, 60, 110, 143, 993, 300, 5000]))
        if self.chance(0.1):
            value = str(self.rng.choice([-1, -2, -5, -300]))
        if self.chance(0.02):
            return f'"{value}"'
        return value

    def sep(self) -> str:
        choice = self.rng.random()
        if choice < 0.7:
            return " "
        if choice < 0.8:
            return "\n    "
        if choice < 0.85:
            return f" {self.rng.choice(_NOISE)} "
        if choice < 0.9:
            return self.rng.choice([", ", "; ", ": "])
        if choice < 0.95:
            return " # a comment\n  "
        return "\t"

    def join(self, parts: list[str]) -> str:
        out = parts[0] if parts else ""
        for part in parts[1:]:
            out += self.sep() + part
        return out

    def negated(self, keyword: str, glued: bool) -> str:
        if glued and self.chance(0.5):
            return f"no{keyword}"
        return f"no {keyword}"

    # --- statements -----------------------------------------------------------------------

    def set_statement(self) -> str:
        kind = self.rng.choice(_SET_KEYWORDS)
        if kind == "daemon":
            return f"set daemon {self.number()}"
        if kind in ("logfile", "idfile", "pidfile", "postmaster", "properties"):
            value = f'"/tmp/{self.word()}"' if kind.endswith("file") else self.string()
            return f"set {kind} {'= ' if self.chance(0.3) else ''}{value}"
        if self.chance(0.4):
            glued = kind in ("bouncemail", "spambounce")
            return f"set {self.negated(kind, glued)}"
        return f"set {kind}"

    def server_option(self) -> list[str]:
        kind = self.rng.choice(_SERVER_KINDS)
        if kind == "proto":
            word = self.rng.choice(["proto", "protocol"])
            return [word, self.rng.choice(_PROTOCOLS)]
        if kind in ("port", "service"):
            value = self.number() if kind == "port" or self.chance(0.5) else self.string()
            return [kind, value]
        if kind in ("interval", "timeout"):
            return [kind, self.number()]
        if kind == "auth":
            return [self.rng.choice(["auth", "authenticate"]), self.rng.choice(_AUTHS)]
        if kind == "envelope":
            if self.chance(0.25):
                return [self.negated("envelope", True)]
            count = [self.rng.choice(["1", "2"])] if self.chance(0.4) else []
            return ["envelope", *count, self.rng.choice(['"X-Envelope-To:"', "Delivered-To"])]
        if kind in ("aka", "localdomains"):
            spelled = kind if kind == "aka" else self.rng.choice(["local", "localdomains"])
            return [spelled] + [self.string() for _ in range(self.rng.randint(1, 3))]
        if kind == "interface":
            return ["interface", f'"lo/127.0.0.{self.rng.randint(1, 9)}"']
        if kind == "monitor":
            return ["monitor", "lo"]
        if kind == "flag":
            flag = self.rng.choice(_SERVER_FLAGS)
            return [self.negated(flag, flag in _GLUED)] if self.chance(0.4) else [flag]
        if kind == "bad-header":
            return ["bad-header", self.rng.choice(["accept", "reject"])]
        return [kind, self.string()]

    def user_option(self) -> list[str]:
        kind = self.rng.choice(
            ["flag", "flag", "flag", "count", "count", "string", "string", "list", "antispam"]
        )
        if kind == "flag":
            flag = self.rng.choice(_USER_FLAGS)
            if flag in _NEGATABLE_USER and self.chance(0.35):
                return [self.negated(flag, flag in _GLUED)]
            return [flag]
        if kind == "count":
            return [self.rng.choice(_USER_COUNTS), self.number()]
        if kind == "string":
            return [self.rng.choice(_USER_STRINGS), self.string()]
        if kind == "antispam":
            return ["antispam"] + [self.rng.choice(["571", "550", "501", "-1"]) for _ in range(2)]
        keyword = self.rng.choice(
            ["folder", "folders", "smtphost", "smtp", "smtphosts", "fetchdomains"]
        )
        return [keyword] + [self.string() for _ in range(self.rng.randint(1, 3))]

    def user(self) -> list[str]:
        parts = [self.rng.choice(["user", "username"]), self.string()]
        if self.chance(0.6):
            parts.append("there")
        if self.chance(0.8):
            parts += [self.rng.choice(["password", "pass"]), self.string()]
        mapping = self.rng.random()
        if mapping < 0.5:
            parts += [self.rng.choice(["is", "to"]), self.string()]
        elif mapping < 0.65:
            parts += ["is", "*"]
        elif mapping < 0.8:
            names = [self.string() for _ in range(self.rng.randint(2, 3))]
            if self.chance(0.5):
                names.append(f"{self.string()} = {self.string()}")
            parts += ["to", *names]
        if mapping < 0.8 and self.chance(0.7):
            parts.append("here")
        for _ in range(self.rng.randint(0, 5)):
            parts += self.user_option()
        return parts

    def entry(self, first: bool) -> list[str]:
        if first and self.chance(0.2):
            parts = ["defaults"]
        else:
            parts = [self.rng.choice(["poll", "poll", "skip", "server"]), self.string()]
        for _ in range(self.rng.randint(0, 4)):
            parts += self.server_option()
        # A defaults entry with two users is not a real file's, and fetchmail's configdump
        # prints the second without its server (it drops the defaults record it hangs from).
        users = self.rng.randint(0, 1) if parts[0] == "defaults" else self.rng.randint(0, 2)
        if parts[0] == "defaults" and self.chance(0.4):
            users = 1  # a defaults entry naming the user: the remote name of later entries
        for _ in range(users):
            parts += self.user()
        if users == 0:  # user options without `user`: the entry's remote name is inherited
            for _ in range(self.rng.randint(0, 3)):
                parts += self.user_option()
        return parts

    def rcfile(self) -> str:
        statements = [self.set_statement() for _ in range(self.rng.randint(0, 3))]
        for index in range(self.rng.randint(1, 3)):
            statements.append(self.join(self.entry(first=index == 0)))
        if self.chance(0.15):
            statements.insert(self.rng.randint(0, len(statements)), self.set_statement())
        if self.chance(0.1):
            statements = self.broken(statements)
        text = "\n".join(statements) + "\n"
        if self.chance(0.15):  # a file written on Windows
            text = text.replace("\r\n", "\n").replace("\n", "\r\n")
        return text

    def broken(self, statements: list[str]) -> list[str]:
        """A file with one mistake a user might make."""
        index = self.rng.randrange(len(statements))
        words = statements[index].split(" ")
        mistake = self.rng.random()
        if mistake < 0.5 and len(words) > 1:
            del words[self.rng.randrange(1, len(words))]
        else:
            words.insert(self.rng.randint(1, len(words)), self.rng.choice(["frobnicate", "99"]))
        statements[index] = " ".join(words)
        return statements


def generate(seed: int) -> str:
    return RCGenerator(seed).rcfile()
