"""The sd_notify client: addresses, message format, watchdog interval, silence outside systemd."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from pathlib import Path

from fetchd.daemon.sdnotify import MAX_STATUS_LENGTH, Notifier


def _receiver(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    return sock


def test_outside_systemd_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    notifier.ready("ok")  # no socket, no error
    assert not Notifier({"NOTIFY_SOCKET": "relative/path"}).enabled


def test_status_lines_are_one_line_and_capped(tmp_path: Path) -> None:
    with _receiver(tmp_path / "n.sock") as sock:
        notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "n.sock")})
        notifier.ready("line one\nSTOPPING=1 " + "x" * 500)
        fields = dict(line.split("=", 1) for line in sock.recv(4096).decode().split("\n"))
    assert fields["READY"] == "1" and fields["MAINPID"] == str(os.getpid())
    assert "\n" not in fields["STATUS"] and len(fields["STATUS"]) == MAX_STATUS_LENGTH
    assert "STOPPING" not in fields  # a status text cannot smuggle in another field


def test_abstract_socket_address() -> None:
    name = f"fetchd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        Notifier({"NOTIFY_SOCKET": "@" + name}).stopping()
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping"


def test_reloading_carries_the_monotonic_time(tmp_path: Path) -> None:
    with _receiver(tmp_path / "n.sock") as sock:
        Notifier({"NOTIFY_SOCKET": str(tmp_path / "n.sock")}).reloading()
        message = sock.recv(4096).decode()
    assert message.startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert int(message.rsplit("=", 1)[1]) > 0


def test_a_vanished_socket_is_not_fatal(tmp_path: Path) -> None:
    Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}).status("still running")


async def test_watchdog_pings_at_half_the_interval(tmp_path: Path) -> None:
    """With WATCHDOG_USEC=1 s, a ping comes every half second: never sooner, and never as late
    as the interval itself, when systemd would kill the service."""
    env = {"NOTIFY_SOCKET": str(tmp_path / "n.sock"), "WATCHDOG_USEC": "1000000"}
    loop = asyncio.get_running_loop()
    with _receiver(tmp_path / "n.sock") as sock:
        sock.setblocking(False)
        feeder = asyncio.create_task(Notifier(env).keep_watchdog_fed())
        pings: list[tuple[float, bytes]] = []
        try:
            while len(pings) < 4:
                data = await asyncio.wait_for(loop.sock_recv(sock, 100), 10)
                pings.append((loop.time(), data))
        finally:
            feeder.cancel()
    assert {data for _, data in pings} == {b"WATCHDOG=1"}
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(pings)]
    assert all(0.45 <= gap < 1.0 for gap in gaps), gaps


async def test_no_watchdog_for_another_pid_or_without_interval(tmp_path: Path) -> None:
    base = {"NOTIFY_SOCKET": str(tmp_path / "n.sock")}
    for extra in ({}, {"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"}):
        # Returns at once instead of looping forever.
        await asyncio.wait_for(Notifier(base | extra).keep_watchdog_fed(), 1)
