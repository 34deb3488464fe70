"""The profiled tree as it unfolds: its processes, and the kernel's
aggregates collected from each process's slot once it has exited."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bpfwatch import procfs
from bpfwatch.sensors.profile import SLOT_OVERFLOW, SLOT_ROOT, ProfileSensor

# A process's slot is read this long after its exit record: a thread that
# passed its exit point just before the last one may still add its counters.
HARVEST_DELAY = 0.1

# cumulative counters kept per process (live: from /proc; exited: from the kernel)
CUMULATIVE = ("cpu_ns", "rchar", "wchar", "read_bytes", "write_bytes", "minflt", "majflt", "net_tx", "net_rx")


@dataclass(slots=True)
class Proc:
    pid: int
    ppid: int
    slot: int
    comm: str
    start_ns: int                      # boot-time ns
    argv: list[str] | None = None
    filename: str | None = None
    execs: int = 0
    end_ns: int | None = None
    status: int | None = None          # wait status
    syscalls: np.ndarray | None = None  # (nr, [calls, errors, ns]) once read from the kernel
    stats: np.ndarray | None = None     # flat bw_prof_stats once read
    cum: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CUMULATIVE, 0))
    rss: int = 0
    threads: int = 1
    peak_rss: int = 0
    last_t: float = 0.0                # the sampler's previous look
    last_cpu: int = 0
    # still running at the end: its user/system split from /proc (the kernel's
    # split arrives only with the exit), ns
    live_utime_ns: int = 0
    live_stime_ns: int = 0
    live_oncpu_ns: int = 0  # on-CPU time the kernel has not counted yet (a slice still running)

    @property
    def alive(self) -> bool:
        return self.end_ns is None


class Collector:
    """Follows fork/exec/exit records, reads each exited process's slot and
    returns it to the kernel, and keeps the tree's totals."""

    def __init__(self, sensor: ProfileSensor, root_pid: int, root_ppid: int, root_comm: str,
                 root_start_ns: int, argv: list[str] | None = None) -> None:
        self.sensor = sensor
        root = Proc(root_pid, root_ppid, SLOT_ROOT, root_comm, root_start_ns, argv=argv)
        self.root = root
        self.procs: dict[int, Proc] = {root_pid: root}
        self.live_slots: dict[int, int] = {SLOT_ROOT: root_pid}
        self.tree_sys = np.zeros((sensor.nr, sensor.sys_dtype.itemsize // 8), np.uint64)
        self.tree_stats = np.zeros(sensor.stats_dtype.itemsize // 8, np.uint64)
        self.overflow_procs = 0
        self.overflow: Proc | None = None  # stands for the processes beyond capacity
        self._pending: list[tuple[float, int, int]] = []  # (due, slot, pid)
        self.finished = False

    def stat(self, stats: np.ndarray, name: str) -> Any:
        v = stats[self.sensor.stats_fields[name]]
        return int(v[0]) if v.size == 1 else v

    # -- records ------------------------------------------------------------------

    def on_records(self, records: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        for r in records:
            kind = r["kind"]
            if kind == "fork":
                slot = r["child_slot"]
                parent = self.procs.get(r["pid"])
                p = Proc(r["child_pid"], r["pid"], slot, r["comm"], r["child_start"],
                         argv=parent.argv if parent else None, filename=parent.filename if parent else None)
                self.procs[p.pid] = p
                if slot == SLOT_OVERFLOW:
                    self.overflow_procs += 1
                else:
                    self.live_slots[slot] = p.pid
            elif kind == "exec":
                p = self._proc(r)
                p.comm, p.filename, p.argv = r["comm"], r["filename"], r["argv"]
                p.execs += 1
            elif kind == "exit":
                p = self._proc(r)
                p.end_ns, p.status, p.comm = r["ts"], r["status"], r["comm"]
                p.peak_rss = max(p.peak_rss, r.get("peak_rss", 0))
                if p.slot not in (SLOT_OVERFLOW, SLOT_ROOT):
                    self._pending.append((now + HARVEST_DELAY, p.slot, p.pid))

    def _proc(self, r: dict[str, Any]) -> Proc:
        p = self.procs.get(r["pid"])
        if p is None:  # its fork record was lost: still account for it
            p = Proc(r["pid"], r.get("ppid", 0), r["slot"], r["comm"], r.get("start", r["ts"]))
            self.procs[p.pid] = p
            if p.slot != SLOT_OVERFLOW:
                self.live_slots[p.slot] = p.pid
        return p

    # -- slots ----------------------------------------------------------------------

    def harvest_due(self, force: bool = False) -> int:
        """Reads and recycles the slots of processes that exited long enough ago."""
        now = time.monotonic()
        keep, done = [], 0
        for due, slot, pid in self._pending:
            if force or due <= now:
                self._harvest(slot, self.procs[pid], recycle=True)
                done += 1
            else:
                keep.append((due, slot, pid))
        self._pending = keep
        return done

    def _harvest(self, slot: int, p: Proc, recycle: bool) -> None:
        sys = self.sensor.read_syscalls(slot)
        stats = self.sensor.read_stats(slot)
        p.syscalls, p.stats = sys, stats
        self.tree_sys += sys
        self.tree_stats += stats
        self._final_cum(p, stats)
        self.live_slots.pop(slot, None)
        if recycle:
            self.sensor.recycle(slot)

    def _final_cum(self, p: Proc, stats: np.ndarray) -> None:
        """The kernel's exact totals replace what /proc showed while it lived."""
        kernel = {k: self.stat(stats, "oncpu_ns" if k == "cpu_ns" else k) for k in CUMULATIVE}
        if p.alive:  # still running: the kernel has only its exited threads' I/O and faults
            kernel = {k: max(v, p.cum[k]) for k, v in kernel.items()}
        else:
            p.rss, p.threads = 0, 0
        p.cum.update(kernel)

    def finish(self) -> None:
        """Reads every slot left: exited, still running, and the overflow."""
        if self.finished:
            return
        self.harvest_due(force=True)
        for slot, pid in list(self.live_slots.items()):
            p = self.procs[pid]
            self._harvest(slot, p, recycle=False)
            self._live_times(p)
        ov = self.sensor.read_syscalls(SLOT_OVERFLOW)
        if int(ov[:, 0].sum()) or self.overflow_procs:
            p = Proc(0, self.root.pid, SLOT_OVERFLOW, f"({self.overflow_procs} more processes)", self.root.start_ns)
            self._harvest(SLOT_OVERFLOW, p, recycle=False)
            self.overflow = p
        self.finished = True

    def _live_times(self, p: Proc) -> None:
        """A process still running at the end: the kernel has counted the CPU
        time of its exited threads only; /proc has all of it, so the rest is
        the difference (0 if it exited meanwhile and the kernel has it all).
        Its on-CPU time is counted at each switch-out, so a loop that had a
        CPU to itself the whole run has most of it in a slice still running:
        /proc's total (tick-granular) stands in when it is larger."""
        if not p.alive or not p.pid or p.stats is None:
            return
        try:
            f = procfs.stat_fields(p.pid)
            tick_ns = 1_000_000_000 // procfs.CLK_TCK
            p.live_utime_ns = max(int(f[11]) * tick_ns - self.stat(p.stats, "utime_ns"), 0)
            p.live_stime_ns = max(int(f[12]) * tick_ns - self.stat(p.stats, "stime_ns"), 0)
            p.live_oncpu_ns = max((int(f[11]) + int(f[12])) * tick_ns - self.stat(p.stats, "oncpu_ns"), 0)
        except (OSError, IndexError, ValueError):
            pass

    def syscalls_so_far(self, max_slots: int = 256) -> int:
        """System calls counted so far: those of processes already harvested,
        and the running count of live ones (at most max_slots of them are
        read, so a huge tree costs a bounded time per call)."""
        total = int(self.tree_sys[:, 0].sum())
        for slot in list(self.live_slots)[:max_slots]:
            total += int(self.sensor.read_syscalls(slot)[:, 0].sum())
        return total

    def live(self) -> list[Proc]:
        return [p for p in self.procs.values() if p.alive and p.pid]
