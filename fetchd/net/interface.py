"""``interface`` and ``monitor`` (Linux), as fetchmail's interface.c does them.

``interface NAME/ADDRESS[/MASK]``: poll only while the network interface NAME is running with a
local or remote (point-to-point) IPv4 address inside ADDRESS/MASK: a VPN or dial-up link that
must be up first. ``monitor NAME``: in daemon mode, skip a poll when NAME carried no traffic but
our own since the last poll, so that polling alone never keeps an on-demand link up.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from fetchd.errors import ConfigError

_SIOCGIFFLAGS, _SIOCGIFADDR, _SIOCGIFDSTADDR = 0x8913, 0x8915, 0x8917
_IFF_RUNNING = 0x40
MONITOR_SLOP = 5  # packets a link shutdown itself may account for (fetchmail's figure)
_NET_DEV = Path("/proc/net/dev")


@dataclass(frozen=True, slots=True)
class InterfaceRule:
    """A parsed ``interface`` value."""

    name: str
    network: int  # the address, masked
    mask: int

    def admits(self, address: int) -> bool:
        return address & self.mask == self.network


@dataclass(frozen=True, slots=True)
class InterfaceState:
    address: int  # the local IPv4 address
    remote: int  # the point-to-point peer's, or 0
    packets: int  # received and sent, as /proc/net/dev counts them


def parse_interface(spec: str) -> InterfaceRule:
    """``NAME/ADDRESS[/MASK]``; the mask defaults to 255.255.255.255, as in fetchmail."""
    name, slash, rest = spec.partition("/")
    if not slash:
        raise ConfigError(f"interface {spec!r}: missing IP interface address")
    address, _, mask = rest.partition("/")
    try:
        net = int(ipaddress.IPv4Address(address))
    except ValueError:
        raise ConfigError(f"interface {spec!r}: invalid IP interface address") from None
    try:
        bits = int(ipaddress.IPv4Address(mask or "255.255.255.255"))
    except ValueError:
        raise ConfigError(f"interface {spec!r}: invalid IP interface mask") from None
    return InterfaceRule(name, net & bits, bits)


def packet_counts(net_dev: str, name: str) -> int | None:
    """Received plus sent packets of ``name`` in a /proc/net/dev text; None if it is absent."""
    for line in net_dev.splitlines()[2:]:
        interface, colon, counters = line.partition(":")
        if colon and interface.strip() == name:
            fields = counters.split()
            return int(fields[1]) + int(fields[9])
    return None


def interface_state(name: str) -> InterfaceState | None:
    """The interface's addresses and traffic; None when it is absent, down or has no IPv4
    address (fetchmail's "down")."""
    try:
        packets = packet_counts(_NET_DEV.read_text(), name)
    except OSError:
        return None
    if packets is None:
        return None
    request = struct.pack("16s24x", name.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            flags = struct.unpack_from("H", fcntl.ioctl(probe, _SIOCGIFFLAGS, request), 16)[0]
            if not flags & _IFF_RUNNING:
                return None
            address = _address(fcntl.ioctl(probe, _SIOCGIFADDR, request))
        except OSError:
            return None
        try:
            remote = _address(fcntl.ioctl(probe, _SIOCGIFDSTADDR, request))
        except OSError:
            remote = 0
    return InterfaceState(address, remote, packets)


def _address(ifreq: bytes) -> int:
    """The IPv4 address in an ifreq's sockaddr_in."""
    return int.from_bytes(ifreq[20:24], "big")


# The monitored link's packet count after our last poll through it, by interface name.
_after_last_poll: dict[str, int] = {}


def skip_reason(pollname: str, interface: str | None, monitor: str | None) -> str | None:
    """Why this poll must not happen now, in fetchmail's words; None to poll."""
    if interface:
        rule = parse_interface(interface)
        state = interface_state(rule.name)
        if state is None:
            return f"skipping poll of {pollname}, {interface} down"
        if not (state.remote and rule.admits(state.remote)) and not rule.admits(state.address):
            return f"skipping poll of {pollname}, {interface} IP address excluded"
    if monitor and monitor in _after_last_poll:
        state = interface_state(monitor)
        if state is not None and 0 <= state.packets - _after_last_poll[monitor] <= MONITOR_SLOP:
            return f"skipping poll of {pollname}, {monitor} inactive"
    return None


def note_activity(monitor: str | None) -> None:
    """After a poll: the monitored link's count now includes our own traffic."""
    if monitor:
        state = interface_state(monitor)
        if state is not None:
            _after_last_poll[monitor] = state.packets
