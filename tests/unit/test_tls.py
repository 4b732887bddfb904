"""TLS policy: contexts from fetchmail's ssl* options, and fingerprint pins."""

from __future__ import annotations

import hashlib
import ssl

import pytest

from fetchd.config import ParseEnvironment, parse
from fetchd.config.overrides import apply_overrides
from fetchd.errors import ConfigError, TLSError
from fetchd.net.tls import Security, TLSSettings, check_peer, fingerprint_bytes, make_context
from fetchd.options import parse_args


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


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (TLSSettings(), None),
        (TLSSettings(sslcertck=True), None),  # the default, not written: not a request for TLS
        (TLSSettings(sslcertck_explicit=True), "sslcertck"),
        (TLSSettings(sslcertck=False, sslcertck_explicit=False), None),
        (TLSSettings(sslproto="TLS1.2+"), "sslproto 'TLS1.2+'"),
        (TLSSettings(sslproto=""), None),
        (TLSSettings(sslproto="", sslcertfile="/ca.pem"), None),  # `sslproto ''` turns TLS off
        (TLSSettings(sslcertfile="/ca.pem"), "sslcertfile"),
        (TLSSettings(sslcertpath="/certs"), "sslcertpath"),
        (TLSSettings(sslfingerprint="AB"), "sslfingerprint"),
        (TLSSettings(sslcert="/c.pem", sslkey="/k.pem"), "sslcert"),
        (TLSSettings(ssl=True), "ssl"),
    ],
)
def test_which_option_makes_tls_mandatory(settings: TLSSettings, named: str | None) -> None:
    assert settings.required_by == named


@pytest.mark.parametrize(
    ("rc", "argv", "explicit"),
    [
        ("", [], False),
        (" sslcertck", [], True),
        (" no sslcertck", [], False),
        ("", ["--sslcertck"], True),
        (" sslcertck", ["--nosslcertck"], False),
    ],
)
def test_a_written_sslcertck_is_told_from_the_default(
    rc: str, argv: list[str], explicit: bool
) -> None:
    """`sslcertck` is fetchmail 6.4's default; only a written one (rc or flag) requires TLS."""
    env = ParseEnvironment(login="u", home="/nonexistent", rcdir="/")
    config = apply_overrides(parse(f"poll h user u{rc}\n", "rc", env), parse_args(argv))
    [user] = config.servers[0].users
    assert user.sslcertck_explicit is explicit
