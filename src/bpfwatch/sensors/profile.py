"""Profiler sensor behind `bpfwatch run`: loads bpf/profile.bpf.c, marks the
tasks to profile, and reads the kernel's per-process aggregates.

Each tracked process owns a slot; an array indexed by tid gives each of its
threads that slot, and every syscall exit adds to the per-CPU cell
(slot, syscall).
Slots come from a kernel queue at fork and go back to it once Python has
read them after the process exited. Slot 0 takes the processes beyond
capacity (still counted, just not apart), slot 1 is the root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bpfwatch import libbpf as L
from bpfwatch import syscalls
from bpfwatch.btf_dtype import LayoutError, cstr, enum_values, struct_dtype
from bpfwatch.errors import BpfwatchError, UsageError
from bpfwatch.events.text import text
from bpfwatch.procfs import PAGE_SIZE
from bpfwatch.ringbuf import Run
from bpfwatch.sensors.base import Sensor, SensorOptions

SLOT_OVERFLOW = 0
SLOT_ROOT = 1
PT_PRE_EXEC = 1 << 0
TID_FLAGS_SHIFT = 24  # bw_prof_tids values: (slot + 1) | flags << 24
# bytes of per-CPU syscall counters, all CPUs together (12 KiB a slot per CPU).
# Each slot is one map value, so the map is made in well under a millisecond;
# the budget is about memory. Beyond the slots, processes are counted together
# (slot 0).
MEMORY_BUDGET = 4 << 20
MAX_SLOTS = 4096
MIN_SLOTS = 8
DEFAULT_MIN_SLOTS = 16

CATEGORY_IDS = {name: i for i, name in enumerate(syscalls.CATEGORIES)}
CATEGORY_NAMES = list(syscalls.CATEGORIES)


MAX_EXPLICIT_BYTES = 512 << 20


def _mem_available() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def default_slots(ncpu: int, nr: int = 512, cell: int = 24) -> int:
    """Process slots that fit the memory budget on this many CPUs."""
    return max(DEFAULT_MIN_SLOTS, min(MAX_SLOTS, MEMORY_BUDGET // (ncpu * nr * cell)))


@dataclass(slots=True)
class ProfileOptions:
    latency: bool = True          # time each syscall (a sys_enter program too)
    slots: int | None = None      # processes profiled apart at once (default: by memory)

    def validate(self, ncpu: int = 1, nr: int = 512, cell: int = 24) -> None:
        if self.slots is None:
            return
        if not MIN_SLOTS <= self.slots <= 65536:
            raise UsageError(f"--max-procs must be between {MIN_SLOTS} and 65536")
        # each slot holds a counter cell per syscall per CPU, in kernel memory
        need = self.slots * ncpu * nr * cell
        budget = min(MAX_EXPLICIT_BYTES, _mem_available() // 4)
        if need > budget:
            fits = max(MIN_SLOTS, budget // (ncpu * nr * cell))
            raise UsageError(f"--max-procs {self.slots} needs {need >> 20} MiB of kernel memory for syscall "
                             f"counters on {ncpu} CPUs; at most {fits} fit (a quarter of the available memory, "
                             f"{MAX_EXPLICIT_BYTES >> 20} MiB at most)")


class ProfileSensor(Sensor):
    name = "profile"
    object_name = "profile"
    uses_scope = False

    def __init__(self, popts: ProfileOptions | None = None, options: SensorOptions | None = None) -> None:
        super().__init__(options or SensorOptions(ring_size=1 << 20))
        self.popts = popts or ProfileOptions()
        self.ncpu = L.num_possible_cpus()
        self.popts.validate(self.ncpu)
        self.slots = 0
        self.nr = 0
        self.hist_buckets = 0
        self.net_exact = False

    # -- loading ----------------------------------------------------------------

    def configure(self, obj: L.BpfObject) -> None:
        with obj.btf() as btf:
            limits = enum_values(btf, "bw_prof_limits")
        self.nr, self.hist_buckets = limits["BW_PROF_NR"], limits["BW_PROF_HIST"]
        if len(CATEGORY_IDS) >= limits["BW_PROF_NO_SYSCALL"]:
            raise LayoutError("more syscall categories than profile.h has room for")
        self.slots = self.popts.slots or default_slots(self.ncpu, self.nr)
        obj.map("bw_prof_sys").max_entries = self.slots
        obj.map("bw_prof_stats").max_entries = self.slots
        obj.map("bw_prof_free").max_entries = self.slots
        pid_max = _pid_max()
        obj.map("bw_prof_tids").max_entries = pid_max
        obj.map("bw_prof_enter").max_entries = pid_max if self.popts.latency else 1
        nrs = syscalls.table()
        obj.set_rodata(prof_latency=int(self.popts.latency),
                       **{f"nr_{n}": nrs.get(n, -1) for n in
                          ("clone", "clone3", "fork", "vfork", "execve", "execveat", "exit", "exit_group",
                           "rt_sigreturn")})
        obj.program("bw_prof_sys_enter").autoload = self.popts.latency
        # Linux >= 6.16 says in the tracepoint whether the whole group died
        new_exit = (L.tracepoint_args("sched_process_exit") or 1) >= 2
        obj.program("bw_prof_exit").autoload = new_exit
        obj.program("bw_prof_exit_old").autoload = not new_exit
        # sock_{send,recv}_length arrived in Linux 6.3; without them no network bytes
        self.net_exact = L.kernel_has_tracepoint("sock_send_length")
        for prog in ("bw_prof_send", "bw_prof_recv"):
            obj.program(prog).autoload = self.net_exact

    def populate(self, obj: L.BpfObject) -> None:
        free = obj.map("bw_prof_free")
        for slot in range(SLOT_ROOT + 1, self.slots):
            free.update(None, slot.to_bytes(4, "little"))
        cats = obj.map("bw_prof_cat")
        for name, nr in syscalls.table().items():
            if nr < self.nr:
                cats.update(nr.to_bytes(4, "little"), bytes([CATEGORY_IDS[syscalls.category(name)]]))

    def layouts(self, btf: L.Btf) -> None:
        super().layouts(btf)
        ids = enum_values(btf, "bw_event_type")
        self.sys_dtype = struct_dtype(btf, "bw_prof_sys")
        # the maps' values are rows: a slot's syscalls, a syscall's latency buckets
        row, hist_row = struct_dtype(btf, "bw_prof_row"), struct_dtype(btf, "bw_prof_hist_row")
        if row.itemsize != self.nr * self.sys_dtype.itemsize or hist_row.itemsize != self.hist_buckets * 8:
            raise LayoutError("profile.h: bw_prof_row or bw_prof_hist_row does not match BW_PROF_NR/BW_PROF_HIST")
        self.stats_dtype = struct_dtype(btf, "bw_prof_stats")
        self.fork_dtype = struct_dtype(btf, "bw_prof_fork_event")
        self.exec_dtype = struct_dtype(btf, "bw_prof_exec_event")
        self.exit_dtype = struct_dtype(btf, "bw_prof_exit_event")
        self.off_reasons = enum_values(btf, "bw_off_reason")
        self.sys_fields = _u64_columns(self.sys_dtype)
        self.stats_fields = _u64_columns(self.stats_dtype)
        self.decoders = {ids["BW_EV_PROF_FORK"]: self._decode_fork, ids["BW_EV_PROF_EXEC"]: self._decode_exec,
                         ids["BW_EV_PROF_EXIT"]: self._decode_exit}

    # -- choosing what to profile -------------------------------------------------

    def _mark(self, tid: int, slot: int, flags: int) -> None:
        assert self.obj is not None
        value = (slot + 1) | flags << TID_FLAGS_SHIFT
        self.obj.map("bw_prof_tids").update(tid.to_bytes(4, "little"), value.to_bytes(4, "little"))

    def track_launched(self, pid: int) -> None:
        """A child held before its exec: counted from that execve on."""
        self._mark(pid, SLOT_ROOT, PT_PRE_EXEC)

    def track_running(self, pid: int) -> int:
        """Every thread of a running process (new ones join at fork); returns
        the number of threads marked."""
        marked: set[int] = set()
        task_dir = Path(f"/proc/{pid}/task")
        for _ in range(10):  # until no new thread appeared while marking
            try:
                tids = {int(t) for t in os.listdir(task_dir)}
            except FileNotFoundError:
                raise BpfwatchError(f"process {pid} does not exist") from None
            new = tids - marked
            if not new:
                break
            for tid in sorted(new):
                self._mark(tid, SLOT_ROOT, 0)
                marked.add(tid)
        return len(marked)

    # -- reading the aggregates -----------------------------------------------------

    def _percpu_sum(self, raw: bytes, count: int, width: int) -> np.ndarray:
        return np.frombuffer(raw, "<u8").reshape(count, self.ncpu, width).sum(axis=1, dtype=np.uint64)

    def read_syscalls(self, slot: int) -> np.ndarray:
        """(nr, [calls, errors, ns]) of one slot, summed over CPUs."""
        assert self.obj is not None
        raw = self.obj.map("bw_prof_sys").array_range(slot, 1)
        width = self.sys_dtype.itemsize // 8
        return self._percpu_sum(raw, 1, self.nr * width).reshape(self.nr, width)

    def read_stats(self, slot: int) -> np.ndarray:
        """One slot's stats as a flat u64 vector (columns: stats_fields)."""
        assert self.obj is not None
        raw = self.obj.map("bw_prof_stats").array_range(slot, 1)
        return self._percpu_sum(raw, 1, self.stats_dtype.itemsize // 8)[0]

    def recycle(self, slot: int) -> None:
        """Zeroes a read slot and hands it back to the kernel."""
        assert self.obj is not None
        self.obj.map("bw_prof_sys").zero_range(slot, 1)
        self.obj.map("bw_prof_stats").zero_range(slot, 1)
        if slot > SLOT_ROOT:
            self.obj.map("bw_prof_free").update(None, slot.to_bytes(4, "little"))

    def read_histogram(self) -> np.ndarray:
        """(nr, bucket) counts of syscall latency, log2(ns) buckets."""
        assert self.obj is not None
        raw = self.obj.map("bw_prof_hist").array_range(0, self.nr)
        return self._percpu_sum(raw, self.nr, self.hist_buckets)

    def read_errnos(self) -> dict[tuple[int, int], int]:
        """{(nr, errno): count} for the whole tree."""
        assert self.obj is not None
        m = self.obj.map("bw_prof_errno")
        out = {}
        for key in list(m.keys()):
            n = m.percpu_u64_sum(key)
            if n:
                k = int.from_bytes(key, "little")
                out[(k >> 12, k & 0xFFF)] = n
        return out

    # -- records ------------------------------------------------------------------

    def _decode_fork(self, run: Run, idx: list[int] | None, out: list[dict[str, Any]]) -> None:
        for r in self.records(run, self.fork_dtype, idx):
            out.append({"kind": "fork", "ts": r["ts_boot_ns"], "pid": r["pid"], "slot": r["slot"],
                        "child_pid": r["child_pid"], "child_slot": r["child_slot"],
                        "child_start": r["child_start_boot_ns"], "comm": cstr(r["comm"])})

    def _decode_exec(self, run: Run, idx: list[int] | None, out: list[dict[str, Any]]) -> None:
        for r in self.records(run, self.exec_dtype, idx):
            args = bytes(r["args"])[: r["args_len"]]
            parts = args.split(b"\0")
            if r["args_len"] >= r["args_size"] and parts and parts[-1] == b"":
                parts.pop()
            out.append({"kind": "exec", "ts": r["ts_boot_ns"], "pid": r["pid"], "slot": r["slot"],
                        "ppid": r["ppid"], "comm": cstr(r["comm"]),
                        "filename": cstr(bytes(r["filename"])[: r["filename_len"]]),
                        "argv": [text(p) for p in parts],
                        "argv_truncated": r["args_len"] < r["args_size"]})

    def _decode_exit(self, run: Run, idx: list[int] | None, out: list[dict[str, Any]]) -> None:
        for r in self.records(run, self.exit_dtype, idx):
            out.append({"kind": "exit", "ts": r["ts_boot_ns"], "pid": r["pid"], "slot": r["slot"],
                        "ppid": r["ppid"], "status": r["exit_code"], "start": r["start_boot_ns"],
                        "comm": cstr(r["comm"]),
                        "peak_rss": r["peak_rss_pages"] * PAGE_SIZE})


def _pid_max() -> int:
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 4194304  # the kernel's upper limit


def _u64_columns(dtype: np.dtype) -> dict[str, slice]:
    """Column ranges of each field when a record of u64s is viewed flat."""
    cols = {}
    for name, (fdt, off) in ((n, dtype.fields[n][:2]) for n in dtype.names):
        base = fdt.subdtype[0] if fdt.subdtype else fdt
        if base != np.dtype("<u8") or off % 8:
            raise LayoutError(f"{name}: profiler aggregates must be u64 fields")
        cols[name] = slice(off // 8, (off + fdt.itemsize) // 8)
    return cols
