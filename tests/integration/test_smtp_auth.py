"""ESMTP AUTH to the MTA (esmtpname/esmtppassword) against aiosmtpd with AUTH turned on."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from fetchd.delivery import smtp as smtp_module
from fetchd.delivery.headers import Trace
from fetchd.delivery.smtp import SMTPDeliverer, SMTPSettings
from fetchd.delivery.smtpauth import choose_mechanism
from fetchd.demo.pop3server import DemoPOP3Server
from fetchd.errors import DeliveryError
from tests.support.command import run_fetchd

USER, PASSWORD = "relay-user", "Sm7p-s3cret!"
MESSAGE = b"Return-Path: <alice@example.org>\r\nSubject: hi\r\n\r\nhello\r\n"
CHALLENGE = b"<1896.697170952@mta.test>"


@dataclass
class AuthMTA:
    """An MTA that wants a login before MAIL, and notes every AUTH attempt."""

    port: int = 0
    attempts: list[str] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)  # who each delivered message came from

    require_login: bool = True

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.require_login and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        login = session.auth_data.login.decode() if session.auth_data else None
        self.logins.append(str(login))
        return "250 queued"

    def authenticator(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        self.attempts.append(mechanism)
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            USER.encode(),
            PASSWORD.encode(),
        )
        return AuthResult(success=ok, handled=False, auth_data=data)

    async def auth_CRAM__MD5(self, server: SMTP, args: list[str]) -> AuthResult:
        self.attempts.append("CRAM-MD5")
        answer = await server.challenge_auth(CHALLENGE)
        if not isinstance(answer, bytes):
            return AuthResult(success=False, handled=True)
        user, _, digest = answer.decode().rpartition(" ")
        expected = hmac.new(PASSWORD.encode(), CHALLENGE, hashlib.md5).hexdigest()
        ok = user == USER and hmac.compare_digest(digest, expected)
        return AuthResult(success=ok, handled=False, auth_data=LoginPassword(user.encode(), b""))


@asynccontextmanager
async def auth_mta(*mechanisms: str, offer_auth: bool = True) -> AsyncIterator[AuthMTA]:
    """``mechanisms``: what the MTA offers, of CRAM-MD5, PLAIN and LOGIN."""
    mta = AuthMTA(require_login=offer_auth)
    excluded = [m for m in ("CRAM-MD5", "PLAIN", "LOGIN") if m not in mechanisms]

    def factory() -> SMTP:
        return SMTP(
            mta,
            decode_data=False,
            hostname="mta.test",
            authenticator=mta.authenticator if offer_auth else None,
            auth_require_tls=False,
            auth_exclude_mechanism=excluded if offer_auth else ["CRAM-MD5", "PLAIN", "LOGIN"],
        )

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    mta.port = server.sockets[0].getsockname()[1]
    try:
        yield mta
    finally:
        server.close()
        await server.wait_closed()


async def deliver(mta: AuthMTA, password: str | None = PASSWORD) -> Any:
    deliverer = SMTPDeliverer(
        SMTPSettings(
            smtphunt=(f"127.0.0.1/{mta.port}",),
            recipients=("joe",),
            helo_name="fetchd.test",
            timeout=5.0,
            trace=Trace(invisible=True),
            esmtp_name=USER,
            esmtp_password=password,
        )
    )
    try:
        return await deliverer.deliver(MESSAGE)
    finally:
        await deliverer.aclose()


@pytest.mark.parametrize(
    ("offered", "used"),
    [
        (("PLAIN",), "PLAIN"),
        (("LOGIN",), "LOGIN"),
        (("PLAIN", "LOGIN"), "PLAIN"),
        (("CRAM-MD5", "PLAIN", "LOGIN"), "CRAM-MD5"),
    ],
)
async def test_logs_in_with_fetchmails_choice_of_mechanism(
    offered: tuple[str, ...], used: str
) -> None:
    async with auth_mta(*offered) as mta:
        outcome = await deliver(mta)
    assert outcome.delivered, outcome.reason
    assert mta.attempts == [used] and mta.logins == [USER]


async def test_a_refused_login_is_an_unusable_mta_and_never_shows_the_password() -> None:
    """Like an MTA that cannot be reached: the poll stops there and the mail stays."""
    async with auth_mta("PLAIN", "LOGIN") as mta:
        with pytest.raises(DeliveryError) as refused:
            await deliver(mta, password="wrong-" + PASSWORD)
    assert "ESMTP AUTH PLAIN as 'relay-user' refused: 535" in str(refused.value)
    assert PASSWORD not in str(refused.value)
    assert mta.attempts == ["PLAIN"]  # no second try with LOGIN: no fallback


async def test_a_failed_cram_md5_is_not_followed_by_plain() -> None:
    """A failed mechanism is never followed by a weaker one that shows the password."""
    async with auth_mta("CRAM-MD5", "PLAIN") as mta:
        with pytest.raises(DeliveryError, match="CRAM-MD5 as 'relay-user' refused"):
            await deliver(mta, password="wrong")
    assert mta.attempts == ["CRAM-MD5"]


async def test_no_password_in_clear_to_another_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only loopback addresses here: the listener is made to look remote."""
    monkeypatch.setattr(smtp_module, "_stays_local", lambda smtp, entry: False)
    async with auth_mta("PLAIN", "LOGIN") as mta:
        with pytest.raises(DeliveryError, match=r"would send the esmtppassword in clear \(PLAIN\)"):
            await deliver(mta)
    assert mta.attempts == []  # nothing was sent
    async with auth_mta("CRAM-MD5", "PLAIN") as mta:
        outcome = await deliver(mta)
    assert outcome.delivered and mta.attempts == ["CRAM-MD5"]


