"""Python's cost per event, by type: the consumer's own CPU time (thread time)
to decode, enrich, filter and encode each event as a JSON line, as the capture
and `trace --format json` do. A workload child makes events of one family
while a Monitor in this process follows it; the figure is thread CPU time over
events delivered. Beside it, the floor of any dict-per-event pipeline: building
an event dict of the same size and encoding it with orjson.

    python bench/event_cost.py [--scale 1.0] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import median, save

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import orjson  # noqa: E402

import bpfwatch  # noqa: E402

WORKLOADS = {
    # family: (types to trace, child code run with argv[1] = count)
    "process": ("process.*", """
import os, sys
for _ in range(int(sys.argv[1])):
    os.waitpid(os.posix_spawn("/bin/true", ["true"], os.environ), 0)
"""),
    "file.open": ("file.open", """
import os, sys, tempfile
d = tempfile.mkdtemp(dir="/dev/shm")
names = [os.path.join(d, f"f{i:03d}") for i in range(200)]
for n in names:
    open(n, "w").close()
for i in range(int(sys.argv[1])):
    os.close(os.open(names[i % 200], os.O_RDONLY))
"""),
    "file.io": ("file.io", """
import os, sys, tempfile
d = tempfile.mkdtemp(dir="/dev/shm")
names = [os.path.join(d, f"f{i:03d}") for i in range(200)]
for i in range(int(sys.argv[1])):
    fd = os.open(names[i % 200], os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"x")
    os.close(fd)
"""),
    "network": ("network.*", """
import socket, sys
srv = socket.create_server(("127.0.0.1", 0))
port = srv.getsockname()[1]
for _ in range(int(sys.argv[1])):
    c = socket.create_connection(("127.0.0.1", port))
    a, _ = srv.accept()
    a.close(); c.close()
"""),
    "dns": ("dns.*", """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[1])):
    q = struct.pack(">HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0) + b"\\x07example\\x03com\\x00\\x00\\x01\\x00\\x01"
    s.sendto(q, ("127.0.0.1", 53))
"""),
}
COUNTS = {"process": 1500, "file.open": 60000, "file.io": 30000, "network": 3000, "dns": 20000}

OPTS = orjson.OPT_APPEND_NEWLINE


# the consumer's settings: the agent's defaults (wake-ups batched per 64 KiB,
# 0.25 s reorder window) and trace's (a wake-up per record, 0.05 s)
SETTINGS = {"agent": {"wakeup_bytes": 64 << 10, "max_delay": 0.25}, "trace": {"wakeup_bytes": 0, "max_delay": 0.05}}


def measure(family: str, count: int, settings: str = "agent") -> dict[str, Any]:
    types, code = WORKLOADS[family]
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline()\n" + code, str(count)],
                             stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
    buf = bytearray()
    by_type: Counter[str] = Counter()
    cpu = 0.0
    with bpfwatch.Monitor(types=[types], follow=child.pid, **SETTINGS[settings]) as m:
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.close()
        done_at = None
        while True:
            t0 = time.thread_time()
            events = m.poll()
            for e in events:
                buf += orjson.dumps(e, option=OPTS)
            cpu += time.thread_time() - t0
            for e in events:
                by_type[e["type"]] += 1
            if len(buf) > 64 << 20:
                buf.clear()
            if done_at is None and child.poll() is not None:
                done_at = time.monotonic()
            if done_at is not None and time.monotonic() - done_at > 0.3:
                break
        t0 = time.thread_time()
        for e in m.poll(0, final=True):
            buf += orjson.dumps(e, option=OPTS)
            by_type[e["type"]] += 1
        cpu += time.thread_time() - t0
        lost = sum(m.lost().values())
    n = sum(by_type.values())
    return {"events": n, "by_type": dict(by_type), "lost": lost, "cpu_s": round(cpu, 4),
            "us_per_event": round(cpu / max(n, 1) * 1e6, 2)}


def floor_event(i: int) -> dict[str, Any]:
    """A file.open event as the capture holds it: 20 fields."""
    return {"ts": 1764244000000000000 + i, "time": "2026-11-27T12:00:00.000000000Z", "type": "file.open",
             "source": "ebpf", "pid": 1234, "tid": 1234, "ppid": 1, "uid": 0, "user": "root",
             "comm": "python3", "exe": "/usr/bin/python3.11", "cgroup_id": 1, "exec_id": "abc",
             "path": "/dev/shm/x/f001", "syscall": "openat", "ret": 3, "error": None,
             "flags": ["O_RDONLY", "O_CLOEXEC"], "mode": None, "fd": 3}


def dict_floor(n: int = 200_000) -> float:
    """µs to build a 20-field event dict and orjson it: any dict pipeline pays this."""
    buf = bytearray()
    t0 = time.thread_time()
    for i in range(n):
        buf += orjson.dumps(floor_event(i), option=OPTS)
        if len(buf) > 64 << 20:
            buf.clear()
    return (time.thread_time() - t0) / n * 1e6


def paced_dict_floor(rate: int, seconds: float) -> dict[str, float]:
    """dict_floor at a steady rate, in batches every 50 ms as an agent wakes:
    the CPU share (of a core) that building and encoding alone take at that
    rate. Cold caches between batches make it dearer per event than the
    tight loop above."""
    buf, done = bytearray(), 0
    t0, c0 = time.monotonic(), time.thread_time()
    while (now := time.monotonic()) - t0 < seconds:
        target = int((now - t0) * rate)
        while done < target:
            buf += orjson.dumps(floor_event(done), option=OPTS)
            done += 1
            if len(buf) > 1 << 20:
                buf.clear()
        time.sleep(0.05)
    wall = time.monotonic() - t0
    return {"cpu_pct_of_core": round((time.thread_time() - c0) / wall * 100, 3), "events_per_s": round(done / wall)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies each workload's event count")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--paced-floor", nargs=2, type=float, metavar=("RATE", "SECONDS"),
                    help="only run the dict floor at RATE events/s for SECONDS and print its CPU share as JSON")
    args = ap.parse_args()
    if args.paced_floor:
        print(orjson.dumps(paced_dict_floor(int(args.paced_floor[0]), args.paced_floor[1])).decode())
        return 0
    os.environ.setdefault("TMPDIR", tempfile.gettempdir())
    socket.setdefaulttimeout(10)
    results: dict[str, Any] = {}
    for family, count in COUNTS.items():
        results[family] = {}
        for settings in SETTINGS:
            runs = [measure(family, max(10, int(count * args.scale)), settings) for _ in range(args.runs)]
            results[family][settings] = {"us_per_event": median([r["us_per_event"] for r in runs]), "runs": runs}
        print(f"{family:10s} agent {results[family]['agent']['us_per_event']:6.2f} µs/event, "
              f"trace {results[family]['trace']['us_per_event']:6.2f} "
              f"({runs[0]['events']} events, lost {runs[0]['lost']})", flush=True)
    floor = median([dict_floor() for _ in range(3)])
    print(f"floor      {floor:6.2f} µs/event (a 20-field dict built and orjson-encoded)")
    save("event_cost", {"families": results, "dict_floor_us": round(floor, 2),
                        "agent_events_per_core_s": {f: round(1e6 / r["agent"]["us_per_event"])
                                                    for f, r in results.items() if r["agent"]["us_per_event"] > 0}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
