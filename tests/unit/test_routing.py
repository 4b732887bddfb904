"""The multidrop duplicate check never drops a message that was not delivered."""

from __future__ import annotations

from fetchd.delivery.result import Outcome
from fetchd.delivery.routing import RoutingDeliverer
from fetchd.multidrop import MultidropRules

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
