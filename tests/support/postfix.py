"""A private Postfix for the test suite: its own config and queue, one SMTP port on loopback.

It accepts mail for ``@virtual.test`` and delivers it with Postfix's own ``virtual`` agent into
Maildirs under its directory (``joe@virtual.test`` -> ``vmail/joe/``), owned by the test user
(FETCHD_TEST_USER, default ``fmtest``). Nothing of the system's Postfix is used or touched but
its programs; starting it needs root, as Postfix's master does.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"
DOMAIN = "virtual.test"
MAILBOXES = ("joe", "ann", "postmaster")

# Only the services a loopback SMTP listener with virtual delivery needs; no chroot.
_MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Postfix:
    host = "127.0.0.1"

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="fetchd-postfix-"))
        self.root.chmod(0o755)
        self.port = _free_port()
        owner = pwd.getpwnam(os.environ.get("FETCHD_TEST_USER", "fmtest"))
        self.uid, self.gid = owner.pw_uid, owner.pw_gid

    @property
    def config(self) -> Path:
        return self.root / "etc"

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        # postfix(1) reports to a terminal or to syslog only: `script` gives it a terminal.
        command = " ".join([POSTFIX, "-c", str(self.config), *args])
        return subprocess.run(
            ["script", "-qec", command, "/dev/null"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def start(self) -> None:
        for sub in ("etc", "queue", "data", "vmail"):
            (self.root / sub).mkdir()
        shutil.chown(self.root / "data", "postfix")
        os.chown(self.root / "vmail", self.uid, self.gid)
        (self.config / "main.cf").write_text(
            f"""compatibility_level = 3.6
queue_directory = {self.root}/queue
data_directory = {self.root}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mta.test
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
maillog_file = {self.root}/maillog
maillog_file_prefixes = {self.root}
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {self.root}/vmail
virtual_mailbox_maps = texthash:{self.config}/vmailbox
virtual_uid_maps = static:{self.uid}
virtual_gid_maps = static:{self.gid}
smtputf8_enable = no
biff = no
# No header rewriting for loopback clients (Postfix would add a missing Date:), so a test can
# compare what arrives with what was sent, byte for byte below the trace headers.
local_header_rewrite_clients =
"""
        )
        (self.config / "vmailbox").write_text(
            "".join(f"{name}@{DOMAIN} {name}/\n" for name in MAILBOXES)
        )
        (self.config / "master.cf").write_text(_MASTER_CF.format(port=self.port))
        for step in ("check", "start"):
            done = self._postfix(step)
            if done.returncode != 0:
                raise RuntimeError(f"postfix {step} failed: {done.stdout}{done.stderr}{self.log()}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"postfix did not start listening: {self.log()}")

    def maildir(self, name: str) -> Path:
        return self.root / "vmail" / name

    def delivered(self, name: str) -> list[bytes]:
        """What the Maildir of ``name@virtual.test`` holds, oldest first."""
        new = self.maildir(name) / "new"
        if not new.is_dir():
            return []
        return [path.read_bytes() for path in sorted(new.iterdir(), key=lambda p: p.name)]

    def wait_for(self, name: str, count: int, timeout: float = 30.0) -> list[bytes]:
        """Postfix delivers from its queue a moment after it accepted: wait for it."""
        deadline = time.monotonic() + timeout
        while len(found := self.delivered(name)) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return found

    def reset(self) -> None:
        for name in MAILBOXES:
            shutil.rmtree(self.maildir(name), ignore_errors=True)

    def log(self) -> str:
        return self.log_text()[-4000:]

    def log_text(self) -> str:
        """The whole maillog so far."""
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        self._postfix("stop")
        shutil.rmtree(self.root, ignore_errors=True)
