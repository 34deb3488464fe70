"""What tracing costs every syscall of the host, on a syscall storm (dd with
1-byte blocks: ~4M read/write syscalls), with its floor in the same run.

Side by side, alternating, medians of 5:
- untraced;
- the floor: one empty `tp_btf` program on `sys_enter` and one on `sys_exit`
  (bench/floor.py), the least any syscall tracer attaches here;
- the floor plus a second empty program on `sys_exit`: what each further
  program on the hook costs (why sensors that share a hook are chained);
- `bpfwatch trace -t security` (watched syscalls kept at entry, judged at exit);
- `bpfwatch trace` with its default sensors, and with every sensor;
- bpftrace hooking `raw_syscalls:sys_enter/sys_exit` with the security
  sensor's syscall filter in a map.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from common import BPFWATCH, bpftrace, ensure_tracefs, median, save
from floor import attached

ROUNDS = 5
SYSCALLS = 4_000_000
DD = ["dd", "if=/dev/zero", "of=/dev/null", "bs=1", f"count={SYSCALLS // 2}", "status=none"]
# the syscalls the security sensor watches (x86_64 numbers): kept at entry, judged at exit
WATCHED = [105, 106, 113, 114, 117, 119, 122, 123, 116, 126, 101, 311, 321, 165, 429, 166, 308, 272, 175, 313,
           176, 59, 322]
BT = ("BEGIN { " + " ".join(f"@w[{n}] = 1;" for n in WATCHED) + " }\n"
      "tracepoint:raw_syscalls:sys_enter /@w[args->id]/ { @start[tid] = args->id; }\n"
      "tracepoint:raw_syscalls:sys_exit /@start[tid]/ { printf(\"%d %s %d %d\\n\", pid, comm, @start[tid], "
      "args->ret); delete(@start[tid]); }\n")
EVERY = ["-t", "process", "-t", "file", "-t", "network", "-t", "dns", "-t", "security"]


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t


class Tracer(AbstractContextManager["Tracer"]):
    """A tracing command, started before a run (once its programs are
    attached) and stopped with SIGINT after it."""

    def __init__(self, cmd: list[str], ready: Callable[[subprocess.Popen[str]], bool], stderr: int = subprocess.DEVNULL
                 ) -> None:
        self.cmd, self.ready, self.stderr = cmd, ready, stderr

    def __enter__(self) -> Tracer:
        self.p = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.ready(self.p):
            time.sleep(0.05)
        time.sleep(0.5)
        if self.p.poll() is not None:
            raise RuntimeError(f"{self.cmd[0]} exited ({self.p.returncode}) before the run")
        # drain its output (bpftrace prints a line per watched call) so it never blocks
        threading.Thread(target=lambda: self.p.stdout and self.p.stdout.read(), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.p.send_signal(2)
        self.p.wait(timeout=30)


def bpfwatch(*args: str) -> Callable[[], AbstractContextManager[object]]:
    cmd = [*BPFWATCH, "trace", *args, "--format", "json", "-o", "/dev/null"]

    def ready(p: subprocess.Popen[str]) -> bool:  # "bpfwatch: ready" once attached (loaded is not enough)
        line = p.stderr.readline() if p.stderr else ""
        return "ready" in line or not line
    return lambda: Tracer(cmd, ready, stderr=subprocess.PIPE)


def bpftrace_tool(bt: str) -> Callable[[], AbstractContextManager[object]]:
    def ready(p: subprocess.Popen[str]) -> bool:  # prints "Attaching N probes..." once attached
        line = p.stdout.readline() if p.stdout else ""
        return "Attaching" in line or not line
    return lambda: Tracer([bt, "-e", BT], ready)


def main() -> int:
    tools: dict[str, Callable[[], AbstractContextManager[object]]] = {
        "floor (empty sys_enter + sys_exit)": lambda: attached("enter,exit"),
        "floor + a 2nd empty sys_exit": lambda: attached("enter,exit,exit2"),
        "bpfwatch trace -t security": bpfwatch("-t", "security"),
        "bpfwatch trace (default sensors)": bpfwatch(),
        "bpfwatch trace (every sensor)": bpfwatch(*EVERY),
    }
    bt = bpftrace()
    if bt and ensure_tracefs():
        tools["bpftrace (security's filter)"] = bpftrace_tool(bt)
    runs: dict[str, list[float]] = {"untraced": [], **{name: [] for name in tools}}
    for _ in range(ROUNDS):
        runs["untraced"].append(timed(DD))
        for name, tool in tools.items():
            with tool():
                runs[name].append(timed(DD))
    base = median(runs["untraced"])
    floor = median(runs["floor (empty sys_enter + sys_exit)"])
    result = {name: {"median_s": median(v), "over_untraced": median(v) / base,
                     "ns_per_syscall": 1e9 * (median(v) - base) / SYSCALLS,
                     "ns_over_floor": 1e9 * (median(v) - floor) / SYSCALLS, "runs": v}
              for name, v in runs.items()}
    print(f"dd, 1-byte blocks ({SYSCALLS / 1e6:.0f}M syscalls), {ROUNDS} alternating rounds, medians:")
    for name, r in result.items():
        print(f"  {name:36s} {r['median_s']:.3f} s  {r['over_untraced']:.2f}x  "
              f"+{r['ns_per_syscall']:.0f} ns/syscall ({r['ns_over_floor']:+.0f} over the floor)")
    save("syscall_overhead", {"rounds": ROUNDS, "syscalls": SYSCALLS, "results": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
