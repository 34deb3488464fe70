"""Helpers shared by the benchmarks: statistics, peers, result files."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
BPFWATCH = [sys.executable, "-m", "bpfwatch.cli.main"]


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ensure_tracefs() -> bool:
    """bpftrace's tracepoints need tracefs; mount it if missing (as doctor advises)."""
    if os.path.ismount("/sys/kernel/tracing"):
        return True
    return subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"],
                          capture_output=True).returncode == 0


def bpftrace() -> str | None:
    return shutil.which("bpftrace")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int, own: bool = True, children: bool = True) -> float:
    """User + system CPU of a process: its own, and (with `children`) that of
    its children, such as the agent's segment compressor, which is the
    agent's cost too (0.8% of a core at the 20k events/s load): the ones it
    has reaped, and the ones still running, each with its own children."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = (int(fields[11]) + int(fields[12]) if own else 0) + (int(fields[13]) + int(fields[14]) if children else 0)
    total = ticks / os.sysconf("SC_CLK_TCK")
    if children:
        for child in live_children(pid):
            with contextlib.suppress(OSError, IndexError, ValueError):  # gone: counted once reaped
                total += cpu_seconds(child)
    return total


def live_children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                kids += map(int, f.read().split())
    return kids


def save(name: str, result: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    result = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "kernel": os.uname().release,
              **result}
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