async def test_a_listener_without_auth_is_used_without_login() -> None:
    """As fetchmail: a password but no AUTH offered, and the MTA takes the mail."""
    async with auth_mta(offer_auth=False) as mta:
        outcome = await deliver(mta)
    assert outcome.delivered and mta.attempts == [] and mta.logins == ["None"]


async def test_without_a_password_the_mta_that_wants_a_login_keeps_the_message() -> None:
    async with auth_mta("PLAIN") as mta:
        outcome = await deliver(mta, password=None)
    assert not outcome.delivered and not outcome.may_delete and "530" in outcome.reason


def test_choose_mechanism() -> None:
    assert choose_mechanism(["LOGIN", "PLAIN"], local=True, listener="h") == "plain"
    assert choose_mechanism(["XOAUTH2"], local=False, listener="h") is None
    assert choose_mechanism(["login", "CRAM-MD5"], local=False, listener="h") == "cram-md5"
    with pytest.raises(DeliveryError, match="h: ESMTP AUTH would send"):
        choose_mechanism(["LOGIN"], local=False, listener="h")


async def test_whole_command_logs_in_and_says_nothing_of_the_password(tmp_path: Path) -> None:
    """The rc file's esmtpname/esmtppassword, through the fetchd command at -v."""
    pop = DemoPOP3Server("demo", "pop-secret", [MESSAGE])
    await pop.start()
    try:
        async with auth_mta("PLAIN", "LOGIN") as mta:
            rc = tmp_path / "fetchmailrc"
            rc.write_text(
                f"poll 127.0.0.1 proto pop3 port {pop.port}\n"
                f'  esmtpname {USER} esmtppassword "{PASSWORD}"\n'
                f'  user demo password "pop-secret" is joe here smtphost 127.0.0.1/{mta.port}\n'
                "  sslproto ''\n"
            )
            rc.chmod(0o600)
            code, text = await run_fetchd(tmp_path, rc, "-v", "-v", timeout=30)
    finally:
        await pop.stop()
    assert code == 0, text
    assert mta.logins == [USER]
    assert "SMTP> AUTH PLAIN *" in text
    plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    assert PASSWORD not in text and plain not in text


async def test_lmtp_logs_in_after_lhlo_on_a_unix_socket(tmp_path: Path) -> None:
    """LHLO lists AUTH as EHLO does; a Unix socket stays on this machine, so PLAIN is fine."""
    mta = AuthMTA()
    path = str(tmp_path / "lmtp.sock")
    server = await asyncio.get_running_loop().create_unix_server(
        lambda: LMTP(
            mta,
            decode_data=False,
            authenticator=mta.authenticator,
            auth_require_tls=False,
            auth_exclude_mechanism=["CRAM-MD5"],
        ),
        path,
    )
    deliverer = SMTPDeliverer(
        SMTPSettings(
            smtphunt=(path,),
            recipients=("joe",),
            lmtp=True,
            helo_name="fetchd.test",
            timeout=5.0,
            trace=Trace(invisible=True),
            esmtp_name=USER,
            esmtp_password=PASSWORD,
        )
    )
    try:
        outcome = await deliverer.deliver(MESSAGE)
    finally:
        await deliverer.aclose()
        server.close()
        await server.wait_closed()
    assert outcome.delivered, outcome.reason
    assert mta.attempts == ["PLAIN"] and mta.logins == [USER]
