"""The profile as one JSON document (`--json FILE`, the terminal report and
`bpfwatch report` all read this)."""

from __future__ import annotations

import errno as errno_mod
import os
import platform
from typing import Any

import numpy as np

from bpfwatch import __version__, syscalls
from bpfwatch.profiler.classify import TimeBudget, classify
from bpfwatch.profiler.session import Collector, Proc
from bpfwatch.sensors.profile import CATEGORY_NAMES

MAX_PROCESSES = 2000   # listed one by one; the rest are counted
TOP = 10
NS = 1e9


def syscall_name(nr: int, nr_limit: int) -> str:
    if nr == nr_limit - 1 and nr not in syscalls.TABLES.get(syscalls.HOST, {}):
        return "(out of range)"
    return syscalls.name_of(nr)


def errno_name(e: int) -> str:
    return errno_mod.errorcode.get(e, f"E{e}")


def wait_fields(status: int | None) -> dict[str, Any]:
    if status is None:
        return {"exit_code": None, "signal": None}
    if os.WIFSIGNALED(status):
        return {"exit_code": None, "signal": os.WTERMSIG(status)}
    return {"exit_code": os.WEXITSTATUS(status), "signal": None}


def syscall_table(sys: np.ndarray, hist: np.ndarray | None, errnos: dict[tuple[int, int], int],
                  latency: bool) -> list[dict[str, Any]]:
    nr_limit = sys.shape[0]
    calls = sys[:, 0]
    total_calls = int(calls.sum()) or 1
    total_ns = int(sys[:, 2].sum()) or 1
    rows = []
    for nr in np.flatnonzero(calls).tolist():
        c, e, ns = (int(x) for x in sys[nr, :3])
        name = syscall_name(nr, nr_limit)
        row: dict[str, Any] = {"name": name, "nr": nr, "category": syscalls.category(name),
                               "calls": c, "errors": e, "pct_calls": round(100 * c / total_calls, 2)}
        if latency:
            row.update(time_s=ns / NS, avg_us=round(ns / c / 1000, 3), pct_time=round(100 * ns / total_ns, 2))
            if hist is not None:
                row["histogram_log2_ns"] = {str(1 << b): int(n) for b, n in enumerate(hist[nr].tolist()) if n}
        errs = {errno_name(en): n for (n_nr, en), n in sorted(errnos.items()) if n_nr == nr}
        if errs:
            row["errnos"] = errs
        rows.append(row)
    rows.sort(key=lambda r: (-r.get("time_s", 0), -r["calls"], r["name"]))
    return rows


def _by_category(rows: list[dict[str, Any]], latency: bool) -> dict[str, dict[str, Any]]:
    cats: dict[str, dict[str, Any]] = {c: {"calls": 0, "errors": 0} | ({"time_s": 0.0} if latency else {})
                                       for c in CATEGORY_NAMES}
    for r in rows:
        d = cats[r["category"]]
        d["calls"] += r["calls"]
        d["errors"] += r["errors"]
        if latency:
            d["time_s"] += r["time_s"]
    return cats


def _proc_doc(c: Collector, p: Proc, t0_ns: int, latency: bool) -> dict[str, Any]:
    st = c.sensor.stats_fields
    doc: dict[str, Any] = {"pid": p.pid, "ppid": p.ppid, "comm": p.comm, "exe": p.filename, "argv": p.argv,
                           "start_s": round(max(p.start_ns - t0_ns, 0) / NS, 6),
                           "end_s": round((p.end_ns - t0_ns) / NS, 6) if p.end_ns else None,
                           **wait_fields(p.status), "running": p.alive}
    if p.syscalls is not None:
        calls = p.syscalls[:, 0]
        doc["syscalls"] = int(calls.sum())
        doc["syscall_errors"] = int(p.syscalls[:, 1].sum())
        top = np.argsort(-calls.astype(np.int64), kind="stable")[:5]
        doc["top_syscalls"] = [{"name": syscall_name(int(n), len(calls)), "calls": int(calls[n])}
                               for n in top if calls[n]]
        if latency:
            doc["syscall_time_s"] = int(p.syscalls[:, 2].sum()) / NS
    if p.stats is not None:
        off = p.stats[st["off_ns"]]
        doc["on_cpu_s"] = (int(p.stats[st["oncpu_ns"]][0]) + p.live_oncpu_ns) / NS
        doc["off_cpu_s"] = {"runnable": int(off[0]) / NS, "io_wait": int(off[1]) / NS, "sleep": int(off[2]) / NS}
        doc["threads_created"] = int(p.stats[st["threads"]][0])
    doc.update(peak_rss_bytes=p.peak_rss, read_bytes=p.cum["read_bytes"], write_bytes=p.cum["write_bytes"],
               read_chars=p.cum["rchar"], write_chars=p.cum["wchar"], net_tx_bytes=p.cum["net_tx"],
               net_rx_bytes=p.cum["net_rx"], minor_faults=p.cum["minflt"], major_faults=p.cum["majflt"])
    return doc


