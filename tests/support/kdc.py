"""A private MIT Kerberos KDC for the test suite: its own realm, database, krb5.conf and loopback
port in a temporary directory, nothing of the system's configuration.

``environ()`` gives the variables (KRB5_CONFIG, KRB5_KDC_PROFILE, KRB5CCNAME, KRB5_KTNAME) that
point the Kerberos library of any process (fetchd, kinit, Dovecot) at it. Service principals are
host-based on "localhost": ``rdns = false`` and ``dns_canonicalize_hostname = false`` keep the
library from turning 127.0.0.1 or "localhost" into some other name.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support.process import stop_group
from tests.support.tools import in_ci

KRB5KDC = "/usr/sbin/krb5kdc"
KDB5_UTIL = "/usr/sbin/kdb5_util"
KADMIN_LOCAL = "/usr/sbin/kadmin.local"
KINIT = "/usr/bin/kinit"
KDESTROY = "/usr/bin/kdestroy"
PROGRAMS = {
    KRB5KDC: "krb5-kdc",
    KDB5_UTIL: "krb5-kdc",
    KADMIN_LOCAL: "krb5-admin-server",
    KINIT: "krb5-user",
}
REALM = "FETCHD.TEST"
USER = os.environ.get("FETCHD_TEST_USER", "fmtest")  # a system user: Dovecot's krb5_kuserok
KRB_PASSWORD = "kerberos-Secret-7"
OTHER = "intruder"  # a principal the realm knows but that may not log in as USER


def unavailable(reason: str) -> NoReturn:
    """What the Kerberos tests need is missing: a skip with the reason, a failure under CI."""
    if in_ci():
        pytest.fail(f"the Kerberos tests cannot run under CI: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class KDC:
    def __init__(self, realm: str = REALM) -> None:
        self.realm = realm
        self.root = Path(tempfile.mkdtemp(prefix="fetchd-kdc-"))
        self.root.chmod(0o755)  # Dovecot's auth process reads the config and the keytab
        self.port = _free_port()
        self.ccache = self.root / "ccache"
        self.keytab = self.root / "service.keytab"
        self._process: subprocess.Popen[bytes] | None = None

    def environ(self) -> dict[str, str]:
        return {
            "KRB5_CONFIG": str(self.root / "krb5.conf"),
            "KRB5_KDC_PROFILE": str(self.root / "kdc.conf"),
            "KRB5CCNAME": f"FILE:{self.ccache}",
            "KRB5_KTNAME": f"FILE:{self.keytab}",
        }

    def start(self) -> None:
        """Create the realm's database and start krb5kdc; RuntimeError with its log if not."""
        root, realm = self.root, self.realm
        (root / "krb5.conf").write_text(
            f"[libdefaults]\n default_realm = {realm}\n rdns = false\n"
            " dns_canonicalize_hostname = false\n dns_lookup_kdc = false\n"
            " dns_lookup_realm = false\n udp_preference_limit = 1\n"
            f"[realms]\n {realm} = {{\n  kdc = 127.0.0.1:{self.port}\n }}\n"
            f"[domain_realm]\n localhost = {realm}\n"
        )
        (root / "kdc.conf").write_text(
            f"[kdcdefaults]\n kdc_listen = 127.0.0.1:{self.port}\n"
            f" kdc_tcp_listen = 127.0.0.1:{self.port}\n"
            f"[realms]\n {realm} = {{\n  database_name = {root}/principal\n"
            f"  key_stash_file = {root}/stash\n  acl_file = {root}/kadm5.acl\n"
            "  max_life = 1h\n  max_renewable_life = 0\n }\n"
            f"[logging]\n kdc = FILE:{root}/kdc.log\n"
        )
        (root / "kadm5.acl").write_text("")
        env = os.environ | self.environ()
        self._run([KDB5_UTIL, "create", "-s", "-r", realm, "-P", "fetchd-master-key"], env)
        self._process = subprocess.Popen(
            [KRB5KDC, "-n", "-r", realm],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=env,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"krb5kdc exited: {err}{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"krb5kdc did not start listening: {self.log()}")

    def _run(self, argv: list[str], env: dict[str, str], stdin: str = "") -> str:
        done = subprocess.run(argv, input=stdin.encode(), capture_output=True, env=env, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.decode()}{self.log()}")
        return done.stdout.decode()

    def kadmin(self, query: str) -> str:
        return self._run([KADMIN_LOCAL, "-r", self.realm, "-q", query], os.environ | self.environ())

    def add_user(self, name: str, password: str) -> None:
        """A user principal with a key derived from ``password``."""
        self.kadmin(f"addprinc -pw {password} {name}")

    def add_service(self, principal: str) -> None:
        """A service principal with a random key, exported to the keytab Dovecot reads."""
        self.kadmin(f"addprinc -randkey {principal}")
        self.kadmin(f"ktadd -k {self.keytab} {principal}")
        self.keytab.chmod(0o644)  # the test Dovecot's auth process runs as another user

    def kinit(self, name: str, password: str, lifetime: str = "") -> None:
        """Get a ticket-granting ticket for ``name`` into the test credential cache."""
        argv = [KINIT, *(["-l", lifetime] if lifetime else []), name]
        self._run(argv, os.environ | self.environ(), stdin=password + "\n")

    def kdestroy(self) -> None:
        subprocess.run(
            [KDESTROY, "-q"], env=os.environ | self.environ(), check=False, capture_output=True
        )

    def log(self) -> str:
        path = self.root / "kdc.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        stop_group(self._process)
        self._process = None
        shutil.rmtree(self.root, ignore_errors=True)
