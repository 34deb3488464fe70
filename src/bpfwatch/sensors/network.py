"""Network sensor: network.connect, network.accept, network.close,
network.state (opt-in) and network.udp.

BPF side: bpf/network.bpf.c. TCP owners are recorded in process context
(connect, accept) so events from softirq context are attributed right; UDP
flows are aggregated in the kernel and end when idle (ended here, atomically)
or when their process exits (in the kernel).
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from bpfwatch import libbpf as L
from bpfwatch import syscalls
from bpfwatch.btf_dtype import cstr, enum_values, record_dict, struct_dtype
from bpfwatch.errors import UsageError
from bpfwatch.events.model import common_fields, from_shape, shape
from bpfwatch.protocols.inet import put_addresses, tuple_fields
from bpfwatch.ringbuf import Run
from bpfwatch.sensors.base import Fields, Request, RowDecoder, Scope, Sensor, SensorOptions

NETWORK_TYPES = ["network.accept", "network.close", "network.connect", "network.state", "network.udp"]
DEFAULT_TYPES = set(NETWORK_TYPES) - {"network.state"}  # every state change is opt-in
TCP_KINDS = {"BW_TCP_CONNECT": "network.connect", "BW_TCP_ACCEPT": "network.accept",
             "BW_TCP_CLOSE": "network.close", "BW_TCP_STATE": "network.state"}
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
              12: "NEW_SYN_RECV"}
_ADDRESS_FIELDS = ("protocol", "family", "local_addr", "local_port", "remote_addr", "remote_port")
# each TCP event's shape (events/model.shape): its fields in schema order
_TCP_SHAPES = {kind: shape(kind, *_ADDRESS_FIELDS, *extra) for kind, extra in (
    ("network.connect", ("result", "error", "latency_ns")),
    ("network.accept", ()),
    ("network.close", ("bytes_sent", "bytes_received", "bytes_exact", "duration_ns", "closed_by", "retransmits",
                       "segs_in", "segs_out", "role")),
    ("network.state", ("old_state", "new_state", "role")))}
# the fields the TCP decoder reads, in the record's order (network.h)
TCP_FIELDS = ("ts_boot_ns laddr raddr lport rport family proto owner_pid owner_tid owner_uid role cgroup_id closer "
              "comm latency_ns duration_ns bytes_sent bytes_received kind err old_state new_state retransmits "
              "segs_in segs_out bytes_from")
ROLES = {0: None, 1: "client", 2: "server", 3: "listener"}
CLOSERS = {0: None, 1: "local", 2: "remote"}
CONNECT_RESULTS = {errno.ECONNREFUSED: "refused", errno.ETIMEDOUT: "timeout", errno.EHOSTUNREACH: "unreachable",
                   errno.ENETUNREACH: "unreachable", errno.ECONNRESET: "reset"}
SYSCALL_RODATA = {"nr_sendto": "sendto", "nr_recvfrom": "recvfrom", "nr_sendmsg": "sendmsg",
                  "nr_recvmsg": "recvmsg", "nr_sendmmsg": "sendmmsg", "nr_recvmmsg": "recvmmsg"}


def syscall_rodata(names: dict[str, str]) -> dict[str, int]:
    nrs = syscalls.table()
    return {var: nrs.get(name, -1) for var, name in names.items()}


@dataclass(slots=True)
class NetworkOptions:
    types: set[str] = field(default_factory=lambda: set(DEFAULT_TYPES))
    udp_idle: float = 30.0  # seconds without a datagram before a UDP flow ends
    allow_ports: list[tuple[int, int]] = field(default_factory=list)  # ranges, in the kernel
    deny_ports: list[tuple[int, int]] = field(default_factory=list)

    def validate(self) -> None:
        if self.udp_idle <= 0:
            raise UsageError("the UDP idle timeout must be positive")


class NetworkSensor(Sensor):
    name = "network"
    object_name = "network"

    @classmethod
    def plan(cls, req: Request) -> NetworkOptions | None:
        types = req.types_of("network")
        if not types:
            return None
        opts = NetworkOptions(types=types, udp_idle=req.settings["udp_idle"], allow_ports=req.allow.ports,
                              deny_ports=req.deny.ports)
        opts.validate()
        return opts

    def __init__(self, nopts: NetworkOptions | None = None, options: SensorOptions | None = None,
                 scope: Scope | None = None) -> None:
        super().__init__(options, scope)
        self.nopts = nopts or NetworkOptions()
        self.nopts.validate()
        self._next_scan = 0.0

    def configure(self, obj: L.BpfObject) -> None:
        with obj.btf() as btf:
            kinds = enum_values(btf, "bw_tcp_kind")
        mask = 0
        for cname, tname in TCP_KINDS.items():
            if tname in self.nopts.types:
                mask |= 1 << kinds[cname]
        # exact application bytes need sock:sock_send_length (Linux >= 6.2)
        app_bytes = L.kernel_has_tracepoint("sock_send_length") and L.kernel_has_tracepoint("sock_recv_length")
        if not app_bytes:
            for prog in ("bw_net_send_len", "bw_net_recv_len"):
                obj.program(prog).autoload = False
        flt_port = (1 if self.nopts.allow_ports else 0) | (2 if self.nopts.deny_ports else 0)
        obj.set_rodata(emit_tcp=mask, emit_udp=int("network.udp" in self.nopts.types), flt_port=flt_port,
                       count_app_bytes=int(app_bytes),
                       **syscall_rodata({**SYSCALL_RODATA, "nr_accept": "accept", "nr_accept4": "accept4"}))

    def populate(self, obj: L.BpfObject) -> None:
        ports = obj.map("bw_ports")
        for ranges, how in ((self.nopts.allow_ports, b"\1"), (self.nopts.deny_ports, b"\2")):  # deny last: it wins
            for lo, hi in ranges:
                for p in range(lo, hi + 1):
                    ports.update(p.to_bytes(2, "little"), how)

    def layouts(self, btf: L.Btf) -> None:
        super().layouts(btf)
        ids = enum_values(btf, "bw_event_type")
        self.tcp_dtype = struct_dtype(btf, "bw_tcp_event")
        self.udp_dtype = struct_dtype(btf, "bw_udp_event")
        self.udp_key_dtype = struct_dtype(btf, "bw_udp_key")
        self.udp_stats_dtype = struct_dtype(btf, "bw_udp_stats")
        self.sock_dtype = struct_dtype(btf, "bw_sock_info")
        self._bytes_raw = enum_values(btf, "bw_bytes_source")["BW_BYTES_TCP"]
        self._kind_names = {v: TCP_KINDS[k] for k, v in enum_values(btf, "bw_tcp_kind").items()}
        self.tcp_fields = Fields(self.tcp_dtype, TCP_FIELDS)
        self.decoders = {ids["BW_EV_UDP"]: self._decode_udp}
        self.decode_rows({ids["BW_EV_TCP"]: RowDecoder(self.tcp_fields, self._tcp)})

    def _decode_udp(self, run: Run, idx: list[int] | None, out: list[dict[str, Any]]) -> None:
        out.extend(self._udp(r) for r in self.rows(run, self.udp_dtype, idx))

    def _tcp(self, row: tuple[Any, ...]) -> dict[str, Any] | None:
        (ts, laddr, raddr, lport, rport, family, proto, pid, tid, uid, role, cgroup_id, closer, comm, latency_ns,
         duration_ns, bytes_sent, bytes_received, kind_id, err, old_state, new_state, retransmits, segs_in,
         segs_out, bytes_from) = row
        kind = self._kind_names.get(kind_id)
        if kind is None or kind not in self.nopts.types:
            return None
        ev = from_shape(_TCP_SHAPES[kind], ts, pid, tid, 0, uid, cstr(comm), cgroup_id)
        put_addresses(ev, family, proto, laddr, lport, raddr, rport)
        if kind == "network.connect":
            ok = new_state == 1
            err = err if not ok else 0
            ev["result"] = "established" if ok else CONNECT_RESULTS.get(err, "error")
            ev["error"] = errno.errorcode.get(err, f"E{err}") if err else (None if ok else "ECONNABORTED")
            ev["latency_ns"] = latency_ns if ok else duration_ns
        elif kind == "network.close":
            # the application's bytes: counted at sock_send/recv_length (6.2+), or
            # TCP's totals without the SYN and FIN sequence numbers (bytes_from)
            ev["bytes_sent"] = bytes_sent
            ev["bytes_received"] = bytes_received
            ev["bytes_exact"] = bytes_from != self._bytes_raw
            ev["duration_ns"] = duration_ns
            ev["closed_by"] = CLOSERS.get(closer)
            ev["retransmits"] = retransmits
            ev["segs_in"] = segs_in
            ev["segs_out"] = segs_out
            ev["role"] = ROLES.get(role)
        elif kind == "network.state":
            ev["old_state"] = TCP_STATES.get(old_state, str(old_state))
            ev["new_state"] = TCP_STATES.get(new_state, str(new_state))
            ev["role"] = ROLES.get(role)
        return ev

    def _udp(self, r: Any) -> dict[str, Any] | None:
        return self._udp_event(r, "start" if r.phase == 1 else "end", r.ts_boot_ns)

    def _udp_event(self, r: Any, phase: str, ts: int) -> dict[str, Any]:
        return {
            **common_fields("network.udp", ts, r.tgid, r.tgid, 0, r.uid, cstr(r.comm), None,
                            r.cgroup_id, None),
            **tuple_fields(r),
            "phase": phase, "bytes_sent": r.bytes_sent, "bytes_received": r.bytes_received,
            "packets_sent": r.packets_sent, "packets_received": r.packets_received,
            "duration_ns": max(r.last_ns - r.first_ns, 0) if phase == "end" else 0,
        }

    def live_bytes(self) -> dict[int, dict[str, int]]:
        """Bytes sent and received so far on each process's open TCP
        connections (counted where the kernel has sock_send_length, 6.2+)
        and UDP flows, before network.close or network.udp reports them."""
        out: dict[int, dict[str, int]] = {}
        if self.obj is None:
            return out
        for _, raw in self.obj.map("bw_socks").items():
            v = record_dict(self.sock_dtype, raw)
            if v["owner_pid"] and v["counted"]:
                acc = out.setdefault(v["owner_pid"], {"net_tx": 0, "net_rx": 0})
                acc["net_tx"] += v["app_sent"]
                acc["net_rx"] += v["app_received"]
        for key, raw in self.obj.map("bw_udp").items():
            v = record_dict(self.udp_stats_dtype, raw)
            acc = out.setdefault(record_dict(self.udp_key_dtype, key)["tgid"], {"net_tx": 0, "net_rx": 0})
            acc["net_tx"] += v["bytes_sent"]
            acc["net_rx"] += v["bytes_received"]
        return out

    def tick(self, out: list[dict[str, Any]], exited: list[int], force: bool = False) -> None:
        """Ends UDP flows idle for longer than udp_idle (at most once a second)."""
        now = time.monotonic()
        if self.obj is None or (not force and now < self._next_scan):
            return
        self._next_scan = now + 1.0
        boot_now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        idle_ns = int(self.nopts.udp_idle * 1e9)
        flows = self.obj.map("bw_udp")
        last = self.udp_stats_dtype.fields["last_ns"][1]
        for key in list(flows.keys()):
            raw = flows.lookup(key)
            if raw is None or boot_now - int.from_bytes(raw[last: last + 8], "little") < idle_ns:
                continue
            raw = flows.pop(key)  # atomic: nothing counted after this read is lost
            if raw is not None:
                flow = SimpleNamespace(**{**record_dict(self.udp_key_dtype, key),
                                          **record_dict(self.udp_stats_dtype, raw)})
                out.append(self._udp_event(flow, "end", boot_now))
