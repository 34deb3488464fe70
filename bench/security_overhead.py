"""Cost of the security sensor on a syscall-heavy workload (dd with 1-byte
blocks: ~4M read/write syscalls), against untraced runs and side by side with
bpftrace hooking the same tracepoints with the same in-kernel syscall filter.
Runs alternate; medians and overhead ratios are reported."""

from __future__ import annotations

import subprocess
import sys
import time

from common import BPFWATCH, bpftrace, ensure_tracefs, median, save

ROUNDS = 5
DD = ["dd", "if=/dev/zero", "of=/dev/null", "bs=1", "count=2000000", "status=none"]
# the syscalls the security sensor watches (x86_64 numbers): kept at entry, judged at exit
WATCHED = [105, 106, 113, 114, 117, 119, 122, 123, 116, 126, 101, 311, 321, 165, 429, 166, 308, 272, 175, 313,
           176, 59, 322]
BT = ("BEGIN { " + " ".join(f"@w[{n}] = 1;" for n in WATCHED) + " }\n"
      "tracepoint:raw_syscalls:sys_enter /@w[args->id]/ { @start[tid] = args->id; }\n"
      "tracepoint:raw_syscalls:sys_exit /@start[tid]/ { printf(\"%d %s %d %d\\n\", pid, comm, @start[tid], "
      "args->ret); delete(@start[tid]); }\n")


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t


def loaded(name: str) -> bool:
    out = subprocess.run(["bpftool", "prog", "show"], capture_output=True, text=True).stdout
    return f" name {name} " in out


def start(tool: str, cmd: list[str]) -> subprocess.Popen[str]:
    """Starts a tracer and returns once its programs are attached."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 60
    if tool == "bpftrace":  # prints "Attaching N probes..." once they are attached
        while time.monotonic() < deadline:
            line = p.stdout.readline() if p.stdout else ""
            if "Attaching" in line or not line:
                break
    else:
        while time.monotonic() < deadline and not loaded("bw_sec_exit"):
            time.sleep(0.05)
    time.sleep(0.5)
    if p.poll() is not None:
        raise RuntimeError(f"{tool} exited ({p.returncode}) before the run")
    return p


def stop(p: subprocess.Popen[str]) -> None:
    p.send_signal(2)
    p.wait(timeout=30)


def main() -> int:
    runs: dict[str, list[float]] = {"untraced": [], "bpfwatch": [], "bpftrace": []}
    tools = {"bpfwatch": [*BPFWATCH, "trace", "-t", "security", "--format", "json", "-o", "/dev/null"]}
    bt = bpftrace()
    if bt and ensure_tracefs():
        tools["bpftrace"] = [bt, "-e", BT]
    else:
        del runs["bpftrace"]
    for _ in range(ROUNDS):
        runs["untraced"].append(timed(DD))
        for name, cmd in tools.items():
            p = start(name, cmd)
            try:
                runs[name].append(timed(DD))
            finally:
                stop(p)
    base = median(runs["untraced"])
    result = {name: {"median_s": median(v), "overhead_pct": 100 * (median(v) / base - 1), "runs": v}
              for name, v in runs.items()}
    print(f"dd, 1-byte blocks (~4M syscalls), {ROUNDS} alternating rounds, medians:")
    for name, r in result.items():
        print(f"  {name:9s} {r['median_s']:.3f} s  (+{r['overhead_pct']:.1f}%)")
    per_call = {n: 1e9 * (r["median_s"] - base) / 4_000_000 for n, r in result.items() if n != "untraced"}
    print("  cost per syscall: " + ", ".join(f"{n} {ns:.0f} ns" for n, ns in per_call.items()))
    save("security_overhead", {"rounds": ROUNDS, "results": result, "ns_per_syscall": per_call})
    return 0


if __name__ == "__main__":
    sys.exit(main())