def build(c: Collector, *, command: list[str] | None, attach_pid: int | None, t0_ns: int, t1_ns: int,
          start_epoch: float, latency: bool, samples: list[dict[str, Any]], peak_rss: int,
          status: int | None, lost: int, stopped_by: str | None = None,
          end_signals: list[str] | None = None) -> dict[str, Any]:
    """The summary document; `c` must be finished (every slot read)."""
    s = c.sensor
    f = s.stats_fields
    ts = c.tree_stats
    hist = s.read_histogram() if latency else None
    rows = syscall_table(c.tree_sys, hist, s.read_errnos(), latency)
    cats = _by_category(rows, latency)
    wall = max(t1_ns - t0_ns, 1) / NS
    total_calls = sum(r["calls"] for r in rows)

    def v(name: str) -> int:
        return int(ts[f[name]][0])

    off = ts[f["off_ns"]]
    blocked = ts[f["blocked_ns"]]
    on_cpu = (v("oncpu_ns") + sum(p.live_oncpu_ns for p in c.procs.values())) / NS
    # the kernel's split of the exited; /proc's of those still running at the end
    ticks_u = v("utime_ns") + sum(p.live_utime_ns for p in c.procs.values())
    ticks_s = v("stime_ns") + sum(p.live_stime_ns for p in c.procs.values())
    # the kernel's own split of exact runtime: ticks give the ratio
    user = on_cpu * ticks_u / (ticks_u + ticks_s) if ticks_u + ticks_s else 0.0
    blocked_s = {name: int(blocked[i]) / NS for i, name in enumerate(CATEGORY_NAMES) if blocked[i]}
    if blocked[-1]:
        blocked_s["no_syscall"] = int(blocked[-1]) / NS
    procs = sorted(c.procs.values(), key=lambda p: p.start_ns)
    everyone = procs + ([c.overflow] if c.overflow else [])
    tree_peak = max([peak_rss] + [p.peak_rss for p in procs])
    minflt, majflt = (sum(p.cum[k] for p in everyone) for k in ("minflt", "majflt"))
    net_tx, net_rx = v("net_tx"), v("net_rx")
    budget = TimeBudget(
        wall_s=wall, on_cpu_s=on_cpu, user_s=user, system_s=on_cpu - user,
        runnable_s=int(off[0]) / NS, io_wait_s=int(off[1]) / NS, sleep_s=int(off[2]) / NS,
        blocked_s=blocked_s, syscall_s={k: d["time_s"] for k, d in cats.items()} if latency else None,
        calls={k: d["calls"] for k, d in cats.items()}, faults=minflt + majflt,
        net_bytes=net_tx + net_rx, peak_rss=tree_peak)
    listed = procs[:MAX_PROCESSES]
    doc: dict[str, Any] = {
        "bpfwatch": __version__, "kind": "profile", "arch": platform.machine(),
        "command": command, "attach_pid": attach_pid, "pid": c.root.pid,
        "start": start_epoch, "duration_s": round(wall, 6), **wait_fields(status),
        "stopped_by": stopped_by, "signals_sent": end_signals or [], "latency_measured": latency,
        "syscalls": {
            "total": total_calls, "errors": sum(r["errors"] for r in rows),
            "rate_per_s": round(total_calls / wall, 2),
            **({"time_s": sum(r["time_s"] for r in rows),
                "child_wait_s": sum(r["time_s"] for r in rows if r["name"] in syscalls.CHILD_WAIT)}
               if latency else {}),
            "by_category": cats,
            "top": [{"name": r["name"], "calls": r["calls"]} for r in sorted(rows, key=lambda r: -r["calls"])[:TOP]],
            "table": rows,
        },
        "time": {
            "wall_s": round(wall, 6), "on_cpu_s": on_cpu, "user_s": user, "system_s": on_cpu - user,
            "off_cpu_s": {"runnable": budget.runnable_s, "io_wait": budget.io_wait_s, "sleep": budget.sleep_s},
            "blocked_by_category_s": blocked_s,
        },
        "resources": {
            "peak_rss_bytes": tree_peak, "processes": len(procs) + c.overflow_procs,
            "threads_created": v("threads"), "read_bytes": sum(p.cum["read_bytes"] for p in everyone),
            "write_bytes": sum(p.cum["write_bytes"] for p in everyone),
            "read_chars": sum(p.cum["rchar"] for p in everyone), "write_chars": sum(p.cum["wchar"] for p in everyone),
            "net_tx_bytes": net_tx, "net_rx_bytes": net_rx, "minor_faults": minflt, "major_faults": majflt,
            "voluntary_switches": v("nvcsw"), "involuntary_switches": v("nivcsw"),
            "net_bytes_measured": s.net_exact,
        },
        "behavior": classify(budget),
        "processes": [_proc_doc(c, p, t0_ns, latency) for p in listed]
        + ([_proc_doc(c, c.overflow, t0_ns, latency)] if c.overflow else []),
        "processes_omitted": max(len(procs) - len(listed), 0),
        "overflow_processes": c.overflow_procs,
        "still_running": [p.pid for p in procs if p.alive and p.pid != c.root.pid],
        "lost_events": lost,
        "timeline": samples,
    }
    return doc
