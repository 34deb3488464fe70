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
from bpfwatch.sensors.base import Scope, Sensor, SensorOptions
from bpfwatch.sensors.network import SYSCALL_RODATA, syscall_rodata

DNS_TYPES = ["dns.malformed", "dns.query", "dns.response"]
SENT = 1  # BW_DNS_SENT
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

    def __init__(self, dopts: DnsOptions | None = None, options: SensorOptions | None = None,
                 scope: Scope | None = None) -> None:
        super().__init__(options, scope)
        self.dopts = dopts or DnsOptions()
        self.dopts.validate()
        # (pid, server, server port, local port, id) -> (ts, name)
        self._pending: OrderedDict[tuple[Any, ...], int] = OrderedDict()

    def configure(self, obj: L.BpfObject) -> None:
        obj.set_rodata(dns_port=socket.htons(self.dopts.port), **syscall_rodata(SYSCALL_RODATA))

    def layouts(self, btf: L.Btf) -> None:
        super().layouts(btf)
        self.dtype = struct_dtype(btf, "bw_dns_event")
        self.decoders = {enum_values(btf, "bw_event_type")["BW_EV_DNS"]: self._decode}

    def _decode(self, run: Run, idx: list[int] | None, out: list[dict[str, Any]]) -> None:
        for r, tail in self.variable_records(run, idx, self.dtype):
            ev = self._event(r, tail[:r["captured"]])
            if ev is not None:
                out.append(ev)

    def _event(self, r: dict[str, Any], payload: bytes) -> dict[str, Any] | None:
        sent = r["direction"] == SENT
        addrs = tuple_fields(r)
        base = {
            "protocol": addrs["protocol"], "family": addrs["family"],
            "server_addr": addrs["remote_addr"], "server_port": addrs["remote_port"],
            "local_port": addrs["local_port"],
        }
        try:
            msg = dns.parse(payload)
        except dns.DnsError as e:
            if "dns.malformed" not in self.dopts.types:
                return None
            return {**self._common("dns.malformed", r), **base, "direction": "sent" if sent else "received",
                    "length": r["len"], "captured": r["captured"], "reason": str(e)}
        name, qtype = msg.questions[0] if msg.questions else (None, None)
        key = (r["pid"], base["server_addr"], base["server_port"], base["local_port"], msg.id, name)
        if not msg.response:
            self._remember(key, r["ts_boot_ns"])
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
            "latency_ns": r["ts_boot_ns"] - asked if asked is not None else None,
        }

    def _remember(self, key: tuple[Any, ...], ts: int) -> None:
        self._pending[key] = ts
        self._pending.move_to_end(key)
        while self._pending and (len(self._pending) > PENDING_MAX or
                                 ts - next(iter(self._pending.values())) > PENDING_TTL_NS):
            self._pending.popitem(last=False)

    @staticmethod
    def _common(kind: str, r: dict[str, Any]) -> dict[str, Any]:
        return common_fields(kind, r["ts_boot_ns"], r["pid"], r["tid"], 0, r["uid"], cstr(r["comm"]), None,
                             r["cgroup_id"], None)
