"""TLS policy shared by POP3 and IMAP: contexts from fetchmail's ssl* options, fingerprint pins.

Secure by default: certificates and host names are verified (``sslcertck`` is fetchmail 6.4's
default too), TLS 1.2 is the floor unless ``sslproto`` says otherwise, and a pin is SHA-256.

Clear text, as fetchmail 6.4 decides it, wherever the server is (loopback included):
- any explicit TLS option (``ssl``, ``sslproto 'TLS1.2+'``, ``sslcertck``, ``sslcertfile``,
  ``sslcertpath``, ``sslcommonname``, ``sslfingerprint``, ``sslcert``/``sslkey``) makes TLS
  mandatory: a server without STLS/STARTTLS is refused before anything is sent;
- without any, a server that offers no STLS/STARTTLS may be used in clear, but gets no password
  unless its entry says ``sslproto ''``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import ssl
from dataclasses import dataclass

from fetchd.errors import AuthError, ConfigError, TLSError


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (the MTA's ESMTP AUTH rule uses it)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Security(enum.Enum):
    """How a connection is protected."""

    PLAIN = "plain"  # no TLS: only with `sslproto ''`
    TLS = "tls"  # implicit TLS from the first byte (`ssl`: pop3s, imaps)
    STARTTLS = "starttls"  # STLS / STARTTLS, required: never a plaintext fallback


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """The user's TLS options, as the rc file names them."""

    ssl: bool = False
    sslproto: str | None = None
    sslcertck: bool = True
    sslcertfile: str | None = None
    sslcertpath: str | None = None
    sslcommonname: str | None = None
    sslfingerprint: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    sslcertck_explicit: bool = False  # `sslcertck` written in the rc file or on the command line

    @property
    def disabled(self) -> bool:
        """fetchmail's `sslproto ''`: the user turned TLS off explicitly."""
        return self.sslproto == "" and not self.ssl

    @property
    def required_by(self) -> str | None:
        """The explicit TLS option that makes TLS mandatory (as the rc file writes it), if any."""
        if self.disabled:
            return None
        named = (
            ("ssl", self.ssl),
            (f"sslproto {self.sslproto!r}", bool(self.sslproto)),
            ("sslcertck", self.sslcertck_explicit and self.sslcertck),
            ("sslcertfile", self.sslcertfile is not None),
            ("sslcertpath", self.sslcertpath is not None),
            ("sslcommonname", self.sslcommonname is not None),
            ("sslfingerprint", self.sslfingerprint is not None),
            ("sslcert", self.sslcert is not None),
            ("sslkey", self.sslkey is not None),
        )
        return next((name for name, given in named if given), None)

    def security(self) -> Security:
        if self.ssl:
            return Security.TLS
        if self.disabled:
            return Security.PLAIN
        return Security.STARTTLS


_MINIMUM = {
    "auto": ssl.TLSVersion.TLSv1_2,
    "ssl23": ssl.TLSVersion.TLSv1_2,
    "tls1": ssl.TLSVersion.TLSv1,
    "tls1+": ssl.TLSVersion.TLSv1,
    "tls1.1": ssl.TLSVersion.TLSv1_1,
    "tls1.1+": ssl.TLSVersion.TLSv1_1,
    "tls1.2": ssl.TLSVersion.TLSv1_2,
    "tls1.2+": ssl.TLSVersion.TLSv1_2,
    "tls1.3": ssl.TLSVersion.TLSv1_3,
    "tls1.3+": ssl.TLSVersion.TLSv1_3,
}


def no_starttls_error(settings: TLSSettings, host: str, verb: str) -> TLSError:
    """TLS is mandatory (``settings.required_by``) and ``host`` does not offer ``verb``."""
    return TLSError(
        f"{host} offers no {verb}, and the rc file asks for TLS ({settings.required_by}): "
        "fetchd does not go on in clear; add `ssl` to its entry if the server speaks TLS on "
        "its own port"
    )


def clear_password_error(host: str, what: str = "the password") -> AuthError:
    """No TLS on this connection, and the user did not allow clear text for ``host``."""
    return AuthError(
        f"{host} offers no TLS, and fetchd does not send {what} in clear, not even to this "
        f"machine; to allow it, add `sslproto ''` to the entry of {host}"
    )


def make_context(settings: TLSSettings) -> ssl.SSLContext:
    """A client context for these settings; a bad option is a ConfigError naming it."""
    context = (
        ssl.create_default_context(cafile=settings.sslcertfile, capath=settings.sslcertpath)
        if (settings.sslcertfile or settings.sslcertpath)
        else ssl.create_default_context()
    )
    proto = (settings.sslproto or "auto").lower()
    if proto not in _MINIMUM:
        raise ConfigError(
            f"sslproto {settings.sslproto!r} is not known; use auto, TLS1.2+, TLS1.3+ "
            "(or '' to turn TLS off)"
        )
    context.minimum_version = _MINIMUM[proto]
    if not proto.endswith("+") and proto not in ("auto", "ssl23"):
        context.maximum_version = _MINIMUM[proto]
    if not settings.sslcertck:
        # Only sensible with a fingerprint pin, which check_peer then enforces.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.sslcert:
        try:
            context.load_cert_chain(settings.sslcert, settings.sslkey)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load sslcert {settings.sslcert}: {exc}") from None
    if settings.sslfingerprint:
        fingerprint_bytes(settings.sslfingerprint)  # refuse a bad pin before connecting
    return context


def server_hostname(settings: TLSSettings, host: str) -> str:
    return settings.sslcommonname or host


def fingerprint_bytes(pin: str) -> bytes:
    """A pin as fetchmail writes it ("AB:CD:..."); only SHA-256 is accepted."""
    digits = pin.replace(":", "").strip()
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        raise ConfigError(f"sslfingerprint {pin!r} is not hexadecimal") from None
    if len(raw) == 16:
        raise ConfigError(
            "sslfingerprint is an MD5 fingerprint, which can be forged; use the SHA-256 one: "
            "openssl x509 -noout -fingerprint -sha256 -in CERT"
        )
    if len(raw) != 32:
        raise ConfigError(f"sslfingerprint has {len(raw)} bytes; a SHA-256 fingerprint has 32")
    return raw


def check_peer(
    ssl_object: ssl.SSLObject | ssl.SSLSocket | None, settings: TLSSettings, host: str
) -> None:
    """After the handshake: enforce the fingerprint pin, if any."""
    if not settings.sslfingerprint:
        return
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise TLSError(f"{host}: the server presented no certificate to check the pin against")
    actual = hashlib.sha256(der).digest()
    if not hmac.compare_digest(actual, fingerprint_bytes(settings.sslfingerprint)):
        shown = ":".join(f"{b:02X}" for b in actual)
        raise TLSError(f"{host}: certificate fingerprint {shown} does not match sslfingerprint")
