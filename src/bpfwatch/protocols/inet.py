"""Socket addresses as the kernel records them (struct bw_tuple)."""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache
from typing import Any

FAMILIES = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}
PROTOCOLS = {6: "tcp", 17: "udp"}


@lru_cache(maxsize=4096)  # addresses repeat: each is formatted once
def _addr_text(family: int, b: bytes) -> str:
    """An address as text; IPv4-mapped IPv6 (dual-stack sockets) as IPv4."""
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(b))
    a = ipaddress.IPv6Address(b)
    return str(a.ipv4_mapped) if a.ipv4_mapped else str(a)


def put_addresses(ev: dict[str, Any], fam: int, proto: int, laddr: bytes, lport: int, raddr: bytes,
                  rport: int) -> None:
    """Sets an event's address fields from a bw_tuple's raw columns: addresses
    as bytes, ports stored in network byte order and read as little-endian
    u16s. On the TCP decoder's path: no conversions here."""
    ev["protocol"] = PROTOCOLS.get(proto) or str(proto)
    ev["family"] = FAMILIES.get(fam) or str(fam)
    n = 4 if fam == socket.AF_INET else 16
    ev["local_addr"] = _addr_text(fam, laddr[:n])
    ev["local_port"] = socket.ntohs(lport)
    ev["remote_addr"] = _addr_text(fam, raddr[:n])
    ev["remote_port"] = socket.ntohs(rport)


def tuple_fields(r: Any) -> dict[str, Any]:
    """The address fields of an event from the flattened bw_tuple columns of
    a record (a dict, or a named tuple from Sensor.rows)."""
    if isinstance(r, dict):
        fam, proto, laddr, lport, raddr, rport = (r["family"], r["proto"], r["laddr"], r["lport"], r["raddr"],
                                                  r["rport"])
    else:
        fam, proto, laddr, lport, raddr, rport = r.family, r.proto, r.laddr, r.lport, r.raddr, r.rport
    out: dict[str, Any] = {}
    # record dicts may carry addresses as lists of ints; the cache wants bytes
    put_addresses(out, fam, proto, bytes(laddr), lport, bytes(raddr), rport)
    return out
