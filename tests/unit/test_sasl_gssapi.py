"""The RFC 4752 SASL GSSAPI exchange (fetchd.auth.sasl.GSSAPI) over a scripted security context:
token steps, then the security-layer message, without a network or a KDC."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from fetchd.auth.sasl import GSSAPI
from fetchd.errors import AuthError


@dataclass
class ScriptedContext:
    """Completes after ``steps`` server tokens; wrap/unwrap mark the data so a test can see
    which side of the exchange went through them."""

    steps: int = 1
    seen: list[bytes] = field(default_factory=list)
    complete: bool = False

    def step(self, token: bytes) -> bytes | None:
        self.seen.append(token)
        if len(self.seen) >= self.steps:
            self.complete = True
            return None
        return b"client-token-%d" % len(self.seen)

    def wrap(self, data: bytes) -> bytes:
        return b"W(" + data + b")"

    def unwrap(self, data: bytes) -> bytes:
        assert data.startswith(b"W(") and data.endswith(b")"), data
        return data[2:-1]


def test_whole_exchange_chooses_no_layer_and_sends_the_user() -> None:
    """First token, one more round, an empty answer once complete, then the wrapped choice:
    layer 1 (none), buffer size 0, the authorization id."""
    context = ScriptedContext(steps=2)
    mech = GSSAPI(context, b"first", "fmtest")
    assert mech.initial_response() == b"first"
    assert mech.respond(b"server-1") == b"client-token-1"
    assert mech.respond(b"server-2") == b""  # mutual authentication done, nothing to send
    assert context.seen == [b"server-1", b"server-2"]
    answer = mech.respond(b"W(\x07\x00\x10\x00)")  # none, integrity, privacy; 4096 octets
    assert answer == b"W(\x01\x00\x00\x00fmtest)"


def test_empty_challenge_after_completion_is_answered_empty() -> None:
    """A server with no token on its turn sends an empty challenge: answer empty, wait."""
    context = ScriptedContext(steps=1)
    mech = GSSAPI(context, b"first", "u")
    assert mech.respond(b"server") == b""
    assert mech.respond(b"") == b""
    assert mech.respond(b"W(\x01\xff\xff\xff)") == b"W(\x01\x00\x00\x00u)"


def test_server_that_demands_a_security_layer_is_refused() -> None:
    """Only integrity or privacy offered: fetchd cannot take part, and says why."""
    mech = GSSAPI(ScriptedContext(steps=1), b"t", "u")
    mech.respond(b"server")
    with pytest.raises(AuthError, match="requires a security layer"):
        mech.respond(b"W(\x06\x00\x10\x00)")


@pytest.mark.parametrize("offer", [b"", b"\x01", b"\x01\x00\x00", b"\x01\x00\x00\x00\x00"])
def test_malformed_layer_message_is_an_auth_error(offer: bytes) -> None:
    """The layer message is exactly four octets; any other length is refused."""
    mech = GSSAPI(ScriptedContext(steps=1), b"t", "u")
    mech.respond(b"server")
    with pytest.raises(AuthError, match="octets, not 4"):
        mech.respond(b"W(" + offer + b")")


def test_challenge_after_the_layer_was_chosen_is_refused() -> None:
    """The exchange ends with the client's layer choice; a further challenge is an error."""
    mech = GSSAPI(ScriptedContext(steps=1), b"t", "u")
    mech.respond(b"server")
    mech.respond(b"W(\x01\x00\x00\x00)")
    with pytest.raises(AuthError, match="after the layer was chosen"):
        mech.respond(b"W(\x01\x00\x00\x00)")


def test_repr_hides_the_tokens() -> None:
    """Tokens are credentials: the mechanism's repr does not show them."""
    assert "first-secret" not in repr(GSSAPI(ScriptedContext(), b"first-secret", "u"))
