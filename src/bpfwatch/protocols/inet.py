"""Socket addresses as the kernel records them (struct bw_tuple)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

FAMILIES = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}
PROTOCOLS = {6: "tcp", 17: "udp"}


def addr_text(family: int, raw: list[int] | bytes) -> str:
    """An address as text; IPv4-mapped IPv6 (dual-stack sockets) as IPv4."""
    b = bytes(raw)
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(b[:4]))
    a = ipaddress.IPv6Address(b[:16])
    return str(a.ipv4_mapped) if a.ipv4_mapped else str(a)


def port(be16: int) -> int:
    """A port stored in network byte order, read as a little-endian u16."""
    return socket.ntohs(be16)


def tuple_fields(r: dict[str, Any]) -> dict[str, Any]:
    """The address fields of an event from the flattened bw_tuple columns."""
    fam = r["family"]
    return {
        "protocol": PROTOCOLS.get(r["proto"], str(r["proto"])),
        "family": FAMILIES.get(fam, str(fam)),
        "local_addr": addr_text(fam, r["laddr"]), "local_port": port(r["lport"]),
        "remote_addr": addr_text(fam, r["raddr"]), "remote_port": port(r["rport"]),
    }
