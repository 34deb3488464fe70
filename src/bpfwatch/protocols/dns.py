"""DNS message parsing (RFC 1035 wire format, with name compression).

Input comes from other processes' buffers: every read is bounds-checked,
compression pointers may only point backwards and are followed a bounded
number of times, and any violation raises DnsError (never another exception).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

TYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
         33: "SRV", 35: "NAPTR", 41: "OPT", 43: "DS", 46: "RRSIG", 48: "DNSKEY", 64: "SVCB",
         65: "HTTPS", 255: "ANY", 257: "CAA"}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
          6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE"}
MAX_POINTERS = 64
MAX_RECORDS = 512


class DnsError(ValueError):
    pass


@dataclass(slots=True)
class Record:
    name: str
    type: str
    ttl: int
    data: str | None

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "type": self.type, "ttl": self.ttl, "data": self.data}


@dataclass(slots=True)
class Message:
    id: int
    response: bool
    opcode: int
    rcode: str
    authoritative: bool
    truncated: bool
    questions: list[tuple[str, str]] = field(default_factory=list)
    answers: list[Record] = field(default_factory=list)


def type_name(t: int) -> str:
    return TYPES.get(t, f"TYPE{t}")


def _u16(buf: bytes, off: int) -> int:
    if off + 2 > len(buf):
        raise DnsError("truncated")
    return struct.unpack_from("!H", buf, off)[0]


def _name(buf: bytes, off: int) -> tuple[str, int]:
    """(name, offset after it in the original position)."""
    labels: list[str] = []
    end = -1
    jumps = 0
    total = 0
    while True:
        if off >= len(buf):
            raise DnsError("name runs past the end")
        n = buf[off]
        if n == 0:
            off += 1
            break
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(buf):
                raise DnsError("truncated pointer")
            target = ((n & 0x3F) << 8) | buf[off + 1]
            if end < 0:
                end = off + 2
            if target >= off or jumps >= MAX_POINTERS:
                raise DnsError("bad compression pointer")
            jumps += 1
            off = target
            continue
        if n & 0xC0:
            raise DnsError("reserved label type")
        if off + 1 + n > len(buf):
            raise DnsError("label runs past the end")
        labels.append(buf[off + 1: off + 1 + n].decode("ascii", "backslashreplace"))
        total += n + 1
        if total > 255:
            raise DnsError("name longer than 255 bytes")
        off += 1 + n
    return ".".join(labels) or ".", end if end >= 0 else off


def _rdata(buf: bytes, off: int, rtype: int, rdlen: int) -> str | None:
    rd = buf[off: off + rdlen]
    if rtype == 1 and rdlen == 4:
        return str(ipaddress.IPv4Address(rd))
    if rtype == 28 and rdlen == 16:
        return str(ipaddress.IPv6Address(rd))
    if rtype in (2, 5, 12):
        return _name(buf, off)[0]
    if rtype == 15 and rdlen >= 3:
        return f"{_u16(buf, off)} {_name(buf, off + 2)[0]}"
    if rtype == 33 and rdlen >= 7:
        prio, weight, port = struct.unpack_from("!HHH", buf, off)
        return f"{prio} {weight} {port} {_name(buf, off + 6)[0]}"
    if rtype == 16:
        parts, i = [], 0
        while i < len(rd):
            n = rd[i]
            parts.append(rd[i + 1: i + 1 + n].decode("utf-8", "backslashreplace"))
            i += 1 + n
        return " ".join(parts)
    return rd.hex() if rd else None


def parse(buf: bytes) -> Message:
    if len(buf) < 12:
        raise DnsError("shorter than a DNS header")
    ident, flags, qd, an, _ns, _ar = struct.unpack_from("!HHHHHH", buf, 0)
    if qd + an > MAX_RECORDS:
        raise DnsError("implausible record counts")
    msg = Message(id=ident, response=bool(flags & 0x8000), opcode=(flags >> 11) & 0xF,
                  rcode=RCODES.get(flags & 0xF, f"RCODE{flags & 0xF}"), authoritative=bool(flags & 0x400),
                  truncated=bool(flags & 0x200))
    off = 12
    for _ in range(qd):
        name, off = _name(buf, off)
        qtype = _u16(buf, off)
        _u16(buf, off + 2)
        off += 4
        msg.questions.append((name, type_name(qtype)))
    for _ in range(an):
        name, off = _name(buf, off)
        if off + 10 > len(buf):
            raise DnsError("truncated record")
        rtype, _cls, ttl, rdlen = struct.unpack_from("!HHIH", buf, off)
        off += 10
        if off + rdlen > len(buf):
            raise DnsError("record data runs past the end")
        msg.answers.append(Record(name, type_name(rtype), ttl, _rdata(buf, off, rtype, rdlen)))
        off += rdlen
    return msg
