"""The built-in XDP packet counter: packets and bytes per second on an
interface, by L3 (IPv4/IPv6/ARP/other) and L4 (TCP/UDP/ICMP/other), counted
per CPU in the kernel and summed here. It never drops a packet (XDP_PASS)."""

from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from bpfwatch import libbpf as L
from bpfwatch.bpf import object_path
from bpfwatch.errors import BpfwatchError
from bpfwatch.programs import loader

L3 = ("ipv4", "ipv6", "arp", "other")
L4 = ("tcp", "udp", "icmp", "other", "none")
CLONE_NEWNET = 0x40000000


def enter_netns(name: str) -> None:
    """Moves this process into a named network namespace (/run/netns/NAME)."""
    path = name if "/" in name else f"/run/netns/{name}"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise BpfwatchError(f"no network namespace {name} ({path}: {e.strerror})") from None
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            raise BpfwatchError(f"cannot enter network namespace {name}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


@dataclass
class Sample:
    t: float
    counts: np.ndarray  # (len(L3), len(L4), ncpu, 2): packets, bytes per CPU


class XdpCounter:
    """The counter attached to one interface; detached on close()."""

    def __init__(self, iface: str, mode: str = "auto") -> None:
        self.iface = iface
        self.mode = mode
        self.obj = loader.load(str(object_path("xdpstats")), [f"xdp:{iface}:{mode}"])
        self.map = self.obj.obj.map("bw_xdp_counts")
        self.ncpu = L.num_possible_cpus()
        self.description = self.obj.attachments[0].description

    def __enter__(self) -> XdpCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.obj.close()

    def read(self) -> Sample:
        raw = self.map.array_range(0, len(L3) * len(L4))
        arr = np.frombuffer(raw, dtype="<u8").reshape(len(L3), len(L4), self.ncpu, 2)
        return Sample(time.monotonic(), arr.copy())


def _pb(c: np.ndarray, dt: float) -> dict[str, float]:
    p, b = int(c[..., 0].sum()), int(c[..., 1].sum())
    return {"packets": p, "bytes": b, "pps": round(p / dt, 1), "bps": round(8 * b / dt, 1)}


def report(iface: str, prev: Sample, cur: Sample, start: Sample) -> dict[str, Any]:
    """One interval: rates for the interval, totals since attach."""
    dt = max(cur.t - prev.t, 1e-9)
    per_cpu = cur.counts - prev.counts
    d = per_cpu.sum(axis=2)
    tot = (cur.counts - start.counts).sum(axis=2)
    out: dict[str, Any] = {"ts": time.time(), "iface": iface, "interval_s": round(dt, 3), **_pb(d, dt)}
    out["l3"] = {n: _pb(d[i], dt) for i, n in enumerate(L3)}
    out["l4"] = {n: _pb(d[:, j], dt) for j, n in enumerate(L4) if n != "none"}
    out["classes"] = {f"{a}/{b}": _pb(d[i, j], dt) for i, a in enumerate(L3) for j, b in enumerate(L4)
                      if d[i, j, 0]}
    out["per_cpu_pps"] = [round(float(x) / dt, 1) for x in per_cpu[..., 0].sum(axis=(0, 1))]
    out["total"] = {"packets": int(tot[..., 0].sum()), "bytes": int(tot[..., 1].sum()),
                    "seconds": round(cur.t - start.t, 3),
                    "l3": {n: {"packets": int(tot[i, :, 0].sum()), "bytes": int(tot[i, :, 1].sum())}
                           for i, n in enumerate(L3)},
                    "l4": {n: {"packets": int(tot[:, j, 0].sum()), "bytes": int(tot[:, j, 1].sum())}
                           for j, n in enumerate(L4) if n != "none"},
                    "classes": {f"{a}/{b}": {"packets": int(tot[i, j, 0]), "bytes": int(tot[i, j, 1])}
                                for i, a in enumerate(L3) for j, b in enumerate(L4) if tot[i, j, 0]}}
    return out
