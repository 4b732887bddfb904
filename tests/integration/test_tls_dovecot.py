"""TLS options over real connections to Dovecot, POP3 and IMAP: client certificates, a minimum
version the server cannot meet, and fingerprint pins with and without ``sslcertck``.

Two extra Dovecots are started for this module: one that requires a client certificate
(``auth_ssl_require_client_cert``), one whose OpenSSL offers nothing newer than TLS 1.2. Each test
checks in Dovecot's own log whether a login happened, not only what fetchd says.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetchd.errors import AuthError, TLSError
from fetchd.imap.connect import open_imap
from fetchd.net.tls import TLSSettings
from fetchd.pop3.source import POP3Account, open_pop3
from fetchd.source import MailSource
from tests.support.dovecot import DOVECOT, Dovecot

pytestmark = pytest.mark.dovecot

PROTOCOLS = ["pop3", "imap"]
MESSAGE = b"From: a@example.org\r\nSubject: tls\r\n\r\nbody\r\n"


def _started(dovecot: Dovecot) -> Iterator[Dovecot]:
    if not os.path.exists(DOVECOT):
        if os.environ.get("CI"):
            pytest.fail("Dovecot is missing (.ci/run installs dovecot-imapd and dovecot-pop3d)")
        pytest.skip("Dovecot is not installed (apt-get install dovecot-imapd dovecot-pop3d)")
    dovecot.start()
    dovecot.deliver(MESSAGE)
    yield dovecot
    dovecot.stop()


@pytest.fixture(scope="module")
def cert_dovecot() -> Iterator[Dovecot]:
    """A Dovecot that verifies client certificates against its test CA and requires one."""
    yield from _started(
        Dovecot(
            extra_config="ssl_ca = <{root}/ca.pem\n"
            "ssl_verify_client_cert = yes\n"
            "auth_ssl_require_client_cert = yes\n"
            "ssl_require_crl = no\n"
        )
    )


@pytest.fixture(scope="module")
def tls12_dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    """A Dovecot whose OpenSSL offers TLS 1.2 at most (OpenSSL's MaxProtocol)."""
    conf = tmp_path_factory.mktemp("openssl") / "openssl.cnf"
    conf.write_text(
        "openssl_conf = default_conf\n[default_conf]\nssl_conf = ssl_sect\n"
        "[ssl_sect]\nsystem_default = tls_sect\n[tls_sect]\nMaxProtocol = TLSv1.2\n"
    )
    yield from _started(
        Dovecot(
            extra_config="import_environment = TZ OPENSSL_CONF\n",
            env={"OPENSSL_CONF": str(conf)},
        )
    )


def logins(dovecot: Dovecot) -> int:
    """Successful logins in Dovecot's whole log so far."""
    path = dovecot.root / "dovecot.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return text.count(f"Login: user=<{dovecot.user}>")


async def open_source(
    protocol: str, dovecot: Dovecot, tls: TLSSettings, *, implicit: bool = False
) -> MailSource:
    if protocol == "pop3":
        port = dovecot.pop3s_port if implicit else dovecot.pop3_port
        account = POP3Account(
            dovecot.host, port, dovecot.user, dovecot.password, "alice@dovecot", tls, 10.0
        )
        return await open_pop3(account)
    return await open_imap(
        host=dovecot.host,
        port=dovecot.imaps_port if implicit else dovecot.imap_port,
        user=dovecot.user,
        password=dovecot.password,
        label="alice@dovecot",
        tls=tls,
        timeout=10.0,
        auth="any",
        folder="INBOX",
        fetchall=True,
        recorded=None,
    )


async def listed(protocol: str, dovecot: Dovecot, tls: TLSSettings, **kwargs: bool) -> int:
    """Log in, count the messages, and leave without changing anything."""
    source = await open_source(protocol, dovecot, tls, **kwargs)
    try:
        return len(await source.list_messages())
    finally:
        await source.abort()


def server_fingerprint(dovecot: Dovecot) -> str:
    """The SHA-256 pin of the certificate Dovecot serves, from its own file."""
    pem = (dovecot.root / "server.pem").read_text()
    begin = pem.index("-----BEGIN CERTIFICATE-----")
    end = pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem[begin:end])).digest()
    return ":".join(f"{b:02X}" for b in digest)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_sslcert_and_sslkey_log_in_where_dovecot_requires_a_client_certificate(
    cert_dovecot: Dovecot, tmp_path: Path, protocol: str
) -> None:
    """With `sslcert`/`sslkey` the login succeeds; without them Dovecot refuses it."""
    assert cert_dovecot.ca is not None
    client = cert_dovecot.ca.issue_cert("alice@client.example")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert))
    client.private_key_pem.write_to_path(str(key))
    before = logins(cert_dovecot)
    with pytest.raises(AuthError):
        await listed(protocol, cert_dovecot, TLSSettings(sslcertfile=cert_dovecot.ca_file))
    assert logins(cert_dovecot) == before
    tls = TLSSettings(sslcertfile=cert_dovecot.ca_file, sslcert=str(cert), sslkey=str(key))
    assert await listed(protocol, cert_dovecot, tls) == 1
    assert logins(cert_dovecot) == before + 1


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "ssl"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_minimum_version_the_server_cannot_meet_is_refused(
    tls12_dovecot: Dovecot, protocol: str, implicit: bool
) -> None:
    """`sslproto 'TLS1.3+'` against a server offering TLS 1.2 at most: refused, no login;
    `sslproto 'TLS1.2+'` against the same server works."""
    ca = tls12_dovecot.ca_file
    before = logins(tls12_dovecot)
    with pytest.raises(TLSError, match=r"TLS (handshake )?failed"):
        await listed(
            protocol,
            tls12_dovecot,
            TLSSettings(ssl=implicit, sslproto="TLS1.3+", sslcertfile=ca),
            implicit=implicit,
        )
    assert logins(tls12_dovecot) == before
    tls = TLSSettings(ssl=implicit, sslproto="TLS1.2+", sslcertfile=ca)
    assert await listed(protocol, tls12_dovecot, tls, implicit=implicit) == 1
    assert logins(tls12_dovecot) == before + 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_right_pin_is_accepted_with_and_without_sslcertck(
    dovecot: Dovecot, protocol: str
) -> None:
    """The right pin works with `sslcertck` (and the CA) and, with `no sslcertck`, stands in for
    the CA; with `sslcertck` on and no CA, the pin alone does not make the certificate valid."""
    dovecot.deliver(MESSAGE)
    pin = server_fingerprint(dovecot)
    checked = TLSSettings(sslcertfile=dovecot.ca_file, sslfingerprint=pin)
    assert await listed(protocol, dovecot, checked) == 1
    assert await listed(protocol, dovecot, TLSSettings(sslcertck=False, sslfingerprint=pin)) == 1
    with pytest.raises(TLSError, match=r"TLS (handshake )?failed"):
        await listed(protocol, dovecot, TLSSettings(sslfingerprint=pin))  # system CAs only


