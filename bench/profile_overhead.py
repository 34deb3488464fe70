"""`bpfwatch run` against the syscall profilers users compare it with:
slowdown of a syscall-bound loop (dd bs=1) and of a mixed pipeline, runs
alternating between tools in each round; then how exactly each one counts
the syscalls of the same dd run, against strace.

strace and perf trace cost hundreds of microseconds per syscall here, so they
run on a workload 50 times smaller (with its own untraced baseline).
denet is installed from PyPI into bench/.denet-venv on first use.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from common import BPFWATCH, bpftrace, ensure_tracefs, median, save

N = int(os.environ.get("BENCH_SYSCALLS", "1000000"))   # dd iterations (two syscalls each)
SMALL = max(N // 50, 1000)                             # for strace and perf trace
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
DENET_VENV = Path(__file__).resolve().parent / ".denet-venv"
TMP = Path(tempfile.mkdtemp(prefix="bw-prof-bench-"))


def dd(n: int) -> list[str]:
    return ["dd", "if=/dev/zero", "of=/dev/null", "bs=1", f"count={n}"]


MIXED = ["sh", "-c", "seq 1 1500000 | gzip -1 | gzip -d | sort -n | md5sum >/dev/null"]


def timed(cmd: list[str]) -> list[str]:
    """cmd inside a shell that prints its own elapsed ns: the workload's time,
    without each tool's start-up and report."""
    inner = shlex.join(cmd)
    return ["/bin/sh", "-c", f"S=$(date +%s%N); {inner} 2>/dev/null; E=$(date +%s%N); echo BENCH_NS=$((E-S)) >&2"]


def denet_python() -> str | None:
    py = DENET_VENV / "bin" / "python"
    if not py.exists():
        r = subprocess.run([sys.executable, "-m", "venv", str(DENET_VENV)], capture_output=True)
        if r.returncode == 0:
            r = subprocess.run([str(py), "-m", "pip", "install", "-q", "denet==0.10.3"], capture_output=True)
        if r.returncode != 0:
            return None
    return str(py)


DENET_RUN = """
import json, sys, denet
code, mon = denet.execute_with_monitoring(sys.argv[2:], enable_ebpf=True, quiet=True,
                                          stderr_file=sys.argv[1] + ".err", base_interval_ms=100)
samples = [json.loads(s) if isinstance(s, str) else s for s in mon.get_samples()]
total = 0
for s in samples:
    e = (s.get("aggregated") or s).get("ebpf") or {}
    total = max(total, (e.get("syscalls") or {}).get("total", 0))
json.dump({"total": total}, open(sys.argv[1], "w"))
"""

BT_COUNT = "tracepoint:raw_syscalls:sys_enter { @[pid, args->id] = count(); }"
BT_EXACT = "tracepoint:raw_syscalls:sys_exit /pid == cpid/ { @n = count(); }"


def tools(small: bool) -> dict[str, list[str]]:
    """Tool name -> argv prefix (the command follows)."""
    out = TMP / "out"
    floor = [sys.executable, str(Path(__file__).resolve().parent / "floor.py")]
    t = {"untraced": [],
         # empty programs where run hooks: the kernel's own cost, which no tracer goes below
         "floor exit": [*floor, "exit", "--"],
         # ... and counting each call in a per-CPU cell: the least any syscall counter does
         "floor exit, count": [*floor, "exit_count", "--"],
         "floor enter+exit": [*floor, "enter,exit", "--"],
         # ... each reading the clock once: what timing a syscall costs at the least
         "floor enter+exit, clock": [*floor, "enter_ts,exit_ts", "--"],
         "bpfwatch count": [*BPFWATCH, "run", "-q", "--count-only", "--"],
         "bpfwatch latency": [*BPFWATCH, "run", "-q", "--"]}
    if bpftrace():
        t["bpftrace count"] = ["bpftrace", "-e", BT_COUNT]  # runs beside the command, system-wide
    if (py := denet_python()) is not None:
        t["denet ebpf"] = [py, "-c", DENET_RUN, str(out)]
    if small:
        t["strace -f -c"] = ["strace", "-f", "-c", "-o", str(out)]
        t["perf trace -s"] = ["perf", "trace", "-s", "-o", str(out), "--"]
    return t


