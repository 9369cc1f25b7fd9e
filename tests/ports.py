"""Ports for servers a test must tell their port before they bind it."""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10_000


def _ephemeral_low() -> int:
    """The lowest port the system hands out to a bind to port 0 (Linux's default
    elsewhere)."""
    try:
        low, _ = (int(part) for part in EPHEMERAL.read_text().split())
    except (OSError, ValueError):
        return 32_768
    return low


def unassigned_port() -> int:
    """A port free now that the system never hands out by itself (below its ephemeral
    range): no other process binding port 0 can take it before the server binds it, as it
    could a port freed from the ephemeral range."""
    low = _ephemeral_low()
    ports = list(range(LOWEST, max(LOWEST + 1, low)))
    random.shuffle(ports)
    for port in ports:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {LOWEST}-{low - 1}")