@pytest.mark.parametrize("sslcertck", [True, False], ids=["sslcertck", "no-sslcertck"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_wrong_pin_is_refused_before_any_login(
    dovecot: Dovecot, protocol: str, sslcertck: bool
) -> None:
    """A pin that does not match the served certificate ends the session before a login, with
    or without `sslcertck`, over STARTTLS and implicit TLS."""
    right = server_fingerprint(dovecot)
    wrong = right[:-2] + ("00" if not right.endswith("00") else "01")
    before = logins(dovecot)
    for implicit in (False, True):
        tls = TLSSettings(
            ssl=implicit,
            sslcertck=sslcertck,
            sslcertfile=dovecot.ca_file if sslcertck else None,
            sslfingerprint=wrong,
        )
        with pytest.raises(TLSError, match="does not match sslfingerprint"):
            await listed(protocol, dovecot, tls, implicit=implicit)
    assert logins(dovecot) == before


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_sslcommonname_is_the_name_the_certificate_must_carry(
    dovecot: Dovecot, protocol: str
) -> None:
    """Dovecot's certificate names 127.0.0.1 and localhost: `sslcommonname localhost` passes,
    another name is refused before any login, over POP3 and IMAP alike."""
    dovecot.deliver(MESSAGE)
    ca = dovecot.ca_file
    assert await listed(protocol, dovecot, TLSSettings(sslcertfile=ca, sslcommonname="localhost"))
    before = logins(dovecot)
    with pytest.raises(TLSError, match=r"TLS (handshake )?failed"):
        await listed(protocol, dovecot, TLSSettings(sslcertfile=ca, sslcommonname="other.test"))
    assert logins(dovecot) == before
