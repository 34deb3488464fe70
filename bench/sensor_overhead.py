"""Overhead of the file and network sensors on heavy workloads (wall time
against untraced, alternating runs), side by side with bpftrace doing the
equivalent (events/s sustained: bench/sustained.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import floor
from common import BPFWATCH, bpftrace, ensure_tracefs, median, save

# tmpfs: the untar is then bound by CPU (what tracing costs), not by the disk
WORK = Path(os.environ.get("BENCH_DIR", "/dev/shm")) / "bpfwatch-bench"
FILES = int(os.environ.get("BENCH_FILES", "20000"))
CONNS = int(os.environ.get("BENCH_CONNS", "3000"))

BT_FILE = r"""
tracepoint:syscalls:sys_enter_openat { @fn[tid] = args->filename; }
tracepoint:syscalls:sys_exit_openat /@fn[tid]/ {
  printf("open %d %s %s %d\n", pid, comm, str(@fn[tid]), args->ret); delete(@fn[tid]); }
tracepoint:syscalls:sys_exit_read, tracepoint:syscalls:sys_exit_write /args->ret > 0/ {
  @io[pid, comm] = sum(args->ret); }
tracepoint:syscalls:sys_enter_unlinkat, tracepoint:syscalls:sys_enter_mkdirat {
  printf("op %d %s %s\n", pid, comm, str(args->pathname)); }
tracepoint:syscalls:sys_enter_fchmodat { printf("chmod %d %s\n", pid, str(args->filename)); }
"""
BT_NET = r"""
tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {
  printf("tcp %d %s %d %d %d %d\n", pid, comm, args->sport, args->dport, args->oldstate, args->newstate); }
"""

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(512); print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept(); c.recv(256); c.sendall(b"r" * 100); c.close()
"""
CLIENT = """
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", port)); c.sendall(b"q" * 100); c.recv(256); c.close()
"""


def make_tree() -> Path:
    tar = WORK / f"tree-{FILES}.tar"
    if tar.exists():
        return tar
    WORK.mkdir(parents=True, exist_ok=True)
    src = Path(tempfile.mkdtemp(dir=WORK))
    for i in range(FILES):
        d = src / f"d{i // 100:04d}"
        d.mkdir(exist_ok=True)
        (d / f"f{i:06d}.txt").write_bytes(os.urandom(1024))
    with tarfile.open(tar, "w") as t:
        t.add(src, arcname="tree")
    shutil.rmtree(src)
    return tar


def untar(tar: Path) -> float:
    dest = Path(tempfile.mkdtemp(dir=WORK))
    t = time.perf_counter()
    subprocess.run(["tar", "-xf", str(tar), "-C", str(dest)], check=True)
    elapsed = time.perf_counter() - t
    shutil.rmtree(dest)
    return elapsed


def connections(port: int) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", CLIENT, str(port), str(CONNS)], check=True)
    return time.perf_counter() - t


def _wait_ready(proc: subprocess.Popen) -> None:
    """Until the tracer says it is attached. (Its programs show in `bpftool prog
    show` once loaded, before they are attached: a run that started then was
    partly untraced, 2,000 of 20,000 files here.)"""
    assert proc.stderr is not None
    line = proc.stderr.readline()
    if b"ready" not in line:
        raise RuntimeError(f"tracer did not start: {line.strip()!r}")


def traced(kind: str, types: str, fn, *args) -> float:
    if kind == "floor":  # empty programs where the file sensor hooks: what any syscall tracer pays here
        with floor.attached("enter,exit"):
            return fn(*args)
    if kind == "floor_records":  # and a record for each operation it reports, with nothing else
        with floor.attached("records"):
            return fn(*args)
    out = tempfile.NamedTemporaryFile(dir=WORK, suffix=".out", delete=False)  # noqa: SIM115
    if kind.startswith("bpfwatch"):
        # bpfwatch_batched: the agent's kernel-side setting, a wake-up per 64 KiB queued
        batched = ["--wakeup-bytes", "64KiB"] if kind == "bpfwatch_batched" else []
        proc = subprocess.Popen([*BPFWATCH, "trace", "-t", types, "--format", "json", "-o", out.name, *batched],
                                stderr=subprocess.PIPE)
        _wait_ready(proc)
    else:
        prog = BT_FILE if types.startswith("file") else BT_NET
        proc = subprocess.Popen([bpftrace() or "bpftrace", "-e", prog], stdout=out, stderr=subprocess.DEVNULL)
        time.sleep(3.0)  # bpftrace attaches its probes one by one
    try:
        return fn(*args)
    finally:
        proc.terminate()
        proc.communicate()
        out.close()
        os.unlink(out.name)


def compare(name: str, types: str, fn, *args, runs: int) -> dict[str, object]:
    peers = ["untraced", "bpfwatch", "bpfwatch_batched"] \
        + (["floor", "floor_records"] if types.startswith("file") else []) \
        + (["bpftrace"] if bpftrace() and ensure_tracefs() else [])
    times: dict[str, list[float]] = {p: [] for p in peers}
    for _ in range(runs):
        for p in peers:  # alternating
            times[p].append(fn(*args) if p == "untraced" else traced(p, types, fn, *args))
    base = median(times["untraced"])
    out: dict[str, object] = {
        "workload": name, "runs": runs, "median_s": {p: round(median(v), 3) for p, v in times.items()},
        "slowdown": {p: round(median(v) / base, 3) for p, v in times.items() if p != "untraced"}}
    if "floor" in times:
        out["bpfwatch_over_floor"] = round(median(times["bpfwatch"]) / median(times["floor"]), 3)
        out["bpfwatch_over_records_floor"] = round(median(times["bpfwatch"]) / median(times["floor_records"]), 3)
    return out


def main() -> None:
    runs = int(os.environ.get("BENCH_RUNS", "5"))
    tar = make_tree()
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    port = int(server.stdout.readline())
    try:
        result = {
            "file_untar": {"files": FILES, **compare("untar", "file.*", untar, tar, runs=runs)},
            "network_short_connections": {"connections": CONNS,
                                          **compare("connections", "network.*", connections, port, runs=runs)},
            "targets": {"slowdown": 1.10},
        }
    finally:
        server.kill()
        server.wait()
    save("sensor_overhead", result)


if __name__ == "__main__":
    main()
