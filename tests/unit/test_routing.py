"""Between poll and deliverer: the multidrop duplicate check never drops a message that was
not delivered, and fetchmail's bad-header check keeps what it refuses."""

from __future__ import annotations

import pytest

from fetchd.delivery.headers import bad_header_line
from fetchd.delivery.multidrop import MultidropRules
from fetchd.delivery.result import Outcome
from fetchd.delivery.routing import RoutingDeliverer

MESSAGE = b"To: joe@pop.example.org\r\nSubject: once\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n"


class FlakyMTA:
    """Refuses for now (4xx) as long as ``refusing`` is set."""

    def __init__(self) -> None:
        self.refusing = True
        self.delivered: list[tuple[str, ...] | None] = []

    async def deliver(self, message: bytes, *, ready=None, recipients=None):  # type: ignore[no-untyped-def]
        if self.refusing:
            return Outcome(False, False, "451 later; kept", 451)
        self.delivered.append(recipients)
        return Outcome(True, True, "delivered", 250)


def routed(mta: FlakyMTA, account: str) -> RoutingDeliverer:
    rules = MultidropRules(("pop.example.org",), localnames=("joe", "ann"), envelope=None)
    return RoutingDeliverer(
        mta, account=account, rules=rules, dropstatus=False, dropdelivered=False
    )


async def test_a_copy_kept_after_a_failure_is_delivered_when_fetched_again() -> None:
    mta = FlakyMTA()
    first = await routed(mta, "demo@kept").deliver(MESSAGE)
    assert not first.may_delete  # kept on the server: the next poll fetches it again
    mta.refusing = False
    again = await routed(mta, "demo@kept").deliver(MESSAGE)  # the next poll
    assert again.delivered and mta.delivered == [("joe",)]


async def test_the_same_message_twice_in_a_row_is_delivered_once() -> None:
    mta = FlakyMTA()
    mta.refusing = False
    target = routed(mta, "demo@twice")
    assert (await target.deliver(MESSAGE)).delivered
    duplicate = await target.deliver(MESSAGE)
    assert not duplicate.delivered and duplicate.may_delete
    assert mta.delivered == [("joe",)]


@pytest.mark.parametrize(
    ("message", "line"),
    [
        (MESSAGE, None),
        (b"Subject: folded\r\n  no colon here\r\n\tnor here\r\n\r\nbody\r\n", None),
        (b"From alice Sat Jan  3 01:05:34 1996\r\nSubject: x\r\n\r\nb\r\n", None),
        (b"Subject: x\r\nthis line is broken\r\nTo: y\r\n\r\nbody\r\n", 2),
        (b"Subject: x\r\n\r\nthe body may say anything\r\n", None),
        (b"From alice\r\nSubject: x\r\n\r\nb\r\n", 1),
        (b"Subject: no blank line, no body\r\nso this is a header line\r\n", 2),
    ],
)
def test_bad_header_line(message: bytes, line: int | None) -> None:
    """A header line that starts a field must have a colon; continuations need none."""
    assert bad_header_line(message) == line


BROKEN = b"Subject: x\r\nthis line is broken\r\n\r\nbody\r\n"


async def test_a_bad_header_is_kept_on_the_server_unless_accepted() -> None:
    mta = FlakyMTA()
    mta.refusing = False
    strict = RoutingDeliverer(mta, account="a", rules=None, dropstatus=False, dropdelivered=False)
    refused = await strict.deliver(BROKEN)
    assert (refused.delivered, refused.may_delete, refused.code) == (False, False, 550)
    assert "header line 2" in refused.reason and mta.delivered == []
    accepting = RoutingDeliverer(
        mta, account="a", rules=None, dropstatus=False, dropdelivered=False, accept_bad_header=True
    )
    assert (await accepting.deliver(BROKEN)).delivered and mta.delivered == [None]


def _verp(who: str) -> bytes:
    return (
        f"Return-Path: <list-bounces+{who}=pop.example.org@lists.example.net>\r\n"
        "To: joe@pop.example.org, ann@pop.example.org\r\nSubject: list\r\n\r\nbody\r\n"
    ).encode()


async def test_copies_that_differ_only_in_return_path_are_delivered_once() -> None:
    """VERP: fetchmail compares the header without its first Return-Path."""
    mta = FlakyMTA()
    mta.refusing = False
    target = routed(mta, "demo@verp")
    outcomes = [await target.deliver(_verp(who)) for who in ("joe", "ann")]
    assert outcomes[0].delivered and not outcomes[1].delivered and outcomes[1].may_delete
    assert mta.delivered == [("joe", "ann")]


async def test_an_mda_sees_the_return_path_so_verp_copies_all_go() -> None:
    """With an MDA fetchmail keeps Return-Path in the header it compares."""
    mta = FlakyMTA()
    mta.refusing = False
    rules = MultidropRules(("pop.example.org",), localnames=("joe", "ann"), envelope=None)
    target = RoutingDeliverer(
        mta, account="demo@verp-mda", rules=rules, dropstatus=False, dropdelivered=False, mda=True
    )
    for who in ("joe", "ann"):
        assert (await target.deliver(_verp(who))).delivered
    assert mta.delivered == [("joe", "ann"), ("joe", "ann")]


@pytest.mark.parametrize(
    ("rewrite_host", "to", "expected"),
    [
        ("pop.example.org", "joe, ann", ("joe", "ann")),
        ("pop.example.org", "ann, joe@elsewhere.net", ("ann",)),
        (None, "joe, ann", ("postmaster",)),  # no rewrite: bare names are nobody's
        ("other.example.org", "joe", ("postmaster",)),  # qualified, but not to the server
    ],
)
async def test_bare_addresses_are_qualified_before_recipients_are_chosen(
    rewrite_host: str | None, to: str, expected: tuple[str, ...]
) -> None:
    mta = FlakyMTA()
    mta.refusing = False
    rules = MultidropRules(("pop.example.org",), localnames=("joe", "ann"))
    target = RoutingDeliverer(
        mta,
        account=f"demo@bare-{rewrite_host}-{to}",
        rules=rules,
        dropstatus=False,
        dropdelivered=False,
        rewrite_host=rewrite_host,
    )
    assert (await target.deliver(f"From: cron\r\nTo: {to}\r\n\r\nx\r\n".encode())).delivered
    assert mta.delivered == [expected]
