"""MDA command expansion: fetchmail's %T %F %s %%, and nothing from a message reaching the shell."""

from __future__ import annotations

import pytest

from fetchd.delivery.mda import expand, shell_word
from fetchd.errors import DeliveryError


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("/usr/bin/procmail -d %T", "/usr/bin/procmail -d 'joe'"),
        ("/usr/sbin/sendmail -i -f %F -- %T", "/usr/sbin/sendmail -i -f 'a@b.org' -- 'joe'"),
        ("deliver %s", "deliver 'joe'"),
        ("echo 100%% %x", "echo 100% %x"),
        ("trailing %", "trailing %"),
    ],
)
def test_expansion(command: str, expected: str) -> None:
    assert expand(command, "joe", "a@b.org") == expected


@pytest.mark.parametrize(
    "hostile",
    [
        "$(touch /tmp/pwned)@x",
        "`id`@x",
        "a'; rm -rf ~; echo '@x",
        "a\nb@x",
        'a"b@x',
        "a b@x",
        "a|b&c;d>e<f*g?h[i]{j}~k!l#m@x",
    ],
)
def test_no_shell_syntax_survives(hostile: str) -> None:
    word = shell_word(hostile)
    assert word.startswith("'") and word.endswith("'")
    inner = word[1:-1]
    assert "'" not in inner
    assert all(c.isalnum() or c in "@._+=:,/%-_" for c in inner), inner


@pytest.mark.parametrize("who", ["recipient", "sender"])
def test_an_option_looking_address_is_refused(who: str) -> None:
    recipient, sender = ("-oQ/tmp/x", "a@b") if who == "recipient" else ("joe", "-f/etc")
    with pytest.raises(DeliveryError, match="starts with '-'"):
        expand("/usr/sbin/sendmail -f %F %T", recipient, sender)
