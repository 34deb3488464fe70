"""CPU the consumer spends at a steady 100k events/s, with wake-ups on every
record and with BPF-side wake-up batching (bounded delay)."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import time

from bpfwatch.ringbuf import Poller
from bpfwatch.sensors.base import SensorOptions
from bpfwatch.sensors.loadgen import LoadgenSensor
from common import median, save

GETPPID = {"x86_64": 110, "aarch64": 173}[platform.machine()]
RATE = 100_000
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))

# paced producer: RATE/100 getppid calls every 10 ms
PRODUCER = f"""
import os, sys, time
sys.stdin.readline()
per_tick, tick = {RATE // 100}, 0.01
end = time.monotonic() + {SECONDS}
nxt = time.monotonic()
while time.monotonic() < end:
    for _ in range(per_tick):
        os.getppid()
    nxt += tick
    d = nxt - time.monotonic()
    if d > 0:
        time.sleep(d)
"""


def measure(wakeup_bytes: int, max_delay: float) -> dict[str, float]:
    p = subprocess.Popen([sys.executable, "-c", PRODUCER], stdin=subprocess.PIPE)
    with LoadgenSensor(p.pid, GETPPID, 1, SensorOptions(wakeup_bytes=wakeup_bytes), keep=False) as s:
        poller = Poller()
        poller.add(s.ring)
        p.stdin.write(b"go\n")
        p.stdin.flush()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        wakeups = 0
        while p.poll() is None:
            if poller.wait(max_delay):
                wakeups += 1
            s.drain([])
        s.drain([])
        dt = time.monotonic() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        poller.close()
        lost = s.lost()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"events": s.count, "lost": lost, "rate_per_s": round(s.count / dt),
            "cpu_pct_of_core": round(100 * cpu / dt, 2), "wakeups_per_s": round(wakeups / dt)}


def main() -> None:
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    every = [measure(0, 0.1) for _ in range(runs)]
    batched = [measure(64 << 10, 0.01) for _ in range(runs)]
    save("consumer_cpu", {
        "target_rate": RATE, "seconds": SECONDS,
        "wake_every_record": every,
        "wake_every_record_cpu_median": median([x["cpu_pct_of_core"] for x in every]),
        "batched_64k_10ms": batched,
        "batched_cpu_median": median([x["cpu_pct_of_core"] for x in batched]),
        "target_cpu_pct": 3.0,
    })


if __name__ == "__main__":
    main()
