"""SASL mechanisms: the exact bytes each one sends (RFC 4616, draft-murchison LOGIN, RFC 2195,
Google's XOAUTH2, RFC 7628)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from fetchd.auth import sasl
from fetchd.errors import AuthError


def test_plain() -> None:
    mech = sasl.mechanism("plain", "joe", "pw")
    assert mech.name == "PLAIN"
    assert mech.initial_response() == b"\0joe\0pw"
    with pytest.raises(AuthError):
        mech.respond(b"unexpected")


def test_login_answers_user_then_password_then_refuses() -> None:
    mech = sasl.mechanism("login", "joe", "pw")
    assert mech.initial_response() is None
    assert [mech.respond(b"Username:"), mech.respond(b"Password:")] == [b"joe", b"pw"]
    with pytest.raises(AuthError):
        mech.respond(b"more?")


def test_cram_md5_rfc_2195_example() -> None:
    mech = sasl.mechanism("cram-md5", "tim", "tanstaaftanstaaf")
    challenge = b"<1896.697170952@postoffice.reston.mci.net>"
    assert mech.respond(challenge) == b"tim b913a602c7eda7a495b4e6e7334d3890"
    expected = hmac.new(b"tanstaaftanstaaf", challenge, hashlib.md5).hexdigest()
    assert mech.respond(challenge).endswith(expected.encode())


def test_xoauth2_and_oauthbearer_carry_the_token_from_the_password() -> None:
    xoauth2 = sasl.mechanism("xoauth2", "me@example.org", "ya29.token")
    assert xoauth2.initial_response() == b"user=me@example.org\x01auth=Bearer ya29.token\x01\x01"
    assert xoauth2.respond(b'{"status":"400"}') == b""
    bearer = sasl.mechanism("oauthbearer", "me@example.org", "ya29.token")
    assert bearer.initial_response() == b"n,a=me@example.org,\x01auth=Bearer ya29.token\x01\x01"
    assert bearer.respond(b"{}") == b"\x01"


def test_secrets_are_not_in_repr_and_unknown_mechanisms_fail() -> None:
    for name in ("plain", "login", "cram-md5", "xoauth2", "oauthbearer"):
        assert "s3cret" not in repr(sasl.mechanism(name, "joe", "s3cret"))
    with pytest.raises(AuthError, match="not supported"):
        sasl.mechanism("gssapi", "joe", "x")
