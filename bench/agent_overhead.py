"""The agent over a long run: CPU and RSS on an idle host, then under a
synthetic load (1k execs/s, 10k file opens/s, 1k TCP connections/s), with
sustained events/s into the capture and the loss count. Side by side in the
same run: the same agent in polling mode (the peer approach: /proc scans with
psutil, as agents without eBPF do). Beside them in each load phase, two
floors: the same number of event dicts built and encoded (event_cost.py
--paced-floor), and the row's floor, each record of the agent's own sensors
written as a JSON line (record_lines.py --live).

    python bench/agent_overhead.py [--idle 600] [--load 600] [--load-runs 1]

One load phase's CPU figure moves by several points with the machine's state
(10.4-14.5% in four runs of the same code), so `--load-runs N` runs N load
phases in a row and reports the one with the median eBPF agent CPU, and all N.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from common import BPFWATCH, cpu_seconds, median, rss_mb, save

HERE = Path(__file__).resolve().parent


def bpf_map_rss_mb(pid: int) -> float:
    """RSS of the process's mmap'd BPF maps (the ring buffer): kernel memory
    that exists whether or not it is mapped, but that RSS counts."""
    kb, current = 0, ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                current = line.split()[-1] if len(line.split()) >= 6 else ""
            elif line.startswith("Rss:") and current == "anon_inode:bpf-map":
                kb += int(line.split()[1])
    return kb / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_agent(work: Path, name: str, ebpf: bool, nats_url: str = "") -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cfg = work / f"{name}.toml"
    nats = f"""
[outputs.nats]
enabled = true
servers = ["{nats_url}"]
[filters]
deny = {{ path = ["{work / 'nats'}"], comm = ["nats-server"] }}
""" if nats_url else ""
    cfg.write_text(nats + f"""
[monitor.ebpf]
enabled = {str(ebpf).lower()}
[monitor.polling]
interval = "1s"
[outputs.capture]
directory = "{work / name}"
compression = "zstd"
[metrics]
address = "127.0.0.1:{port}"
""")
    proc = subprocess.Popen([*BPFWATCH, "agent", "--config", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=open(work / f"{name}.log", "w"))  # noqa: SIM115
    deadline = time.monotonic() + 30
    while "agent running" not in (work / f"{name}.log").read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{name} agent did not start:\n{(work / f'{name}.log').read_text()}")
        time.sleep(0.1)
    return proc, port


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(\{[^}]*\})? ([-0-9.e+]+)$", line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = out.get(m.group(1) + (m.group(2) or ""), 0.0) + float(m.group(3))
    return out


def total(metrics: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(prefix))


LOADGEN = r"""
import os, socket, sys, time
kind, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
end = time.monotonic() + seconds
done = 0
t0 = time.monotonic()
if kind == "conn":
    srv = socket.create_server(("127.0.0.1", 0), backlog=4096)
    port = srv.getsockname()[1]
    srv.setblocking(False)
path = f"/tmp/bw-bench-open-{os.getpid()}"
open(path, "w").close()
while time.monotonic() < end:
    target = int((time.monotonic() - t0) * rate) + 1
    while done < target:
        if kind == "exec":
            pid = os.posix_spawn("/bin/true", ["true"], os.environ)
            os.waitpid(pid, 0)
        elif kind == "open":
            os.close(os.open(path, os.O_RDONLY))
        else:
            c = socket.create_connection(("127.0.0.1", port))
            try:
                a, _ = srv.accept()
                a.close()
            except BlockingIOError:
                pass
            c.close()
        done += 1
    time.sleep(0.001)
