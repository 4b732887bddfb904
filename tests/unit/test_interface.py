"""interface and monitor: the rules (pure) and this machine's loopback interface."""

from __future__ import annotations

import socket

import pytest

from fetchd.errors import ConfigError
from fetchd.net import interface
from fetchd.net.interface import (
    interface_state,
    note_activity,
    packet_counts,
    parse_interface,
    skip_reason,
)

NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 5443 117 0 0 0 0 0 0 5443 118 0 0 0 0 0 0
  ppp0:  1953 71 0 0 0 0 0 0 723 58 0 0 0 0 0 0
"""  # noqa: E501


def test_parse_interface_as_fetchmail() -> None:
    rule = parse_interface("ppp0/10.1.2.3/255.255.0.0")
    assert rule.name == "ppp0" and rule.admits(0x0A01FFFE) and not rule.admits(0x0A020000)
    exact = parse_interface("tun0/192.0.2.7")  # no mask: that one address
    assert exact.admits(0xC0000207) and not exact.admits(0xC0000208)
    for spec, error in [
        ("eth0", "missing IP interface address"),
        ("eth0/10.0.0.300", "invalid IP interface address"),
        ("eth0/10.0.0.1/255.255.0.x", "invalid IP interface mask"),
    ]:
        with pytest.raises(ConfigError, match=error):
            parse_interface(spec)


def test_packet_counts_are_received_plus_sent() -> None:
    assert packet_counts(NET_DEV, "ppp0") == 71 + 58
    assert packet_counts(NET_DEV, "lo") == 117 + 118
    assert packet_counts(NET_DEV, "eth9") is None


def test_loopback_is_up_with_its_address() -> None:
    state = interface_state("lo")
    assert state is not None and state.address == 0x7F000001 and state.packets > 0
    assert interface_state("nosuch0") is None


def test_interface_rule_on_the_loopback_interface() -> None:
    assert skip_reason("pop.example", "lo/127.0.0.0/255.0.0.0", None) is None
    assert skip_reason("pop.example", "lo/10.0.0.1", None) == (
        "skipping poll of pop.example, lo/10.0.0.1 IP address excluded"
    )
    assert skip_reason("pop.example", "nosuch0/10.0.0.1", None) == (
        "skipping poll of pop.example, nosuch0/10.0.0.1 down"
    )


def test_monitor_skips_when_only_our_own_traffic_crossed_the_link(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counts = iter([1000, 1003, 1003, 1050])

    def fake_state(name: str) -> interface.InterfaceState:
        return interface.InterfaceState(0x7F000001, 0, next(counts))

    monkeypatch.setattr(interface, "interface_state", fake_state)
    monkeypatch.setattr(interface, "_after_last_poll", {})
    assert skip_reason("p", None, "ppp0") is None  # nothing noted yet: poll
    note_activity("ppp0")  # 1000 after our poll
    assert skip_reason("p", None, "ppp0") == "skipping poll of p, ppp0 inactive"  # 3 more
    note_activity("ppp0")  # 1003
    assert skip_reason("p", None, "ppp0") is None  # 47 more: someone used the link


def test_monitor_sees_real_traffic_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interface, "_after_last_poll", {})
    note_activity("lo")
    with socket.create_server(("127.0.0.1", 0)) as server:
        for _ in range(5):  # a few connections: well over MONITOR_SLOP packets
            with socket.create_connection(server.getsockname()):
                server.accept()[0].close()
    assert skip_reason("p", None, "lo") is None
