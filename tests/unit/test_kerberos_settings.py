"""Kerberos settings without a KDC: the service principal fetchd asks a ticket for, what -V
says about it, and the GSS-API errors turned into messages a user can act on."""

from __future__ import annotations

import pytest

from fetchd.config import ParseEnvironment, parse
from fetchd.config.describe import describe
from fetchd.pipeline import gssapi_target

gssapi_exceptions = pytest.importorskip("gssapi.exceptions")  # the test extra pulls it in
from fetchd.auth import kerberos  # noqa: E402

ENV = ParseEnvironment(login="me", home="/home/me", rcdir="/home/me", hostname="box")
RC = (
    "poll mail.example.org proto imap auth gssapi user u\n"
    "poll pop.example.org proto pop3 auth kerberos_v5 principal pop/pop.example.org@EX.ORG user v\n"
    "poll plain.example.org proto imap user w password secret\n"
)


def test_service_principal_defaults_and_explicit() -> None:
    """imap@TRUENAME and pop@TRUENAME by default; the rc file's ``principal`` as given; no
    target where the rc file asks for another mechanism."""
    config = parse(RC + "poll x.example.org proto pop3 auth cram-md5 user z\n", "rc", ENV)
    found = [
        (s.pollname, gssapi_target(s, "POP3" if s.protocol == "POP3" else "IMAP", "true.name"))
        for s in config.servers
    ]
    assert found == [
        ("mail.example.org", "imap@true.name"),
        ("pop.example.org", "pop/pop.example.org@EX.ORG"),
        ("plain.example.org", "imap@true.name"),  # auth any: tried when offered with a ticket
        ("x.example.org", ""),
    ]


def test_dash_v_names_kerberos_accounts_and_their_principal() -> None:
    """-V says which accounts use Kerberos, with which principal, and that no password is sent."""
    text = describe(parse(RC, "rc", ENV))
    kerberos_lines = [line for line in text.splitlines() if "Kerberos" in line]
    assert kerberos_lines == [
        "  Kerberos (SASL GSSAPI) with service principal imap@mail.example.org.",
        "  Password: none: Kerberos sends no password (the ticket in the credential cache logs in)",
        "  Kerberos (SASL GSSAPI) with service principal pop/pop.example.org@EX.ORG.",
        "  Password: none: Kerberos sends no password (the ticket in the credential cache logs in)",
    ]


@pytest.mark.parametrize(
    ("minor", "says"),
    [
        (0x96C73A00 + 141, "no ticket in the credential cache; run kinit"),
        (0x96C73A00 + 32, "the ticket has expired; run kinit again"),
        (0x96C73A00 + 7, "the KDC does not know the service principal 'imap@h'"),
        (0x96C73A00 + 37, "clock skew too great"),
        (22, "GSS-API failure for 'imap@h'"),
    ],
)
def test_gss_errors_become_messages(minor: int, says: str) -> None:
    """Each MIT krb5 minor code the user can act on has its own sentence; others are shown."""
    error = kerberos.gss_error(gssapi_exceptions.GSSError(851968, minor), "imap@h")
    assert says in str(error)
    assert error.exit_code == 3
