"""Start-up: time from launch to the first event printed, and RSS then, for
`bpfwatch trace` and the equivalent bpftrace one-liner, while /bin/true is
exec'd every 2 ms."""

from __future__ import annotations

import os
import select
import subprocess
import time

from common import BPFWATCH, bpftrace, ensure_tracefs, median, rss_mb, save

SPAWNER = "while :; do /bin/true; sleep 0.002; done"


def first_event(cmd: list[str], marker: bytes) -> dict[str, float]:
    spawner = subprocess.Popen(["/bin/sh", "-c", SPAWNER])
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        buf = b""
        deadline = t0 + 30
        while time.perf_counter() < deadline:
            r, _, _ = select.select([proc.stdout], [], [], 0.5)
            if r:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                if marker in buf:
                    break
        elapsed = time.perf_counter() - t0
        rss = rss_mb(proc.pid)
        proc.terminate()
        proc.wait()
    finally:
        spawner.kill()
        spawner.wait()
    return {"first_event_s": round(elapsed, 3), "rss_mb": round(rss, 1)}


def main() -> None:
    runs = int(os.environ.get("BENCH_RUNS", "5"))
    ours = [first_event([*BPFWATCH, "trace", "--format", "json", "-t", "process.exec", "--comm", "true"],
                        b'"comm":"true"') for _ in range(runs)]
    result: dict[str, object] = {
        "runs": runs, "bpfwatch": ours,
        "bpfwatch_median_s": median([x["first_event_s"] for x in ours]),
        "bpfwatch_median_rss_mb": median([x["rss_mb"] for x in ours]),
        "targets": {"start_s": 0.3, "rss_mb": 60},
    }
    exe = bpftrace()
    if exe and ensure_tracefs():
        prog = 'tracepoint:sched:sched_process_exec /comm == "true"/ { printf("exec %d %s\\n", pid, comm); }'
        theirs = [first_event([exe, "-e", prog], b"exec ") for _ in range(runs)]
        result["bpftrace"] = theirs
        result["bpftrace_median_s"] = median([x["first_event_s"] for x in theirs])
        result["bpftrace_median_rss_mb"] = median([x["rss_mb"] for x in theirs])
    save("startup", result)


if __name__ == "__main__":
    main()