def run_timed(prefix: list[str], cmd: list[str]) -> float:
    wrapped = timed(cmd)
    tracer = None
    if prefix and prefix[0] == "bpftrace":
        tracer = subprocess.Popen(prefix, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert tracer.stdout is not None
        tracer.stdout.readline()  # "Attaching 1 probe...": counting from here
        prefix = []
    try:
        r = subprocess.run([*prefix, *wrapped], capture_output=True, text=True, timeout=3600)
    finally:
        if tracer is not None:
            tracer.send_signal(signal.SIGINT)
            tracer.communicate(timeout=120)
    text = r.stderr
    err = TMP / "out.err"
    if err.exists():
        text += err.read_text()
        err.unlink()
    m = re.search(r"BENCH_NS=(\d+)", text)
    if not m:
        raise RuntimeError(f"{prefix[:4]}...: no timing in output (exit {r.returncode}): {text[-400:]}")
    return int(m.group(1)) / 1e9


def slowdowns(cmd: list[str], small: bool) -> dict[str, dict[str, float]]:
    ts = tools(small)
    times: dict[str, list[float]] = {k: [] for k in ts}
    for _ in range(ROUNDS):
        for name, prefix in ts.items():
            times[name].append(run_timed(prefix, cmd))
    base = median(times["untraced"])
    out = {k: {"median_s": round(median(v), 4), "ratio": round(median(v) / base, 3)} for k, v in times.items()}
    # each mode over the floor of the hooks it uses
    out["bpfwatch count"]["over_floor"] = round(median(times["bpfwatch count"]) / median(times["floor exit"]), 3)
    out["bpfwatch count"]["over_count_floor"] = round(median(times["bpfwatch count"]) /
                                                      median(times["floor exit, count"]), 3)
    out["bpfwatch latency"]["over_floor"] = round(median(times["bpfwatch latency"]) /
                                                  median(times["floor enter+exit"]), 3)
    out["bpfwatch latency"]["over_clock_floor"] = round(median(times["bpfwatch latency"]) /
                                                        median(times["floor enter+exit, clock"]), 3)
    return out


def accuracy(n: int) -> dict[str, dict[str, float]]:
    """Syscalls of one dd run as each tool reports them, against strace."""
    cmd = dd(n)
    out = TMP / "acc"
    counts: dict[str, int] = {}
    r = subprocess.run(["strace", "-f", "-c", "-o", str(out), *cmd], capture_output=True, text=True)
    m = re.search(r"^\s*100\.00\s+\S+\s+\d+\s+(\d+)", out.read_text(), re.M)
    counts["strace -f -c"] = int(m.group(1)) if m else 0
    r = subprocess.run([*BPFWATCH, "run", "-q", "--json", str(out), "--", *cmd], capture_output=True, text=True)
    doc = json.loads(out.read_text())
    # strace counts a call when it returns: exit_group never does
    counts["bpfwatch"] = doc["syscalls"]["total"] - sum(
        row["calls"] for row in doc["syscalls"]["table"] if row["name"] in ("exit", "exit_group"))
    r = subprocess.run(["perf", "trace", "-s", "-o", str(out), "--", *cmd], capture_output=True, text=True)
    counts["perf trace -s"] = sum(int(x) for x in re.findall(r"^\s+[a-z_0-9]+\s+(\d+)\s+\d+\s", out.read_text(), re.M))
    if bpftrace():
        exe = shutil.which(cmd[0]) or cmd[0]  # bpftrace wants one unambiguous path
        r = subprocess.run(["bpftrace", "-q", "-e", BT_EXACT, "-c", " ".join([os.path.realpath(exe), *cmd[1:]])],
                           capture_output=True, text=True)
        m = re.search(r"@n: (\d+)", r.stdout)
        counts["bpftrace count"] = int(m.group(1)) if m else 0
    if (py := denet_python()) is not None:
        subprocess.run([py, "-c", DENET_RUN, str(out), *cmd], capture_output=True, text=True, timeout=600)
        counts["denet ebpf"] = json.loads(out.read_text())["total"]
    ref = counts["strace -f -c"]
    return {k: {"syscalls": v, "vs_strace": round(v / ref, 4) if ref else None} for k, v in counts.items()}


def main() -> None:
    if not ensure_tracefs():
        print("tracefs cannot be mounted: bpftrace, perf and denet will fail", file=sys.stderr)
    result = {
        "rounds": ROUNDS, "dd_iterations": N, "dd_iterations_small": SMALL,
        "pure_loop": slowdowns(dd(N), small=False),
        "pure_loop_small": slowdowns(dd(SMALL), small=True),
        "mixed": slowdowns(MIXED, small=False),
        "count_accuracy_dd": accuracy(SMALL),
    }
    save("profile_overhead", result)


if __name__ == "__main__":
    main()
