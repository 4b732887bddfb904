"""Kerberos (SASL GSSAPI) through the whole ``fetchd`` command: a private MIT KDC with its own
realm (tests.support.kdc), a Dovecot with a service keytab for imap/localhost and pop/localhost,
and the test user's ticket from ``kinit`` with a password-derived key. No rc file here holds the
user's password."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.command import run_fetchd
from tests.support.dovecot import DOVECOT, Dovecot
from tests.support.kdc import KDC, KRB_PASSWORD, OTHER, USER, unavailable
from tests.support.mta import Sink, running_mta

pytestmark = pytest.mark.dovecot


@pytest.fixture(scope="module")
def kerberos_dovecot(kdc: KDC) -> Iterator[Dovecot]:
    if not os.path.exists(DOVECOT):
        unavailable("Dovecot is not installed (apt-get install dovecot-imapd dovecot-pop3d)")
    if not os.path.exists("/usr/lib/dovecot/modules/auth/libmech_gssapi.so"):
        unavailable("Dovecot's GSSAPI module is missing (apt-get install dovecot-gssapi)")
    # The password: only for the tests where auth any goes on without Kerberos.
    server = Dovecot(user=USER, password="plain-Secret-9", kerberos=kdc.environ())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def dovecot(kerberos_dovecot: Dovecot, kdc: KDC) -> Dovecot:
    """Empty mailbox, and a fresh ticket for the test user in the test credential cache."""
    kerberos_dovecot.reset()
    kdc.kdestroy()
    kdc.kinit(USER, KRB_PASSWORD)
    return kerberos_dovecot


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    async with running_mta() as mta:
        yield mta


def _rc(home: Path, dovecot: Dovecot, smtp_port: int, proto: str, options: str) -> Path:
    port = dovecot.imap_port if proto == "imap" else dovecot.pop3_port
    rc = home / ".fetchmailrc"
    rc.write_text(
        f"poll localhost proto {proto} port {port} {options}\n"
        f"  user {USER} is joe here smtphost 127.0.0.1/{smtp_port} sslcertfile {dovecot.ca_file}\n"
    )
    rc.chmod(0o600)
    return rc


async def _fetchd(home: Path, rc: Path, kdc: KDC, *args: str) -> tuple[int, str]:
    return await run_fetchd(home, rc, *args, env=kdc.environ(), timeout=60)


@pytest.mark.parametrize(
    ("proto", "auth"), [("imap", "gssapi"), ("pop3", "gssapi"), ("imap", "kerberos_v5")]
)
async def test_ticket_logs_in_and_mail_is_delivered(
    tmp_path: Path,
    dovecot: Dovecot,
    kdc: KDC,
    sink: Sink,
    proto: str,
    auth: str,
) -> None:
    """With only a ticket (no password anywhere) fetchd logs in with GSSAPI and delivers."""
    dovecot.deliver(b"Subject: kerberos\r\n\r\nbody\r\n")
    offset = dovecot.log_offset()
    rc = _rc(tmp_path, dovecot, sink.port, proto, f"auth {auth}")
    code, out = await _fetchd(tmp_path, rc, kdc, "-v")
    assert code == 0, out
    assert [m.count(b"Subject: kerberos") for m in sink.received] == [1]
    login = "imap-login" if proto == "imap" else "pop3-login"
    logged = dovecot.wait_for_log(offset, f"{login}: Info: Login: user=<{USER}>, method=GSSAPI")
    assert "Traceback" not in out, logged
    assert not re.search(r"[A-Za-z0-9+/=]{200,}", out)  # -v shows no token (each is "*")


async def test_auth_any_picks_gssapi_when_a_ticket_exists(
    tmp_path: Path, dovecot: Dovecot, kdc: KDC, sink: Sink
) -> None:
    """``auth any`` with a wrong password in the rc file still logs in: GSSAPI goes first."""
    dovecot.deliver(b"Subject: any\r\n\r\nbody\r\n")
    offset = dovecot.log_offset()
    rc = _rc(tmp_path, dovecot, sink.port, "imap", "auth any")
    rc.write_text(rc.read_text().replace(" is joe", ' password "wrong-password" is joe'))
    code, out = await _fetchd(tmp_path, rc, kdc)
    assert code == 0, out
    assert len(sink.received) == 1
    dovecot.wait_for_log(offset, "method=GSSAPI")


async def test_auth_any_without_a_ticket_goes_on_with_the_password(
    tmp_path: Path, dovecot: Dovecot, kdc: KDC, sink: Sink
) -> None:
    """No ticket: ``auth any`` does not try GSSAPI and logs in with the rc file's password."""
    kdc.kdestroy()
    dovecot.deliver(b"Subject: any\r\n\r\nbody\r\n")
    offset = dovecot.log_offset()
    rc = _rc(tmp_path, dovecot, sink.port, "pop3", "auth any")
    rc.write_text(rc.read_text().replace(" is joe", f' password "{dovecot.password}" is joe'))
    code, out = await _fetchd(tmp_path, rc, kdc)
    assert code == 0, out
    assert len(sink.received) == 1
    assert "method=GSSAPI" not in dovecot.wait_for_log(offset, f"Login: user=<{USER}>")