os.unlink(path)
print(done / (time.monotonic() - t0))
"""


def phase(name: str, seconds: float, agents: dict[str, tuple[subprocess.Popen[bytes], int]],
          load: dict[str, int] | None, floor_rate: int = 0) -> dict[str, Any]:
    gens = {}
    if load:
        gens = {k: subprocess.Popen([sys.executable, "-c", LOADGEN, k, str(r), str(seconds)], stdout=subprocess.PIPE,
                                    text=True) for k, r in load.items()}
    floor = None
    if floor_rate:
        # beside the agents, under the same load: building and encoding the
        # same number of event dicts, and nothing else
        floor = subprocess.Popen([sys.executable, str(HERE / "event_cost.py"), "--paced-floor", str(floor_rate),
                                  str(seconds)], stdout=subprocess.PIPE, text=True)
        # and the row's floor: the agent's own sensors and reads, each record
        # written as a JSON line to a file, nothing else (record_lines.py)
        line_floor = subprocess.Popen([sys.executable, str(HERE / "record_lines.py"), "--live", str(seconds)],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    start = {n: (cpu_seconds(p.pid), scrape(port), time.monotonic()) for n, (p, port) in agents.items()}
    spawned = {n: cpu_seconds(p.pid, own=False) for n, (p, _) in agents.items()}
    rss: dict[str, list[float]] = {n: [] for n in agents}
    ring_rss: dict[str, float] = {}
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        time.sleep(min(10.0, max(0.0, t_end - time.monotonic())))
        for n, (p, _) in agents.items():
            rss[n].append(round(rss_mb(p.pid), 1))
            ring_rss[n] = round(bpf_map_rss_mb(p.pid), 1)
    rates = {k: round(float(g.communicate()[0].strip() or 0)) for k, g in gens.items()}
    out: dict[str, Any] = {f"{name}_seconds": seconds, "load_achieved_per_s": rates}
    if floor is not None:
        out["dict_floor"] = json.loads(floor.communicate()[0])
        out["record_line_floor"] = json.loads(line_floor.communicate()[0])
    for n, (p, port) in agents.items():
        cpu0, m0, t0 = start[n]
        m1, dt = scrape(port), time.monotonic() - t0
        key = "bpfwatch_capture_events_written_total"
        written = total(m1, key) - total(m0, key)
        half = len(rss[n]) // 2
        out[n] = {
            # with the segment compressor it runs (its children, reaped or running): its work too
            "cpu_pct_of_core": round((cpu_seconds(p.pid) - cpu0) / dt * 100, 3),
            "of_which_compressor_pct_of_core": round((cpu_seconds(p.pid, own=False) - spawned[n]) / dt * 100, 3),
            "rss_mb_first": rss[n][0] if rss[n] else None, "rss_mb_last": rss[n][-1] if rss[n] else None,
            "rss_mb_max": max(rss[n]) if rss[n] else None,
            "rss_mb_of_mapped_bpf_ring": ring_rss.get(n),
            "rss_mb_growth_second_half": round(rss[n][-1] - rss[n][half], 1) if len(rss[n]) > 2 else None,
            "events_per_s_to_capture": round(written / dt),
            "lost": total(m1, "bpfwatch_events_lost_total") - total(m0, "bpfwatch_events_lost_total"),
            "capture_dropped": total(m1, "bpfwatch_capture_dropped_total"),
            "capture_write_errors": total(m1, "bpfwatch_capture_write_errors_total"),
            "events_by_type_per_s": {k.split('type="')[1].split('"')[0]: round((v - m0.get(k, 0.0)) / dt)
                                     for k, v in m1.items() if k.startswith("bpfwatch_events_total{")},
        }
    print(f"{name}: " + ", ".join(f"{n} cpu {out[n]['cpu_pct_of_core']}% rss {out[n]['rss_mb_last']} MB "
                                  f"events/s {out[n]['events_per_s_to_capture']} lost {out[n]['lost']}"
                                  for n in agents)
          + (f", dict floor cpu {out['dict_floor']['cpu_pct_of_core']}%, record-line floor cpu "
             f"{out['record_line_floor']['cpu_pct_of_core']}% ({out['record_line_floor']['events_per_s']} events/s, "
             f"lost {out['record_line_floor']['lost']})" if floor is not None else ""), flush=True)
    return out


def ship_phase(work: Path, agents: dict[str, tuple[subprocess.Popen[bytes], int]], seconds: float
               ) -> dict[str, Any]:
    """The same load twice more, alternating: the eBPF agent alone, then with
    [outputs.nats] to a nats-server on loopback; the difference is shipping."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from natsserver import NatsServer

    for p, _ in agents.values():
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
    agents.clear()
    server = NatsServer(work).start()
    out: dict[str, Any] = {}
    try:
        for name, url in (("capture_only", ""), ("capture_and_nats", server.url)):
            agents[name] = start_agent(work, name, True, url)
            time.sleep(5)
            out[name] = phase(f"ship_{name}", seconds, {name: agents[name]},
                              {"exec": 1000, "open": 10000, "conn": 1000})[name]
            p = agents.pop(name)[0]
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)
    finally:
        server.stop()
    out["shipping_cpu_pct_of_core"] = round(out["capture_and_nats"]["cpu_pct_of_core"]
                                            - out["capture_only"]["cpu_pct_of_core"], 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=float, default=600)
    ap.add_argument("--load", type=float, default=600)
    ap.add_argument("--load-runs", type=int, default=1, metavar="N",
                    help="load phases in a row; the one with the median eBPF agent CPU is reported, with all "
                         "N figures (this machine's state moves one run's figure by several points)")
    ap.add_argument("--nats", type=float, default=0, metavar="SECONDS",
                    help="then a load phase this long with [outputs.nats] on (a local nats-server): the cost of "
                         "shipping, against the same phase without it")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bw-agent-bench-"))
    agents: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        # idle: each agent alone (the poller's /proc scans are file events to the other)
        agents["bpfwatch_poll"] = start_agent(work, "poll", False)
        time.sleep(5)
        idle = phase("idle_poll", min(args.idle, 120), agents, None)
        poll = agents.pop("bpfwatch_poll")[0]
        poll.send_signal(signal.SIGTERM)
        poll.wait(timeout=60)
        agents["bpfwatch_ebpf"] = start_agent(work, "ebpf", True)
        time.sleep(5)  # past the start-up snapshot
        idle.update(phase("idle", args.idle, agents, None))
        agents["bpfwatch_poll"] = start_agent(work, "poll", False)
        time.sleep(5)
        loads = [phase(f"load {i + 1}/{args.load_runs}", args.load, agents,
                       {"exec": 1000, "open": 10000, "conn": 1000}, floor_rate=20000)
                 for i in range(max(args.load_runs, 1))]
        runs_cpu = [r["bpfwatch_ebpf"]["cpu_pct_of_core"] for r in loads]
        load = sorted(loads, key=lambda r: r["bpfwatch_ebpf"]["cpu_pct_of_core"])[len(loads) // 2]
        e_idle, e_load = idle["bpfwatch_ebpf"], load["bpfwatch_ebpf"]
        rss_max = max(e_idle["rss_mb_max"], *(r["bpfwatch_ebpf"]["rss_mb_max"] for r in loads))
        shipping = ship_phase(work, agents, args.nats) if args.nats else None
        save("agent_overhead", {
            "shipping": shipping,
            "idle": idle, "load": load,
            "targets": {"idle_cpu_pct_lt": 0.5, "rss_mb_lt": 80},
            "idle_cpu_pct": e_idle["cpu_pct_of_core"], "load_cpu_pct": e_load["cpu_pct_of_core"],
            "load_cpu_pct_runs": runs_cpu,
            "load_dict_floor_cpu_pct": load["dict_floor"]["cpu_pct_of_core"],
            "load_record_line_floor_cpu_pct_runs": [r["record_line_floor"]["cpu_pct_of_core"] for r in loads],
            "rss_mb_max": rss_max,
            "rss_mb_max_without_ring": round(rss_max - (e_load["rss_mb_of_mapped_bpf_ring"] or 0), 1),
            "load_events_per_s": e_load["events_per_s_to_capture"], "load_lost": e_load["lost"],
            "idle_cpu_ratio_poll_vs_ebpf": round(idle["bpfwatch_poll"]["cpu_pct_of_core"]
                                                 / max(e_idle["cpu_pct_of_core"], 1e-9), 2),
            "median_rss_mb": median([e_idle["rss_mb_last"], e_load["rss_mb_last"]]),
            "capture_bytes_on_disk": sum(f.stat().st_size for f in (work / "ebpf").iterdir()),
        })
    finally:
        for p, _ in agents.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.chdir(HERE)
    sys.exit(main())
