"""``--daemon-default N`` (what the systemd unit passes): the rc file's ``set daemon`` wins, the
command line's ``-d`` wins over both, and N is used only when neither gives an interval."""

from __future__ import annotations

import pytest

from fetchd.config import ParseEnvironment, parse
from fetchd.config.overrides import apply_overrides
from fetchd.errors import ConfigError
from fetchd.options import parse_args

ENV = ParseEnvironment(login="me", home="/home/me", rcdir="/home/me")
POLL = "poll a.example user x\n"


@pytest.mark.parametrize(
    ("rc", "argv", "interval"),
    [
        ("set daemon 600\n" + POLL, ["--daemon-default", "300"], 600),
        (POLL, ["--daemon-default", "300"], 300),
        ("set daemon 600\n" + POLL, ["--daemon-default", "300", "-d", "60"], 60),
        ("set daemon 600\n" + POLL, ["-d", "60", "--daemon-default", "300"], 60),
        (POLL, [], 0),
    ],
)
def test_the_interval_comes_from_d_then_the_rc_file_then_the_default(
    rc: str, argv: list[str], interval: int
) -> None:
    config = apply_overrides(parse(rc, "rc", ENV), parse_args(argv))
    assert config.globals.poll_interval == interval


def test_the_default_is_a_positive_number() -> None:
    with pytest.raises(ConfigError, match="--daemon-default needs a number of seconds"):
        parse_args(["--daemon-default", "0"])
