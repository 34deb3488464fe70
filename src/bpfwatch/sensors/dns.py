"""DNS sensor: dns.query, dns.response and dns.malformed.

BPF side: bpf/dns.bpf.c copies DNS messages out of send/recv syscalls, with
the process that sent or received them. Parsing (protocols/dns.py) and the
matching of responses to queries, for latency, happen here.
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from bpfwatch import libbpf as L
from bpfwatch.btf_dtype import cstr, enum_values, struct_dtype
from bpfwatch.errors import UsageError
from bpfwatch.events.model import common_fields
from bpfwatch.protocols import dns
from bpfwatch.protocols.inet import tuple_fields
from bpfwatch.ringbuf import Run
from bpfwatch.sensors.base import Request, Scope, Sensor, SensorOptions
from bpfwatch.sensors.network import SYSCALL_RODATA, syscall_rodata

DNS_TYPES = ["dns.malformed", "dns.query", "dns.response"]
SENT = 1  # BW_DNS_SENT
SERVER = 2  # BW_DNS_SERVER: this host answered (a resolver here)
STREAMS_MAX = 1024          # TCP streams being reassembled
PENDING_MAX = 4096          # queries waiting for an answer
PENDING_TTL_NS = 30 * 10**9


@dataclass(slots=True)
class DnsOptions:
    types: set[str] = field(default_factory=lambda: set(DNS_TYPES))
    port: int = 53

    def validate(self) -> None:
        if not 0 < self.port < 65536:
            raise UsageError(f"DNS port {self.port} is not a port number")


class DnsSensor(Sensor):
    name = "dns"
    object_name = "dns"

    @classmethod
    def plan(cls, req: Request) -> DnsOptions | None:
        types = req.types_of("dns")
        if not types:
            return None
        opts = DnsOptions(types=types, port=req.settings["dns_port"])
        opts.validate()
        return opts

    def __init__(self, dopts: DnsOptions | None = None, options: SensorOptions | None = None,
                 scope: Scope | None = None) -> None:
        super().__init__(options, scope)
        self.dopts = dopts or DnsOptions()
        self.dopts.validate()
        # (pid, role, peer, peer port, local port, id, name) -> ts of the query
        self._pending: OrderedDict[tuple[Any, ...], int] = OrderedDict()
        # (socket, direction) -> the TCP stream's bytes not yet a whole message
        self._streams: OrderedDict[tuple[int, int], TcpStream] = OrderedDict()

    def configure(self, obj: L.BpfObject) -> None:
        # DNS over TCP rides on the socket layer's tracepoints (Linux >= 6.2)
        tcp = L.kernel_has_tracepoint("sock_send_length") and L.kernel_has_tracepoint("sock_recv_length")
        for prog in ("bw_dns_tcp_send", "bw_dns_tcp_recv"):
            obj.program(prog).autoload = tcp
        obj.set_rodata(dns_port=socket.htons(self.dopts.port),
                       **syscall_rodata({**SYSCALL_RODATA, "nr_read": "read", "nr_write": "write",
                                         "nr_readv": "readv", "nr_writev": "writev"}))

    def layouts(self, btf: L.Btf) -> None:
        super().layouts(btf)
        self.dtype = struct_dtype(btf, "bw_dns_event")
        self.decoders = {enum_values(btf, "bw_event_type")["BW_EV_DNS"]: self._decode}

    def _decode(self, run: Run, idx: list[int] | None, out: list[dict[str, Any]]) -> None:
        for r, tail in self.variable_rows(run, idx, self.dtype):
            payload = tail[:r.captured]
            tcp = r.proto == socket.IPPROTO_TCP
            messages = self._stream(r).feed(payload, r.len) if tcp else [(payload, r.len)]
            for msg, length in messages:
                ev = self._event(r, msg, length)
                if ev is not None:
                    out.append(ev)

    def _stream(self, r: Any) -> TcpStream:
        key = (r.sk, r.direction)
        st = self._streams.get(key)
        if st is None:
            st = self._streams[key] = TcpStream()
            while len(self._streams) > STREAMS_MAX:
                self._streams.popitem(last=False)
        else:
            self._streams.move_to_end(key)
        return st

    def _event(self, r: Any, payload: bytes, length: int) -> dict[str, Any] | None:
        sent = r.direction == SENT
        server = r.role == SERVER
        addrs = tuple_fields(r)
        base = {
            "protocol": addrs["protocol"], "family": addrs["family"],
            "role": "server" if server else "client",
            "server_addr": addrs["local_addr" if server else "remote_addr"],
            "server_port": addrs["local_port" if server else "remote_port"],
            "client_addr": addrs["remote_addr" if server else "local_addr"],
            "client_port": addrs["remote_port" if server else "local_port"],
            "local_port": addrs["local_port"],
        }
        try:
            msg = dns.parse(payload)
        except dns.DnsError as e:
            if "dns.malformed" not in self.dopts.types:
                return None
            return {**self._common("dns.malformed", r), **base, "direction": "sent" if sent else "received",
                    "length": length, "captured": len(payload), "reason": str(e)}
        name, qtype = msg.questions[0] if msg.questions else (None, None)
        peer = "client" if server else "server"
        key = (r.pid, base["role"], base[f"{peer}_addr"], base[f"{peer}_port"], base["local_port"], msg.id, name)
        if not msg.response:
            self._remember(key, r.ts_boot_ns)
            if "dns.query" not in self.dopts.types:
                return None
            return {**self._common("dns.query", r), **base, "id": msg.id, "name": name, "qtype": qtype,
                    "questions": [{"name": n, "type": t} for n, t in msg.questions]}
        asked = self._pending.pop(key, None)
        if "dns.response" not in self.dopts.types:
            return None
        return {
            **self._common("dns.response", r), **base, "id": msg.id, "name": name, "qtype": qtype,
            "rcode": msg.rcode, "truncated": msg.truncated, "authoritative": msg.authoritative,
            "answers": [a.as_dict() for a in msg.answers],
            "addresses": [a.data for a in msg.answers if a.type in ("A", "AAAA")],
            "cname_chain": [a.data for a in msg.answers if a.type == "CNAME"],
            "latency_ns": r.ts_boot_ns - asked if asked is not None else None,
        }

    def _remember(self, key: tuple[Any, ...], ts: int) -> None:
        self._pending[key] = ts
        self._pending.move_to_end(key)
        while self._pending and (len(self._pending) > PENDING_MAX or
                                 ts - next(iter(self._pending.values())) > PENDING_TTL_NS):
            self._pending.popitem(last=False)

    @staticmethod
    def _common(kind: str, r: Any) -> dict[str, Any]:
        return common_fields(kind, r.ts_boot_ns, r.pid, r.tid, 0, r.uid, cstr(r.comm), None,
                             r.cgroup_id, None)


class TcpStream:
    """One direction of a DNS-over-TCP connection: 2-byte lengths, then
    messages, in pieces as the syscalls moved them. A piece captured only in
    part (longer than the kernel copies) leaves a gap; the message with the
    gap is handed on cut short (it parses as malformed), and the stream
    resynchronises at the next message boundary it can still count to."""

    __slots__ = ("buf", "skip")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.skip = 0  # bytes of a message cut short still to pass over

    def feed(self, data: bytes, total: int) -> list[tuple[bytes, int]]:
        """(message bytes, its full length) of every message this piece completes."""
        out: list[tuple[bytes, int]] = []
        gap = max(total - len(data), 0)  # the piece's uncaptured tail
        self.buf += data
        while True:
            if self.skip:
                n = min(self.skip, len(self.buf))
                del self.buf[:n]
                self.skip -= n
                if self.skip and not self.buf and gap:
                    n = min(self.skip, gap)
                    self.skip -= n
                    gap -= n
                if self.skip:
                    break
            if len(self.buf) < 2:
                break
            length = int.from_bytes(self.buf[:2], "big")
            if len(self.buf) - 2 >= length:
                out.append((bytes(self.buf[2: 2 + length]), length))
                del self.buf[: 2 + length]
                continue
            if not gap:
                break  # the rest comes in a later piece
            have = bytes(self.buf[2:])
            out.append((have, length))
            self.buf.clear()
            self.skip = length - len(have)
            n = min(self.skip, gap)
            self.skip -= n
            gap -= n
        if gap:  # a gap outside any message we can count: start again
            self.buf.clear()
            self.skip = 0
        return out
