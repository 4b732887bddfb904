"""The IMAP literal cap under an address-space limit (fetchd.limits)."""

from __future__ import annotations

import resource

import pytest

from fetchd.limits import FLOOR, literal_cap


@pytest.mark.parametrize(
    ("soft", "expected"),
    [
        (resource.RLIM_INFINITY, 1 << 30),
        (512 << 20, 128 << 20),
        (16 << 30, 1 << 30),
        (1 << 20, FLOOR),
    ],
    ids=["unlimited", "512MiB", "16GiB", "tiny"],
)
def test_the_cap_is_a_quarter_of_the_address_space_within_the_protocol_cap(
    monkeypatch: pytest.MonkeyPatch, soft: int, expected: int
) -> None:
    """No limit: the protocol's cap; a limit: a quarter of it, never above the protocol's cap
    nor below the floor."""
    monkeypatch.setattr(resource, "getrlimit", lambda _: (soft, resource.RLIM_INFINITY))
    assert literal_cap(1 << 30) == expected
