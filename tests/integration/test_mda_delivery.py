"""Delivery through a real MDA process: a shell command, and procmail into a Maildir."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from fetchd.delivery.headers import Trace
from fetchd.delivery.mda import MDADeliverer, MDASettings
from tests.support.tools import require_tool

MESSAGE = (
    b"Return-Path: <alice@example.org>\r\nFrom: alice@example.org\r\nSubject: hi\r\n\r\n"
    b"hello\r\n.dotted\r\n"
)


def mda(command: str, **extra: object) -> MDADeliverer:
    values: dict[str, object] = {
        "command": command,
        "recipients": ("joe",),
        "timeout": 5.0,
        "trace": Trace(server="pop.example.org"),
        "by": "fetchd.test",
    }
    values.update(extra)
    return MDADeliverer(MDASettings(**values))  # type: ignore[arg-type]


async def test_the_mda_gets_the_message_with_lf_endings_and_a_received_header(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    outcome = await mda(f"cat > {out}; echo to=%T from=%F > {tmp_path / 'args'}").deliver(MESSAGE)
    assert outcome.delivered and outcome.may_delete
    data = out.read_bytes()
    assert b"\r" not in data
    assert data.startswith(b"Received: from pop.example.org\n\tby fetchd.test with POP3 (fetchd-")
    assert data.endswith(MESSAGE.replace(b"\r\n", b"\n"))
    assert (tmp_path / "args").read_text() == "to=joe from=alice@example.org\n"


@pytest.mark.parametrize(
    ("command", "reason"),
    [("cat >/dev/null; exit 75", "temporary"), ("cat >/dev/null; exit 1", "exit 1")],
)
async def test_failures_keep_the_message(command: str, reason: str) -> None:
    outcome = await mda(command).deliver(MESSAGE)
    assert not outcome.delivered and not outcome.may_delete
    assert reason in outcome.reason


async def test_a_hung_mda_is_killed_with_its_children(tmp_path: Path) -> None:
    marker = tmp_path / "child-alive"
    command = f"cat >/dev/null; (sleep 3; touch {marker}) & sleep 30"
    began = time.monotonic()
    outcome = await mda(command, timeout=0.5).deliver(MESSAGE)
    assert not outcome.delivered and "did not finish" in outcome.reason
    assert time.monotonic() - began < 3
    time.sleep(3.2)
    assert not marker.exists()  # the whole process group died, the grandchild too


async def test_the_environment_is_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FETCHD_TOKEN", "s3cret-token")
    monkeypatch.setenv("HOME", str(tmp_path))
    out = tmp_path / "env"
    assert (
        await mda(f"cat >/dev/null; env > {out}; ls /proc/self/fd > {out}.fd").deliver(MESSAGE)
    ).delivered
    environment = out.read_text()
    assert "s3cret-token" not in environment and f"HOME={tmp_path}" in environment
    assert sorted(out.with_suffix(".fd").read_text().split()) <= ["0", "1", "2", "3"]


async def test_a_hostile_sender_cannot_reach_the_shell(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    hostile = f"Return-Path: <$(touch {pwned})@x>\r\nFrom: `touch {pwned}`\r\n\r\nbody\r\n"
    outcome = await mda(f"cat >/dev/null; echo %F > {tmp_path / 'f'}").deliver(hostile.encode())
    assert not pwned.exists()
    assert outcome.delivered or "sender" in outcome.reason


@pytest.mark.parametrize(
    ("command", "size"),
    [
        ("exit 0", 2_000_000),  # the pipe fills: our write fails
        ("exit 0", 100),  # the whole message fits in the pipe, unread: still not delivered
        ("head -c 50 >/dev/null; exit 0", 100),  # read in part
    ],
)
async def test_an_mda_that_does_not_read_everything_has_not_delivered(
    command: str, size: int
) -> None:
    outcome = await mda(command).deliver(MESSAGE + b"x" * size + b"\r\n")
    assert not outcome.delivered and not outcome.may_delete
    assert "before reading the whole message" in outcome.reason


async def test_procmail_delivers_into_a_maildir(tmp_path: Path) -> None:
    require_tool("procmail", "procmail")
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    rc = tmp_path / "procmailrc"
    rc.write_text(f"MAILDIR={maildir}/\nDEFAULT={maildir}/\n:0\n{maildir}/\n")
    deliverer = mda(f"procmail -m {rc}")
    for i in range(3):
        outcome = await deliverer.deliver(MESSAGE.replace(b"hi", b"hi %d" % i))
        assert outcome.delivered, outcome.reason
    delivered = sorted(p.read_bytes() for p in (maildir / "new").iterdir())
    assert len(delivered) == 3
    assert all(b"\nhello\n.dotted\n" in m for m in delivered)


async def test_a_cancelled_delivery_stops_an_mda_that_reads_nothing(
    started_shells: list[asyncio.subprocess.Process],
) -> None:
    """A daemon stopping mid-delivery: the MDA is killed, and our writer (blocked on the full
    pipe) is released, instead of both waiting for the MDA to end by itself. The killed MDA has
    been waited for when the cancellation ends: no zombie, no open transport left behind."""
    big = MESSAGE + b"x" * 2_000_000 + b"\r\n"
    delivery = asyncio.create_task(mda("sleep 30", timeout=60).deliver(big))
    await asyncio.sleep(0.5)
    delivery.cancel()
    began = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(delivery, 10)
    assert time.monotonic() - began < 5
    [process] = started_shells
    assert process.returncode == -signal.SIGKILL


async def test_a_delivery_cancelled_again_while_the_mda_is_killed_still_waits_for_it(
    started_shells: list[asyncio.subprocess.Process],
) -> None:
    """A stopping daemon cancels a poll again until it ends: the second cancellation arrives
    while the killed MDA is being waited for, and must not leave it unwaited."""
    delivery = asyncio.create_task(mda("sleep 30", timeout=60).deliver(MESSAGE))
    await asyncio.sleep(0.5)
    delivery.cancel()
    await asyncio.sleep(0)  # the delivery is now in its cleanup, waiting for the MDA to end
    delivery.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(delivery, 10)
    [process] = started_shells
    assert process.returncode == -signal.SIGKILL
