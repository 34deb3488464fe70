"""What limited the tree: a verdict from where its time went, not from
syscall counts alone.

The tree's busy time is split into parts that add up to it:
  cpu      user time and system time of syscalls that are neither I/O,
           network nor memory (getppid loops are CPU work)
  io       uninterruptible waits (disk, page cache) and system time in file I/O syscalls
  network  time blocked in network syscalls and system time inside them
  memory   system time in memory syscalls and page faults
Sleeping that is not a network wait (wait4, nanosleep, poll on a pipe) is
idleness, not a limit, and stays out of the busy time. So does waiting for a
CPU (runnable): that is the host's load, not the tree's demand, and the same
program would otherwise get another verdict on a busy machine; it is reported
beside the verdict. A tree that was mostly neither busy nor runnable is idle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CLASSES = ("io_bound", "cpu_bound", "memory_bound", "network_bound", "mixed", "idle", "unknown")
MIN_BUSY_S = 0.02         # less than this is too little to judge
IDLE_SHARE = 0.10         # busy and runnable together under this share of the wall time: idle
IDLE_MIN_WALL_S = 0.1     # ... judged only for runs at least this long
CONTENDED = 0.5           # runnable time this large against busy time is worth a note
DOMINANT = 0.55           # a part this large, ...
RUNNER_UP_MAX = 0.30      # ... with no other part this large, names the verdict
FAULT_COST_S = 1e-6       # system time per page fault when syscall times are unknown (count-only mode)
# System time outside the measured enter..exit window is the syscall entry and
# exit path (traced: ~0.3 us a call here) plus page faults; calls get up to
# this much each, faults the rest.
SYSCALL_OVERHEAD_S = 0.5e-6
CPU_CATEGORIES = ("process", "time", "ipc", "signal", "security", "system", "other")


@dataclass(slots=True)
class TimeBudget:
    wall_s: float
    on_cpu_s: float
    user_s: float
    system_s: float
    runnable_s: float
    io_wait_s: float
    sleep_s: float
    blocked_s: dict[str, float]            # by syscall category (+ "no_syscall")
    syscall_s: dict[str, float] | None     # total time in syscalls by category (latency mode)
    calls: dict[str, int]                  # syscalls by category
    faults: int
    net_bytes: int
    peak_rss: int


def _syscall_system_time(b: TimeBudget) -> tuple[dict[str, float], float]:
    """System time by syscall category, and system time outside syscalls
    (page faults, mostly)."""
    if b.syscall_s is not None:
        # time in a syscall minus the time it was blocked is (nearly) CPU time
        in_sys = {c: max(t - b.blocked_s.get(c, 0.0), 0.0) for c, t in b.syscall_s.items()}
        total = sum(in_sys.values())
        if total > b.system_s > 0:
            in_sys = {c: t * b.system_s / total for c, t in in_sys.items()}
            total = b.system_s
        residual = max(b.system_s - total, 0.0)
        n = sum(b.calls.values())
        entry_exit = min(residual, n * SYSCALL_OVERHEAD_S)
        for c, k in b.calls.items():
            if n:
                in_sys[c] = in_sys.get(c, 0.0) + entry_exit * k / n
        return in_sys, residual - entry_exit
    faults_s = min(b.system_s, b.faults * FAULT_COST_S)
    rest = b.system_s - faults_s
    n = sum(b.calls.values()) or 1
    return {c: rest * k / n for c, k in b.calls.items()}, faults_s


def classify(b: TimeBudget) -> dict[str, Any]:
    in_sys, fault_s = _syscall_system_time(b)
    net_wait = b.blocked_s.get("network", 0.0)
    parts = {
        "cpu": b.user_s + sum(in_sys.get(c, 0.0) for c in CPU_CATEGORIES),
        "io": b.io_wait_s + in_sys.get("file_io", 0.0),
        "network": net_wait + in_sys.get("network", 0.0),
        "memory": fault_s + in_sys.get("memory", 0.0),
    }
    busy = sum(parts.values())
    intensity = {k: (v / busy if busy > 0 else 0.0) for k, v in parts.items()}
    ranked = sorted(intensity.items(), key=lambda kv: -kv[1])
    (top, top_v), (second, second_v) = ranked[0], ranked[1]
    idle_s = max(b.sleep_s - net_wait, 0.0)
    if b.wall_s >= IDLE_MIN_WALL_S and busy + b.runnable_s < IDLE_SHARE * b.wall_s:
        verdict = "idle"
        reason = (f"busy {busy:.3f} s in {b.wall_s:.2f} s wall ({busy / b.wall_s:.0%}): it mostly slept or "
                  f"waited for its children ({idle_s:.3f} s asleep across its tasks)")
    elif busy < MIN_BUSY_S:
        verdict = "unknown"
        reason = f"only {busy * 1000:.1f} ms of busy time in {b.wall_s:.2f} s: too little to judge"
    elif top_v >= DOMINANT and second_v < RUNNER_UP_MAX:
        verdict = f"{top}_bound"
        reason = f"{top_v:.0%} of busy time ({parts[top]:.3f} s of {busy:.3f} s) went to {_WHAT[top]}"
    else:
        verdict = "mixed"
        reason = (f"no single limit: {top} {top_v:.0%}, {second} {second_v:.0%}"
                  f" of {busy:.3f} s busy time")
    if verdict != "idle" and busy > 0 and b.runnable_s >= CONTENDED * busy:
        reason += f"; it also waited {b.runnable_s:.3f} s for a CPU (more runnable tasks than CPUs)"
    return {
        "classification": verdict,
        "reason": reason,
        "intensities": {f"{k}_intensity": round(v, 3) for k, v in intensity.items()},
        "evidence": {
            "busy_s": round(busy, 6), "wall_s": round(b.wall_s, 6),
            "cpu_s": round(parts["cpu"], 6), "io_s": round(parts["io"], 6),
            "network_s": round(parts["network"], 6), "memory_s": round(parts["memory"], 6),
            "user_s": round(b.user_s, 6), "system_s": round(b.system_s, 6),
            "runnable_s": round(b.runnable_s, 6), "io_wait_s": round(b.io_wait_s, 6),
            "network_wait_s": round(net_wait, 6), "idle_sleep_s": round(idle_s, 6),
            "page_fault_system_s": round(fault_s, 6),
            "system_s_by_category": {c: round(v, 6) for c, v in sorted(in_sys.items()) if v},
            "page_faults": b.faults, "network_bytes": b.net_bytes, "peak_rss_bytes": b.peak_rss,
            "syscall_times_measured": b.syscall_s is not None,
        },
    }


_WHAT = {"cpu": "computing or waiting for a CPU", "io": "file I/O and uninterruptible (disk) waits",
         "network": "network syscalls and waiting on sockets", "memory": "page faults and memory syscalls"}
