"""TLS policy: contexts from fetchmail's ssl* options, and fingerprint pins."""

from __future__ import annotations

import hashlib
import ssl

import pytest

from fetchd.errors import ConfigError, TLSError
from fetchd.tls import Security, TLSSettings, check_peer, fingerprint_bytes, make_context


@pytest.mark.parametrize(
    ("proto", "minimum"),
    [
        (None, ssl.TLSVersion.TLSv1_2),
        ("auto", ssl.TLSVersion.TLSv1_2),
        ("TLS1.2+", ssl.TLSVersion.TLSv1_2),
        ("TLS1.3+", ssl.TLSVersion.TLSv1_3),
        ("tls1.3", ssl.TLSVersion.TLSv1_3),
    ],
)
def test_sslproto_is_the_minimum_version(proto: str | None, minimum: ssl.TLSVersion) -> None:
    context = make_context(TLSSettings(sslproto=proto))
    assert context.minimum_version == minimum
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_unknown_sslproto_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sslproto 'SSL3'"):
        make_context(TLSSettings(sslproto="SSL3"))


def test_security_modes() -> None:
    assert TLSSettings().security() is Security.STARTTLS
    assert TLSSettings(ssl=True).security() is Security.TLS
    assert TLSSettings(sslproto="").security() is Security.PLAIN
    assert TLSSettings(sslproto="").disabled


def test_no_sslcertck_turns_verification_off() -> None:
    context = make_context(TLSSettings(sslcertck=False))
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname


def test_fingerprints() -> None:
    digest = hashlib.sha256(b"certificate").digest()
    pin = ":".join(f"{b:02X}" for b in digest)
    assert fingerprint_bytes(pin) == digest
    assert fingerprint_bytes(pin.lower().replace(":", "")) == digest
    with pytest.raises(ConfigError, match="MD5"):
        fingerprint_bytes(":".join(["AA"] * 16))
    with pytest.raises(ConfigError, match="hexadecimal"):
        fingerprint_bytes("zz:zz")

    class Peer:
        def getpeercert(self, binary_form: bool = False) -> bytes:
            return b"certificate"

    check_peer(Peer(), TLSSettings(sslfingerprint=pin), "h")  # type: ignore[arg-type]
    with pytest.raises(TLSError, match="does not match"):
        check_peer(Peer(), TLSSettings(sslfingerprint=":".join(["AB"] * 32)), "h")  # type: ignore[arg-type]
