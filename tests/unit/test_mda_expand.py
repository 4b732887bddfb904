"""MDA command expansion: fetchmail's %T %F %s %%, and nothing from a message reaching the shell."""

from __future__ import annotations

import subprocess
from pathlib import Path

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
        "$(touch {canary})@x",
        "`touch {canary}`@x",
        "a'; touch {canary}; echo '@x",
        "a\nb@x",
        'a"b@x',
        "a b@x",
        "<>",
        "a|b&c;d>e<f*g?h[i]{{j}}~k!l#m\\@x",
    ],
)
def test_the_shell_reads_a_word_back_as_the_value(hostile: str, tmp_path: Path) -> None:
    """/bin/sh gives the MDA the value itself (a single quote made "_", as fetchmail does) as
    one argument, and runs nothing that the value spells."""
    canary = tmp_path / "pwned"
    value = hostile.format(canary=canary)
    shown = subprocess.run(
        ["/bin/sh", "-c", "printf '%s|' " + shell_word(value)], capture_output=True, check=True
    )
    assert shown.stdout.decode() == value.replace("'", "_") + "|"
    assert not canary.exists()


@pytest.mark.parametrize("who", ["recipient", "sender"])
def test_an_option_looking_address_is_refused(who: str) -> None:
    recipient, sender = ("-oQ/tmp/x", "a@b") if who == "recipient" else ("joe", "-f/etc")
    with pytest.raises(DeliveryError, match="starts with '-'"):
        expand("/usr/sbin/sendmail -f %F %T", recipient, sender)
