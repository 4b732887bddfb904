"""The streaming state machines give the same result at every split of their input."""

from __future__ import annotations

import pytest

from fetchd.delivery.headers import DotStuffer, dot_stuff, normalize_line_endings
from fetchd.message import LineEndings
from fetchd.pop3.protocol import BodyDecoder

BODIES = [
    b"Subject: a\r\n\r\nline\r\n..dot\r\n...two\r\n.\r\n+OK next",
    b".\r\n+OK empty",
    b"..only\r\n.\r\n",
    b"a\r\n.\r\n",
    b"lf\n..x\n.\n+OK",
    b"x\r\n.\rx\r\n.\r\n",
]


def _decode_split(wire: bytes, cut: int) -> tuple[bytes, bytes]:
    decoder = BodyDecoder()
    out = b""
    rest = b""
    for piece in (wire[:cut], wire[cut:]):
        if decoder.done:
            rest += piece
            continue
        data, used = decoder.feed(piece)
        out += data
        rest += piece[used:]
    assert decoder.done
    return out, rest


@pytest.mark.parametrize("wire", BODIES)
def test_body_decoder_every_split(wire: bytes) -> None:
    """Dot-unstuffing and the terminating dot are found wherever the chunk boundary falls."""
    expected = _decode_split(wire, len(wire))
    for cut in range(len(wire) + 1):
        assert _decode_split(wire, cut) == expected, cut


def test_body_decoder_results() -> None:
    """Stuffed dots lose one dot, the message ends at the lone dot, the rest is left over."""
    assert _decode_split(BODIES[0], len(BODIES[0])) == (
        b"Subject: a\r\n\r\nline\r\n.dot\r\n..two\r\n",
        b"+OK next",
    )
    assert _decode_split(BODIES[1], 0) == (b"", b"+OK empty")
    assert _decode_split(BODIES[4], 3) == (b"lf\n.x\n", b"+OK")


def test_body_decoder_byte_by_byte() -> None:
    """Fed one octet at a time (every boundary at once), the result is the same."""
    wire = BODIES[0]
    decoder = BodyDecoder()
    out = b""
    position = 0
    while not decoder.done:
        data, used = decoder.feed(wire[position : position + 1])
        out += data
        position += used
    assert out == b"Subject: a\r\n\r\nline\r\n.dot\r\n..two\r\n"
    assert wire[position:] == b"+OK next"


TEXTS = [b"a\rb\nc\r\nd", b"\r\r\n\n\r", b"x\r\n", b"no end", b"\r", b"a\r\n\r\n.\r\n.x\n.", b""]


@pytest.mark.parametrize("text", TEXTS)
def test_line_endings_every_split(text: bytes) -> None:
    """CRLF normalization in two chunks equals the one-piece normalization, at every split."""
    expected = normalize_line_endings(text)
    for cut in range(len(text) + 1):
        endings = LineEndings()
        out = endings.feed(text[:cut]) + endings.feed(text[cut:]) + endings.end()
        assert out == expected, cut


@pytest.mark.parametrize("text", TEXTS)
def test_normalize_then_stuff_every_split(text: bytes) -> None:
    """Normalized and dot-stuffed in chunks: the same as the whole message at once."""
    expected = dot_stuff(normalize_line_endings(text))
    for cut in range(len(text) + 1):
        for second in range(cut, len(text) + 1):
            endings, stuffer = LineEndings(), DotStuffer()
            pieces = [text[:cut], text[cut:second], text[second:]]
            out = b"".join(stuffer.feed(endings.feed(p)) for p in pieces)
            out += stuffer.feed(endings.end())
            assert out == expected, (cut, second)