@pytest.mark.parametrize("proto", ["imap", "pop3"])
async def test_missing_ticket_says_run_kinit(
    tmp_path: Path, dovecot: Dovecot, kdc: KDC, sink: Sink, proto: str
) -> None:
    """No ticket in the cache: exit 3 with "run kinit", no traceback, nothing delivered."""
    kdc.kdestroy()
    dovecot.deliver(b"Subject: kept\r\n\r\nbody\r\n")
    code, out = await _fetchd(
        tmp_path, _rc(tmp_path, dovecot, sink.port, proto, "auth gssapi"), kdc
    )
    assert code == 3, out
    assert "no ticket in the credential cache; run kinit" in out
    assert "Traceback" not in out and sink.received == []
    assert len(dovecot.messages()) == 1


async def test_expired_ticket_is_reported(
    tmp_path: Path, dovecot: Dovecot, kdc: KDC, sink: Sink
) -> None:
    """A ticket whose lifetime ran out: exit 3, "expired", no traceback."""
    kdc.kdestroy()
    kdc.kinit(USER, KRB_PASSWORD, lifetime="1s")
    await asyncio.sleep(2.1)
    code, out = await _fetchd(
        tmp_path, _rc(tmp_path, dovecot, sink.port, "pop3", "auth gssapi"), kdc
    )
    assert code == 3, out
    assert "the ticket has expired; run kinit again" in out
    assert "Traceback" not in out


async def test_unknown_service_principal_is_named(
    tmp_path: Path, dovecot: Dovecot, kdc: KDC, sink: Sink
) -> None:
    """``principal`` naming a service the KDC does not know: exit 3, the principal named."""
    rc = _rc(tmp_path, dovecot, sink.port, "imap", "auth gssapi principal nosuch@localhost")
    code, out = await _fetchd(tmp_path, rc, kdc)
    assert code == 3, out
    assert "the KDC does not know the service principal 'nosuch@localhost'" in out
    assert "Traceback" not in out


async def test_principal_chooses_the_service(
    tmp_path: Path, dovecot: Dovecot, kdc: KDC, sink: Sink
) -> None:
    """An explicit full principal (``imap/localhost@REALM``) is used as given, and logs in."""
    dovecot.deliver(b"Subject: principal\r\n\r\nbody\r\n")
    rc = _rc(
        tmp_path, dovecot, sink.port, "imap", f"auth gssapi principal imap/localhost@{kdc.realm}"
    )
    code, out = await _fetchd(tmp_path, rc, kdc)
    assert code == 0, out
    assert len(sink.received) == 1


async def test_without_the_extra_the_error_names_it(
    tmp_path: Path, dovecot: Dovecot, kdc: KDC, sink: Sink
) -> None:
    """``import gssapi`` failing (the extra not installed): one clear error naming the extra."""
    blocker = tmp_path / "blocker" / "gssapi"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('gssapi blocked by the test')\n")
    rc = _rc(tmp_path, dovecot, sink.port, "imap", "auth gssapi")
    code, out = await run_fetchd(
        tmp_path, rc, env=kdc.environ() | {"PYTHONPATH": str(blocker.parent)}, timeout=60
    )
    assert code == 3, out
    assert "pip install 'fetchd[kerberos]'" in out
    assert "Traceback" not in out


FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


async def test_clock_skew_is_reported(
    tmp_path: Path, dovecot: Dovecot, kdc: KDC, sink: Sink
) -> None:
    """fetchd's clock 10 minutes ahead of the KDC's (libfaketime; the limit is 5): exit 3 and
    "clock skew", not a generic GSS-API failure."""
    if not os.path.exists(FAKETIME):
        unavailable("libfaketime is missing (apt-get install faketime)")
    rc = _rc(tmp_path, dovecot, sink.port, "imap", "auth gssapi")
    skewed = {"LD_PRELOAD": FAKETIME, "FAKETIME": "+10m", "FAKETIME_DONT_RESET": "1"}
    code, out = await run_fetchd(tmp_path, rc, env=kdc.environ() | skewed, timeout=60)
    assert code == 3, out
    assert "clock skew too great" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("proto", ["imap", "pop3"])
async def test_auth_gssapi_never_falls_back_to_the_password(
    tmp_path: Path, dovecot_server: Dovecot, kdc: KDC, sink: Sink, proto: str
) -> None:
    """A server that does not offer GSSAPI (the suite's ordinary Dovecot), a ticket and the
    right password in the rc file: ``auth gssapi`` fails (exit 3) and sends no password."""
    dovecot_server.reset()
    kdc.kdestroy()
    kdc.kinit(USER, KRB_PASSWORD)
    dovecot_server.deliver(b"Subject: kept\r\n\r\nbody\r\n")
    offset = dovecot_server.log_offset()
    port = dovecot_server.imap_port if proto == "imap" else dovecot_server.pop3_port
    rc = tmp_path / ".fetchmailrc"
    rc.write_text(
        f"poll localhost proto {proto} port {port} auth gssapi\n"
        f'  user {dovecot_server.user} password "{dovecot_server.password}" is joe here'
        f" smtphost 127.0.0.1/{sink.port} sslcertfile {dovecot_server.ca_file}\n"
    )
    rc.chmod(0o600)
    code, out = await _fetchd(tmp_path, rc, kdc)
    assert code == 3, out
    assert "does not offer" in out and "GSSAPI" in out
    assert "Traceback" not in out and sink.received == []
    await asyncio.sleep(0.3)  # Dovecot's log process writes a moment after the event
    assert "Login: user=" not in dovecot_server.log_since(offset)


@pytest.mark.parametrize("auth", ["any", "gssapi"])
async def test_server_refusing_the_ticket(
    tmp_path: Path, dovecot: Dovecot, kdc: KDC, sink: Sink, auth: str
) -> None:
    """A ticket for another principal, which Dovecot refuses for USER (krb5_kuserok): ``auth
    any`` goes on with the rc file's password and delivers; ``auth gssapi`` stops, exit 3."""
    kdc.kdestroy()
    kdc.kinit(OTHER, KRB_PASSWORD)
    dovecot.deliver(b"Subject: refused\r\n\r\nbody\r\n")
    offset = dovecot.log_offset()
    rc = _rc(tmp_path, dovecot, sink.port, "imap", f"auth {auth}")
    rc.write_text(rc.read_text().replace(" is joe", f' password "{dovecot.password}" is joe'))
    code, out = await _fetchd(tmp_path, rc, kdc, "-v")
    if auth == "any":
        assert code == 0, out
        assert len(sink.received) == 1
        dovecot.wait_for_log(offset, f"Login: user=<{USER}>, method=PLAIN")
        assert out.index("AUTHENTICATE GSSAPI") < out.index("LOGIN"), out  # refused first
    else:
        assert code == 3, out
        assert "AUTHENTICATE GSSAPI" in out and "Traceback" not in out
        assert sink.received == [] and len(dovecot.messages()) == 1
