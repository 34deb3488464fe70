"""Resources of the tree over time, sampled at an adaptive interval: fast at
the start (short commands get a real timeline), slower later (a long run
stays small). Live processes are read from /proc; exited ones contribute the
kernel's exact totals; network bytes always come from the kernel."""

from __future__ import annotations

import time
from typing import Any

from bpfwatch.procfs import CLK_TCK, PAGE_SIZE, stat_fields
from bpfwatch.profiler.session import CUMULATIVE, Collector, Proc

# (until this many seconds, sample every this many)
SCHEDULE = ((1.0, 0.05), (5.0, 0.1), (30.0, 0.25), (120.0, 0.5), (float("inf"), 1.0))


def adaptive_interval(elapsed: float) -> float:
    for until, every in SCHEDULE:
        if elapsed < until:
            return every
    return SCHEDULE[-1][1]


def read_proc(pid: int) -> dict[str, int] | None:
    """CPU, memory, threads, faults and I/O of a live process, or None."""
    try:
        fields = stat_fields(pid)
        out = {"minflt": int(fields[7]), "majflt": int(fields[9]),
               "cpu_ns": (int(fields[11]) + int(fields[12])) * 1_000_000_000 // CLK_TCK,
               "threads": int(fields[17]), "rss": int(fields[21]) * PAGE_SIZE}
    except (OSError, ValueError, IndexError):
        return None
    if fields[0] == b"Z":
        return None  # exited, not yet reaped: the kernel's totals follow
    try:
        with open(f"/proc/{pid}/io", "rb") as f:
            for line in f:
                key, _, value = line.partition(b":")
                name = key.decode()
                if name in ("rchar", "wchar", "read_bytes", "write_bytes"):
                    out[name] = int(value)
    except OSError:
        pass
    return out


class Sampler:
    def __init__(self, collector: Collector, fixed_interval: float | None = None) -> None:
        self.collector = collector
        self.fixed = fixed_interval
        self.t0 = time.monotonic()
        self.samples: list[dict[str, Any]] = []
        self.peak_rss = 0
        self.peak_threads = 0
        self.peak_procs = 0
        self._prev: dict[str, Any] | None = None

    def interval(self) -> float:
        return self.fixed or adaptive_interval(time.monotonic() - self.t0)

    def _refresh(self, p: Proc) -> bool:
        info = read_proc(p.pid)
        if info is None:
            return False
        p.rss, p.threads = info.pop("rss"), info.pop("threads")
        p.peak_rss = max(p.peak_rss, p.rss)
        for k, v in info.items():
            p.cum[k] = max(p.cum[k], v)  # never backwards (tick vs exact clocks)
        if self.collector.live_slots.get(p.slot) == p.pid:  # not the shared overflow slot
            stats = self.collector.sensor.read_stats(p.slot)
            for k in ("net_tx", "net_rx"):
                p.cum[k] = max(p.cum[k], self.collector.stat(stats, k))
            p.cum["cpu_ns"] = max(p.cum["cpu_ns"], self.collector.stat(stats, "oncpu_ns"))
        return True

    def sample(self, per_process: bool = True) -> list[dict[str, Any]]:
        """One tree sample (and one per live process); returns the lines."""
        now = time.monotonic()
        t = round(now - self.t0, 4)
        c = self.collector
        lines: list[dict[str, Any]] = []
        live = [p for p in c.live() if self._refresh(p)]
        tree = {k: sum(p.cum[k] for p in c.procs.values()) for k in CUMULATIVE}
        if c.overflow is not None:
            for k in CUMULATIVE:
                tree[k] += c.overflow.cum[k]
        rss = sum(p.rss for p in live)
        threads = sum(p.threads for p in live)
        self.peak_rss, self.peak_threads = max(self.peak_rss, rss), max(self.peak_threads, threads)
        self.peak_procs = max(self.peak_procs, len(live))
        prev = self._prev
        dt = t - prev["t"] if prev else 0.0

        def rate(key: str) -> float:
            if not prev or dt <= 0:
                return 0.0
            return max(tree[key] - prev["cum"][key], 0) / dt

        line = {"kind": "sample", "scope": "tree", "t": t, "processes": len(live), "threads": threads,
                "rss_bytes": rss, "cpu_pct": round(100 * rate("cpu_ns") / 1e9, 1),
                "read_bytes": tree["read_bytes"], "write_bytes": tree["write_bytes"],
                "read_chars": tree["rchar"], "write_chars": tree["wchar"],
                "net_tx_bytes": tree["net_tx"], "net_rx_bytes": tree["net_rx"],
                "minor_faults": tree["minflt"], "major_faults": tree["majflt"],
                "read_bps": round(rate("rchar")), "write_bps": round(rate("wchar")),
                "disk_read_bps": round(rate("read_bytes")), "disk_write_bps": round(rate("write_bytes")),
                "net_tx_bps": round(rate("net_tx")), "net_rx_bps": round(rate("net_rx")),
                "faults_per_s": round(rate("minflt") + rate("majflt"))}
        lines.append(line)
        self.samples.append(line)
        if per_process:
            for p in live:
                pdt = t - p.last_t if p.last_t else 0.0
                cpu_pct = 100 * max(p.cum["cpu_ns"] - p.last_cpu, 0) / 1e9 / pdt if pdt > 0 else 0.0
                p.last_t, p.last_cpu = t, p.cum["cpu_ns"]
                lines.append({"kind": "sample", "scope": "process", "t": t, "pid": p.pid, "comm": p.comm,
                              "cpu_pct": round(cpu_pct, 1), "rss_bytes": p.rss, "threads": p.threads,
                              "cpu_ns": p.cum["cpu_ns"],
                              "read_chars": p.cum["rchar"], "write_chars": p.cum["wchar"],
                              "read_bytes": p.cum["read_bytes"], "write_bytes": p.cum["write_bytes"],
                              "net_tx_bytes": p.cum["net_tx"], "net_rx_bytes": p.cum["net_rx"],
                              "minor_faults": p.cum["minflt"], "major_faults": p.cum["majflt"]})
        self._prev = {"t": t, "cum": tree}
        return lines
