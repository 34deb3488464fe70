"""Ring buffer throughput: a live producer at millions of records/s, the raw
drain rate of a full ring, end-to-end JSON lines on disk, and bpftrace
printing JSON for the same syscalls."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any

from bpfwatch.events.clock import BootClock, iso8601
from bpfwatch.pipeline.sink import JsonLinesSink, open_output
from bpfwatch.ringbuf import Poller, Run
from bpfwatch.sensors.base import SensorOptions
from bpfwatch.sensors.loadgen import LoadgenSensor
from common import bpftrace, ensure_tracefs, median, save

GETPPID = {"x86_64": 110, "aarch64": 173}[platform.machine()]


def child(calls: int) -> subprocess.Popen:
    code = f"import os, sys; sys.stdin.readline(); [os.getppid() for _ in range({calls})]"
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)


def go(p: subprocess.Popen) -> float:
    t = time.perf_counter()
    p.stdin.write(b"go\n")
    p.stdin.flush()
    return t


def live(calls: int, burst: int) -> dict[str, Any]:
    """Consumer and producer at once: does the consumer keep up?"""
    p = child(calls)
    with LoadgenSensor(p.pid, GETPPID, burst, SensorOptions(ring_size=64 << 20)) as s:
        poller = Poller()
        poller.add(s.ring)
        t0 = go(p)
        while p.poll() is None:
            poller.wait(0.01)
            s.drain([])
        t_prod = time.perf_counter() - t0
        s.drain([])
        lost = s.lost()
        poller.close()
    return {"records": s.count, "lost": lost, "producer_rate_per_s": round((s.count + lost) / t_prod)}


def drain_rate(calls: int, burst: int) -> dict[str, Any]:
    """A full ring drained with the producer gone: the consumer's own speed,
    decoding every record into a numpy structured array (copied out)."""
    p = child(calls)
    with LoadgenSensor(p.pid, GETPPID, burst, SensorOptions(ring_size=256 << 20), keep=True) as s:
        go(p)
        p.wait()
        t = time.perf_counter()
        n = 0
        while k := s.drain([], max_bytes=2 << 20):  # bounded batches, as a consumer drains
            n += k
            s.batches.clear()
        dt = time.perf_counter() - t
        lost = s.lost()
    return {"records": n, "lost": lost, "drain_rate_per_s": round(n / dt)}


def to_json_lines(calls: int, burst: int) -> dict[str, Any]:
    """Records -> event dicts -> orjson -> a file on disk, as `trace -o` does."""
    p = child(calls)
    clock = BootClock()
    with tempfile.NamedTemporaryFile(dir=os.environ.get("BENCH_DIR", "/var/tmp"), suffix=".jsonl") as f:
        sink = JsonLinesSink(open_output(f.name))

        class E2E(LoadgenSensor):
            def decode(self, run: Run, out: list[dict[str, Any]]) -> None:
                recs = run.view(self.dtype)
                ts, pid, tid, seq, nr = (recs[k].tolist() for k in ("ts_boot_ns", "pid", "tid", "seq", "nr"))
                off = clock.to_epoch_ns(0)
                for i in range(run.count):
                    t = ts[i] + off
                    out.append({"ts": t, "time": iso8601(t), "type": "bench.syscall", "source": "ebpf",
                                "pid": pid[i], "tid": tid[i], "seq": seq[i], "nr": nr[i]})
                self.count += run.count

        with E2E(p.pid, GETPPID, burst, SensorOptions(ring_size=256 << 20)) as s:
            go(p)
            p.wait()
            t = time.perf_counter()
            while True:
                out: list[dict[str, Any]] = []
                if not s.drain(out, max_bytes=4 << 20):
                    break
                sink.write(out)
            dt = time.perf_counter() - t
            sink.close()
            size = os.path.getsize(f.name)
    return {"records": s.count, "events_per_s": round(s.count / dt), "bytes": size}


def bpftrace_json(calls: int) -> dict[str, Any]:
    exe = bpftrace()
    if not exe or not ensure_tracefs():
        return {"skipped": "bpftrace or tracefs unavailable"}
    p = child(calls)
    prog = f'tracepoint:raw_syscalls:sys_enter /pid == {p.pid}/ {{ printf("%d\\n", args->id); }}'
    with tempfile.TemporaryFile() as out:
        bt = subprocess.Popen([exe, "-f", "json", "-e", prog], stdout=out, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            out.seek(0)
            if b"attached_probes" in out.read():
                break
            time.sleep(0.05)
        t0 = go(p)
        # bpftrace's rate: until its output stops growing
        last_size, last_change = -1, time.perf_counter()
        while time.perf_counter() - last_change < 0.5:
            size = os.fstat(out.fileno()).st_size
            if size != last_size:
                last_size, last_change = size, time.perf_counter()
            time.sleep(0.01)
        t_out = last_change - t0
        p.wait()
        bt.terminate()
        bt.wait()
        out.seek(0)
        lines = out.read().splitlines()
    got = sum(1 for ln in lines if b'"printf"' in ln)
    lost = 0
    for ln in lines:
        if b"lost" in ln.lower():
            digits = "".join(c if c.isdigit() else " " for c in ln.decode()).split()
            lost += int(digits[0]) if digits else 0
    rate = got / max(t_out, 1e-9)
    return {"syscalls": calls, "received": got, "lost_reported": lost,
            "received_pct": round(100 * got / calls, 1), "received_per_s": round(rate)}


def main() -> None:
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    lives = [live(1_000_000, 16) for _ in range(runs)]
    drains = [drain_rate(1_000_000, 8) for _ in range(runs)]
    e2e = [to_json_lines(250_000, 4) for _ in range(runs)]
    bt = bpftrace_json(2_000_000)
    zero_loss_rate = median([x["producer_rate_per_s"] for x in lives if x["lost"] == 0] or [0])
    result = {
        "runs": runs,
        "live_producer": lives,
        "live_zero_loss_rate_median": zero_loss_rate,
        "drain": drains,
        "drain_rate_median": median([d["drain_rate_per_s"] for d in drains]),
        "json_lines_on_disk": e2e,
        "json_lines_rate_median": median([x["events_per_s"] for x in e2e]),
        "bpftrace_json": bt,
        "targets": {"raw_decode_per_s": 4_000_000, "vs_bpftrace": 50, "json_lines_per_s": 300_000},
    }
    if bt.get("received_per_s"):
        result["ratio_vs_bpftrace"] = round(zero_loss_rate / bt["received_per_s"], 1)
    save("ringbuf_throughput", result)


if __name__ == "__main__":
    main()
