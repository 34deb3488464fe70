"""Exec detection: kernel timestamp to Python receipt over 1000 execs, with the
consumer sharing a CPU with the new processes and on its own CPU; side by side,
how many of 1000 short-lived processes psutil polling sees at 100 ms and 1 s."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import psutil

import bpfwatch
from common import median, pct, save

N = 1000


def spawn_many(n: int, cpu: int | None = None) -> subprocess.Popen:
    """A separate shell that execs /bin/true n times in a row (not a thread of
    ours: that would make the consumer fight its own GIL)."""
    return subprocess.Popen(["/bin/sh", "-c", f"for i in $(seq {n}); do /bin/true $i; done"],
                            preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None)


def latency(separate_cpus: bool) -> dict[str, float]:
    ncpu = os.cpu_count() or 1
    if separate_cpus and ncpu < 2:
        return {}
    before = os.sched_getaffinity(0)
    if separate_cpus:
        os.sched_setaffinity(0, {0})
    lat: list[float] = []
    try:
        with bpfwatch.Monitor(types=["process.exec"], comm="true", max_delay=0.01) as m:
            shell = spawn_many(N, cpu=1 if separate_cpus else None)
            offset = m.clock.to_epoch_ns(0)
            while len(lat) < N:
                evs = m.poll(0.05)
                now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
                lat.extend((now - (e["ts"] - offset)) / 1e6 for e in evs)
                if shell.poll() is not None and not evs:
                    break
            shell.wait()
            lost = m.lost_total
    finally:
        os.sched_setaffinity(0, before)
    return {"events": len(lat), "lost": lost, "median_ms": round(median(lat), 3),
            "p99_ms": round(pct(lat, 99), 3), "max_ms": round(max(lat), 3)}


def polling(interval: float) -> dict[str, float]:
    seen: set[int] = set()
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            seen.update(psutil.pids())
            stop.wait(interval)

    t = threading.Thread(target=poll)
    t.start()
    # the pids of the 1000 processes come from the kernel's own record
    with bpfwatch.Monitor(types=["process.exec"], comm="true", max_delay=0.05) as m:
        shell = spawn_many(N)
        pids: set[int] = set()
        while shell.poll() is None or len(pids) < N:
            evs = m.poll(0.1)
            pids.update(e["pid"] for e in evs)
            if shell.poll() is not None and not evs:
                break
    stop.set()
    t.join()
    hit = len(pids & seen)
    return {"interval_s": interval, "seen": hit, "missed_pct": round(100 * (N - hit) / N, 1)}


def main() -> None:
    save("exec_latency", {
        "execs": N,
        "bpfwatch_shared_cpu": latency(False),
        "bpfwatch_separate_cpus": latency(True),
        "psutil_100ms": polling(0.1),
        "psutil_1s": polling(1.0),
        "targets": {"median_ms": 0.5, "p99_ms": 2.0},
    })


if __name__ == "__main__":
    main()
