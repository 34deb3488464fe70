"""Events per second one consumer keeps up with, with no event lost: a paced
producer at rising rates, the tracer writing JSON lines to a file, and the
kernel's loss count read at the end (`bpfwatch: N events, M lost`).

- `file.open` alone: open+close of one file on tmpfs (one event per op);
- every sensor on: open+write+close (file.open and file.io: two events per op).

The producer is a small C program (bench/paced_open.c, built here with the
system's cc): a Python loop topped out near 240k opens/s with the sensor on,
below the rates worth offering. On a 2-CPU machine it and the tracer share
the CPUs. Each level reports the rate offered, the rate achieved, and events
and losses.

    python bench/sustained.py [--seconds 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import BPFWATCH, save

WORK = Path(os.environ.get("BENCH_DIR", "/dev/shm")) / "bpfwatch-bench"

def producer() -> Path:
    """bench/paced_open.c, compiled once per source change."""
    src = Path(__file__).resolve().parent / "paced_open.c"
    exe = WORK / "paced_open"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        cc = shutil.which("clang") or shutil.which("cc") or "clang"  # clang: make installs it
        subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    line = proc.stderr.readline()
    if "ready" not in line:
        raise RuntimeError(f"tracer did not start: {line.strip()}")


def level(types: list[str], rate: int, seconds: float, write: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(dir=WORK))
    out, target = work / "events.jsonl", work / "f"
    proc = subprocess.Popen([*BPFWATCH, "trace", *[a for t in types for a in ("-t", t)], "--format", "json",
                             "-o", str(out)], stderr=subprocess.PIPE, text=True)
    try:
        _wait_ready(proc)
        gen = subprocess.run([str(producer()), str(target), str(rate), str(seconds), "1" if write else "0"],
                             check=True, capture_output=True, text=True)
        achieved = float(gen.stdout.strip())
        time.sleep(1.0)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    words = (err.strip().splitlines() or [""])[-1].replace(",", "").split()
    events, lost = (int(words[1]), int(words[3])) if len(words) >= 4 else (0, -1)
    shutil.rmtree(work)
    per_op = 2 if write else 1
    return {"offered_ops_per_s": rate, "achieved_ops_per_s": round(achieved), "events": events, "lost": lost,
            "events_per_s": round(achieved * per_op) if lost == 0 else None}


def sweep(name: str, types: list[str], rates: list[int], seconds: float, write: bool) -> dict[str, Any]:
    levels = []
    for rate in rates:
        x = level(types, rate, seconds, write)
        levels.append(x)
        print(f"{name}: offered {rate}/s achieved {x['achieved_ops_per_s']}/s events {x['events']} "
              f"lost {x['lost']}", flush=True)
        if x["lost"] > 0 and len([y for y in levels if y["lost"]]) >= 2:
            break  # two lossy levels in a row: past the limit
    clean = [x for x in levels if x["lost"] == 0]
    return {"levels": levels, "max_events_per_s_without_loss": max((x["events_per_s"] for x in clean), default=0)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    result = {
        "file_open": sweep("file.open", ["file.open"], [100_000, 150_000, 200_000, 250_000, 300_000, 350_000, 400_000],
                           args.seconds, write=False),
        "all_sensors": sweep("all sensors", [], [50_000, 75_000, 100_000, 125_000, 150_000, 160_000, 175_000, 200_000],
                             args.seconds, write=True),
        "targets": {"file_open_events_per_s": 250_000, "all_sensors_events_per_s": 300_000},
    }
    save("sustained", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
