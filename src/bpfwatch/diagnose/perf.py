"""The performance capability: processes sampled from /proc (psutil) every
interval while a diagnostic trace runs, plus the host's CPU, memory and load."""

from __future__ import annotations

import fnmatch
import threading
import time
from typing import Any

import psutil

TOP_N = 10  # without a pid/comm filter: the busiest processes of each interval


class PerfSampler:
    def __init__(self, interval: float = 1.0, pid: int | None = None, comm: str | None = None,
                 exclude: set[int] | None = None) -> None:
        self.interval = interval
        self.pid = pid
        self.comm = comm
        self.exclude = exclude or set()
        self.samples: list[dict[str, Any]] = []
        self._prev: dict[int, tuple[float, float, int, int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bw-perf", daemon=True)

    def start(self) -> None:
        psutil.cpu_percent(None)
        self._scan(time.monotonic(), record=False)
        self._thread.start()

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.samples

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._scan(time.monotonic(), record=True)

    def _selected(self) -> list[psutil.Process]:
        if self.pid is not None:
            try:
                root = psutil.Process(self.pid)
                return [root, *root.children(recursive=True)]
            except psutil.Error:
                return []
        procs = []
        for p in psutil.process_iter(["name"]):
            if p.pid in self.exclude:
                continue
            if self.comm is None or fnmatch.fnmatchcase(p.info["name"] or "", self.comm):
                procs.append(p)
        return procs

    def _scan(self, now: float, record: bool) -> None:
        rows = []
        seen = {}
        for p in self._selected():
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    io = p.io_counters()
                    ctx = p.num_ctx_switches()
                    cpu = t.user + t.system
                    mem = p.memory_info()
                    row = {"pid": p.pid, "comm": p.name(), "uid": p.uids().real, "threads": p.num_threads(),
                           "rss_bytes": mem.rss, "vms_bytes": mem.vms}
            except psutil.Error:
                continue
            cur = (now, cpu, io.read_bytes, io.write_bytes, ctx.voluntary + ctx.involuntary)
            seen[p.pid] = cur
            prev = self._prev.get(p.pid)
            if prev is None:
                continue
            dt = max(now - prev[0], 1e-6)
            row.update(cpu_percent=round(100 * (cpu - prev[1]) / dt, 1),
                       read_bytes=max(cur[2] - prev[2], 0), write_bytes=max(cur[3] - prev[3], 0),
                       ctx_switches=max(cur[4] - prev[4], 0), interval_s=round(dt, 3))
            rows.append(row)
        self._prev = seen
        if not record:
            return
        if self.pid is None and self.comm is None:
            rows = sorted(rows, key=lambda r: -r["cpu_percent"])[:TOP_N]
        ts = time.time_ns()
        vm = psutil.virtual_memory()
        load = psutil.getloadavg()
        self.samples.append({"ts": ts, "type": "perf.host", "pid": 0, "comm": "", "uid": 0,
                             "data": {"cpu_percent": psutil.cpu_percent(None), "mem_total_bytes": vm.total,
                                      "mem_available_bytes": vm.available, "load1": load[0], "load5": load[1],
                                      "load15": load[2], "processes": len(psutil.pids())}})
        for r in rows:
            pid, comm, uid = r.pop("pid"), r.pop("comm"), r.pop("uid")
            self.samples.append({"ts": ts, "type": "perf.sample", "pid": pid, "comm": comm, "uid": uid, "data": r})
