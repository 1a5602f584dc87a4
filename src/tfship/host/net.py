"""Addresses: loopback or not, this machine's or another's (whether a node can reach a registry)."""

from __future__ import annotations

import contextlib
import ipaddress
import socket


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (also written [::1], as in a host:port)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_this_machine(address: str) -> bool:
    """True when `address` (an IP or a host name) belongs to this machine: a socket can be bound to it."""
    if address in ("localhost", socket.gethostname(), socket.getfqdn()):
        return True
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    except ValueError:
        return False
    with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return True
    return False
