"""Socket addresses as the kernel records them (struct bw_tuple)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

FAMILIES = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}
PROTOCOLS = {6: "tcp", 17: "udp"}


_TEXT: dict[tuple[int, bytes], str] = {}  # addresses repeat: format each once
_TEXT_MAX = 4096


def addr_text(family: int, raw: list[int] | bytes) -> str:
    """An address as text; IPv4-mapped IPv6 (dual-stack sockets) as IPv4."""
    b = bytes(raw[:4] if family == socket.AF_INET else raw[:16])
    key = (family, b)
    s = _TEXT.get(key)
    if s is None:
        if family == socket.AF_INET:
            s = str(ipaddress.IPv4Address(b))
        else:
            a = ipaddress.IPv6Address(b)
            s = str(a.ipv4_mapped) if a.ipv4_mapped else str(a)
        if len(_TEXT) >= _TEXT_MAX:
            _TEXT.clear()
        _TEXT[key] = s
    return s


def port(be16: int) -> int:
    """A port stored in network byte order, read as a little-endian u16."""
    return socket.ntohs(be16)


def tuple_fields(r: Any) -> dict[str, Any]:
    """The address fields of an event from the flattened bw_tuple columns of
    a record (a dict, or a named tuple from Sensor.rows)."""
    if isinstance(r, dict):
        fam, proto, laddr, lport, raddr, rport = (r["family"], r["proto"], r["laddr"], r["lport"], r["raddr"],
                                                  r["rport"])
    else:
        fam, proto, laddr, lport, raddr, rport = r.family, r.proto, r.laddr, r.lport, r.raddr, r.rport
    return {
        "protocol": PROTOCOLS.get(proto, str(proto)),
        "family": FAMILIES.get(fam, str(fam)),
        "local_addr": addr_text(fam, laddr), "local_port": port(lport),
        "remote_addr": addr_text(fam, raddr), "remote_port": port(rport),
    }
