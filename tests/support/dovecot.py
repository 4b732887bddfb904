"""A private Dovecot for the test suite: its own config, ports, users, Maildirs and test CA.

It listens on one loopback address only, 127.0.0.1 unless told (IMAP, IMAPS, POP3, POP3S), uses
no system configuration, and works both as root (mail owned by FETCHD_TEST_USER, default
``fmtest``, as CI runs) and as an ordinary user (everything owned by that user). Dovecot 2.3
configuration syntax.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import trustme

from tests.support.process import stop_group

DOVECOT = "/usr/sbin/dovecot"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Dovecot:
    def __init__(
        self,
        user: str = "alice",
        password: str = "alice-Secret-1",
        *,
        host: str = "127.0.0.1",
        pop3_only_on_110: bool = False,
        extra_config: str = "",
        env: dict[str, str] | None = None,
        oauth2_introspection_url: str = "",
        kerberos: dict[str, str] | None = None,
    ) -> None:
        """``pop3_only_on_110``: POP3 on the standard ports 110 and 995 of ``host`` (pick a
        loopback address of its own, such as 127.x.y.z), and no IMAP at all.
        ``extra_config``: lines added to dovecot.conf (``{root}`` is its directory);
        ``env``: added to Dovecot's environment (e.g. ``OPENSSL_CONF``);
        ``oauth2_introspection_url``: also accept XOAUTH2 and OAUTHBEARER, each token checked by
        POSTing it to this RFC 7662 introspection endpoint (``passdb {{ driver = oauth2 }}``);
        ``kerberos``: also accept GSSAPI, with the service keys of this environment
        (``tests.support.kdc.KDC.environ()``: its krb5.conf and keytab), as host "localhost"."""
        self.user, self.password, self.host = user, password, host
        self.extra_config, self.env = extra_config, env or {}
        self.oauth2_introspection_url = oauth2_introspection_url
        self.kerberos = kerberos
        self.ca: trustme.CA | None = None  # the test CA, once started: it can issue client certs
        self.root = Path(tempfile.mkdtemp(prefix="fetchd-dovecot-"))
        self.root.chmod(0o755)  # the mail user and Dovecot's login user must get in
        if pop3_only_on_110:
            self.pop3_port, self.pop3s_port, self.imap_port, self.imaps_port = 110, 995, 0, 0
        else:
            self.pop3_port, self.pop3s_port = _free_port(), _free_port()
            self.imap_port, self.imaps_port = _free_port(), _free_port()
        self.ca_file = str(self.root / "ca.pem")
        self._counter = itertools.count()
        self.probes = 0  # connections start() made to see whether Dovecot listens
        self.instance = f"fetchd-test-{os.getpid()}-{self.root.name.rsplit('-', 1)[-1]}"
        self._process: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            owner = pwd.getpwnam(os.environ.get("FETCHD_TEST_USER", "fmtest"))
            self.uid, self.gid = owner.pw_uid, owner.pw_gid
            self.login_user, self.internal_user = "dovenull", "dovecot"
        else:
            me = pwd.getpwuid(os.geteuid())
            self.uid, self.gid = me.pw_uid, me.pw_gid
            self.login_user = self.internal_user = me.pw_name

    @property
    def maildir(self) -> Path:
        return self.root / "mail" / self.user

    def start(self) -> None:
        ca = self.ca = trustme.CA()
        ca.cert_pem.write_to_path(self.ca_file)
        cert = ca.issue_cert(*dict.fromkeys((self.host, "127.0.0.1", "localhost")))
        cert.private_key_and_cert_chain_pem.write_to_path(str(self.root / "server.pem"))
        (self.root / "passwd").write_text(
            f"{self.user}:{{PLAIN}}{self.password}:{self.uid}:{self.gid}::"
            f"{self.root / 'home' / self.user}::\n"
        )
        for sub in ("run", "state", "home", "mail"):
            (self.root / sub).mkdir(exist_ok=True)
        self._make_maildir()
        if self.oauth2_introspection_url:
            (self.root / "oauth2.conf.ext").write_text(
                f"introspection_mode = post\n"
                f"introspection_url = {self.oauth2_introspection_url}\n"
                "username_attribute = username\n"
                "active_attribute = active\n"
                "active_value = true\n"
            )
        (self.root / "dovecot.conf").write_text(self._config())
        self._spawn()

    def restart(self, down: float = 0.0) -> None:
        """Stop Dovecot and start it again ``down`` seconds later on the same ports, users, mail
        and certificate (as an upgrade would): every session is dropped, the mail stays."""
        stop_group(self._process)
        self._process = None
        time.sleep(down)
        self._spawn()

    def _spawn(self) -> None:
        config = self.root / "dovecot.conf"
        self._process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=os.environ | self.env,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"dovecot exited: {err}{self.log()}")
            if all(
                self._listening(p)
                for p in (self.pop3_port, self.imap_port, self.pop3s_port, self.imaps_port)
                if p  # port 0: that listener is off
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dovecot did not start listening: {self.log()}")

    def _listening(self, port: int) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=0.2):
                self.probes += 1  # each is logged as a login process's "Disconnected"
                return True
        except OSError:
            return False

    def _config(self) -> str:
        root = self.root
        return f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = {self.instance}
verbose_proctitle = yes
protocols = imap pop3
listen = {self.host}
default_login_user = {self.login_user}
default_internal_user = {self.internal_user}
first_valid_uid = 1
ssl = yes
ssl_cert = <{root}/server.pem
ssl_key = <{root}/server.pem
disable_plaintext_auth = no
auth_mechanisms = plain login cram-md5{self._oauth2_mechanisms()}{self._gssapi_settings()}
mail_location = maildir:{root}/mail/%u
pop3_uidl_format = %08Xu%08Xv
mail_fsync = never
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
{self._oauth2_passdb()}userdb {{
  driver = passwd-file
  args = username_format=%u {root}/passwd
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {self.host}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = {self.host}
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    address = {self.host}
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    address = {self.host}
    port = {self.pop3s_port}
    ssl = yes
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
""" + self.extra_config.replace("{root}", str(root))

    def _oauth2_mechanisms(self) -> str:
        return " xoauth2 oauthbearer" if self.oauth2_introspection_url else ""

    def _gssapi_settings(self) -> str:
        # Dovecot clears its children's environment: the Kerberos library in the auth process
        # finds the test realm only through import_environment.
        if not self.kerberos:
            return ""
        keep = " ".join(f"{k}={self.kerberos[k]}" for k in ("KRB5_CONFIG", "KRB5_KTNAME"))
        keytab = self.kerberos["KRB5_KTNAME"].removeprefix("FILE:")
        return (
            " gssapi\nauth_gssapi_hostname = localhost\n"
            f"auth_krb5_keytab = {keytab}\n"
            f"import_environment = TZ {keep}"
        )

    def _oauth2_passdb(self) -> str:
        # After passwd-file: a password logs in there; a token fails there and goes on to
        # this one, which asks the introspection endpoint (result_failure = continue).
        if not self.oauth2_introspection_url:
            return ""
        return f"passdb {{\n  driver = oauth2\n  args = {self.root}/oauth2.conf.ext\n}}\n"

    def add_user(self, user: str, password: str) -> Path:
        """Another mailbox (Dovecot re-reads its passwd file); returns its Maildir."""
        home = self.root / "home" / user
        with (self.root / "passwd").open("a") as passwd:
            passwd.write(f"{user}:{{PLAIN}}{password}:{self.uid}:{self.gid}::{home}::\n")
        maildir = self.root / "mail" / user
        for path in (home, maildir, *(maildir / s for s in ("cur", "new", "tmp"))):
            path.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(path, self.uid, self.gid)
        return maildir

    def _make_maildir(self) -> None:
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir(parents=True, exist_ok=True)
        home = self.root / "home" / self.user
        home.mkdir(parents=True, exist_ok=True)
        for path in (
            self.root / "mail",
            self.maildir,
            *(self.maildir / s for s in ("cur", "new", "tmp")),
            self.root / "home",
            home,
        ):
            os.chown(path, self.uid, self.gid) if os.geteuid() == 0 else None

    def deliver(self, message: bytes, folder: str = "INBOX", seen: bool = False) -> None:
        """Put a message straight into the Maildir, as a local delivery agent would."""
        base = self.maildir if folder == "INBOX" else self.maildir / f".{folder}"
        name = f"{time.time_ns()}.{next(self._counter):06d}.fixture"
        target = base / ("cur" if seen else "new") / (name + (":2,S" if seen else ""))
        data = message.replace(b"\r\n", b"\n")
        target.write_bytes(data)
        if os.geteuid() == 0:
            os.chown(target, self.uid, self.gid)

    def messages(self, folder: str = "INBOX") -> list[bytes]:
        """What the folder holds now, oldest first, with CRLF line endings. A client may be
        expunging meanwhile: a file gone between listing and reading was no longer there."""
        base = self.maildir if folder == "INBOX" else self.maildir / f".{folder}"
        files = sorted(
            (*base.joinpath("new").iterdir(), *base.joinpath("cur").iterdir()), key=lambda p: p.name
        )
        held = []
        for file in files:
            try:
                held.append(file.read_bytes().replace(b"\n", b"\r\n"))
            except FileNotFoundError:
                continue
        return held

    def create_folder(self, name: str) -> None:
        folder = self.maildir / f".{name}"
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(folder / sub, self.uid, self.gid)
        if os.geteuid() == 0:
            os.chown(folder, self.uid, self.gid)

    def reset(self) -> None:
        """Every folder empty and Dovecot's indexes gone (UIDVALIDITY starts anew)."""
        shutil.rmtree(self.maildir, ignore_errors=True)
        self._make_maildir()

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def idle_sessions(self) -> set[int]:
        """The pids of this Dovecot's IMAP processes now in IDLE (verbose_proctitle shows the
        command: ``dovecot-<instance>/imap [alice 127.0.0.1 IDLE]``)."""
        found = set()
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                title = cmdline.read_bytes().decode(errors="replace")
            except OSError:
                continue
            if f"{self.instance}/imap [" in title and " IDLE]" in title:
                found.add(int(cmdline.parent.name))
        return found

    def log_offset(self) -> int:
        """Where the log ends now: pass it to ``log_since`` to see only what comes after."""
        path = self.root / "dovecot.log"
        return path.stat().st_size if path.exists() else 0

    def log_since(self, offset: int) -> str:
        path = self.root / "dovecot.log"
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def wait_for_log(self, offset: int, text: str, timeout: float = 10.0) -> str:
        """The log after ``offset`` once it holds ``text`` (Dovecot's log process writes it
        a moment after the event); raise AssertionError with the log if it never does."""
        deadline = time.monotonic() + timeout
        while text not in (since := self.log_since(offset)):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in Dovecot's log:\n{since}")
            time.sleep(0.02)
        return since

    def stop(self) -> None:
        stop_group(self._process)
        self._process = None
        shutil.rmtree(self.root, ignore_errors=True)
