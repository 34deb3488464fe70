"""A simulated fleet on one machine: N agents' publishers replaying a recorded
capture (real events, recorded here first with `bpfwatch trace` under a
mixed load) into one JetStream server, and 2 collectors sharing the stream.
Each simulated agent writes the recorded events into its own capture
directory at a steady rate, with `ts` set to the moment it writes them, and
its publisher sends that capture, exactly as an agent does.

Reported: events/s through the whole pipeline (capture -> stream -> Parquet),
end-to-end latency p50/p99 (event written -> its batch on disk, from the
collectors), wire bytes per event (what the server stored), the collectors'
events per CPU-second, and the catch-up rate after an outage (the server
stopped for a while under load, then started).

    python bench/fleet_scale.py [--agents 20] [--rate 1000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from common import BPFWATCH, cpu_seconds, save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from natsserver import NatsServer  # noqa: E402

LOAD = """
import os, socket, sys, time
end = time.monotonic() + float(sys.argv[1])
srv = socket.create_server(("127.0.0.1", 0)); port = srv.getsockname()[1]
while time.monotonic() < end:
    os.waitpid(os.posix_spawn("/bin/true", ["true", "rec"], os.environ), 0)
    for i in range(10):
        os.close(os.open("/etc/hostname", os.O_RDONLY))
    c = socket.create_connection(("127.0.0.1", port)); a, _ = srv.accept(); c.sendall(b"x" * 100); a.recv(100)
    a.close(); c.close()
    time.sleep(0.002)
"""


def record(path: Path, seconds: float = 4.0) -> list[bytes]:
    """Real events: `bpfwatch trace` with its default sensors under a small mixed load."""
    proc = subprocess.Popen([*BPFWATCH, "trace", "--format", "json", "-o", str(path)], stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr is not None
    proc.stderr.readline()  # ready
    subprocess.run([sys.executable, "-c", LOAD, str(seconds)], check=True)
    time.sleep(0.5)
    proc.terminate()
    proc.communicate()
    return [line for line in path.read_bytes().splitlines() if line]


def agent_sim(i: int, url: str, work: str, events: list[bytes], rate: int, seconds: float,
              written: Any = None) -> None:
    """One simulated agent: its capture, written at `rate` events/s, and its publisher."""
    from bpfwatch.agent.config import parse
    from bpfwatch.capture.writer import CaptureWriter
    from bpfwatch.fleet.connect import NatsAuth
    from bpfwatch.fleet.publisher import NatsPublisher, PublishSettings

    cap = os.path.join(work, f"agent-{i:02d}")
    w = CaptureWriter(parse(f'[outputs.capture]\ndirectory = "{cap}"\ncompression = "none"\n').outputs.capture).open()
    pub = NatsPublisher(PublishSettings(NatsAuth(servers=[url]), host=f"sim-{i:02d}"), cap,
                        w.backlog_after).start()  # the agent's defaults: 1000 events or 1 s a batch
    decoded = [orjson.loads(e) for e in events]
    t0 = time.monotonic()
    sent, k = 0, 0
    while time.monotonic() - t0 < seconds:
        due = int((time.monotonic() - t0) * rate)
        batch = []
        while sent < due:
            ev = dict(decoded[k % len(decoded)])
            ev["ts"] = time.time_ns()
            batch.append(ev)
            sent += 1
            k += 1
        w.write(batch)
        time.sleep(0.01)
    w.close()
    if written is not None:
        written.value = sent
    deadline = time.monotonic() + 120
    while pub.stats.published_events < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    pub.close()


def stream_bytes(url: str) -> tuple[int, int]:
    import nats

    async def go() -> tuple[int, int]:
        nc = await nats.connect(url)
        try:
            st = (await nc.jetstream().stream_info("BPFWATCH_EVENTS")).state
            return int(st.bytes), int(st.messages)
        finally:
            await nc.close()

    return asyncio.run(go())


def run_pipeline(url: str, work: Path, events: list[bytes], agents: int, rate: int, seconds: float,
                 outage: float = 0.0, server: NatsServer | None = None) -> dict[str, Any]:
    """Agents write for `seconds`; with `outage`, the server is down for the
    last `outage` seconds of it and starts when writing ends, so what follows
    is the backlog draining."""
    store = work / "store"
    cols = [subprocess.Popen([*BPFWATCH, "fleet", "collect", "--server", url, "--store", str(store), "--until-idle",
                              "15", "--batch", "256"], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    t0 = time.monotonic()
    wall0 = time.time()
    counts = [mp.Value("q", 0) for _ in range(agents)]
    procs = [mp.Process(target=agent_sim, args=(i, url, str(work), events, rate, seconds, counts[i]))
             for i in range(agents)]
    for p in procs:
        p.start()
    back = None
    if outage and server is not None:
        time.sleep(max(seconds - outage, 0))
        server.stop()
        time.sleep(max(t0 + seconds - time.monotonic(), 0))
        server.start()
        back = time.monotonic()
    for p in procs:
        p.join()
    drained = time.monotonic()
    outs = [c.communicate(timeout=600)[1] for c in cols]
    total = sum(int(o.strip().splitlines()[-1].split()[1]) for o in outs)
    rejected = sum(int(o.strip().splitlines()[-1].split(" rejected")[0].split()[-1]) for o in outs)
    problems = [line for o in outs for line in o.strip().splitlines()[:-1] if "collecting" not in line][:10]
    lat = [o.strip().splitlines()[-1] for o in outs]
    p50s = [float(x.split("p50 ")[1].split()[0]) for x in lat if "p50" in x]
    p99s = [float(x.split("p99 ")[1].split()[0]) for x in lat if "p99" in x]
    stamps = [f.stat().st_mtime for f in store.rglob("*.parquet")] or [time.time()]
    end = max(stamps)
    wall0 = max(wall0, min(stamps) - 1.0)  # from the first batch stored (20 processes take a while to start)
    out: dict[str, Any] = {"agents": agents, "rate_per_agent": rate, "offered_events_per_s": agents * rate,
                           "seconds": seconds, "events_written": sum(c.value for c in counts),
                           "events_stored": total, "batches_rejected": rejected, "collector_messages": problems,
                           "events_per_s_through": round(total / max(end - wall0, 1e-9)),
                           "latency_p50_s": max(p50s) if p50s else None, "latency_p99_s": max(p99s) if p99s else None}
    if back is not None:
        backlog = agents * rate * outage
        out.update(outage_s=outage, backlog_events=backlog, catch_up_s=round(drained - back, 1),
                   catch_up_events_per_s=round(backlog / max(drained - back, 1e-9)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--rate", type=int, default=1000, help="events/s per simulated agent")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--outage", type=float, default=10)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bw-fleet-scale-"))
    try:
        events = record(work / "recorded.jsonl")
        server = NatsServer(work).start()
        try:
            steady = run_pipeline(server.url, work / "steady", events, args.agents, args.rate, args.seconds)
            stored, msgs = stream_bytes(server.url)
            steady["wire_bytes_per_event"] = round(stored / max(steady["events_stored"], 1), 1)
            steady["events_per_message"] = round(steady["events_stored"] / max(msgs, 1), 1)
            raw = sum(len(e) + 1 for e in events) / len(events)
            steady["json_bytes_per_event"] = round(raw, 1)
        finally:
            server.stop()
        (work / "o").mkdir()
        server = NatsServer(work / "o").start()
        try:
            outage = run_pipeline(server.url, work / "outage", events, args.agents, args.rate, args.seconds,
                                  outage=args.outage, server=server)
        finally:
            server.stop()
        collect_cpu = measure_collector_cpu(events)
        save("fleet_scale", {"recorded_events": len(events), "steady": steady, "outage": outage,
                             "collector": collect_cpu})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def measure_collector_cpu(events: list[bytes], n: int = 200_000) -> dict[str, Any]:
    """One collector alone on a full stream: events per CPU-second, its
    start-up (imports, connecting) measured apart and left out."""
    work = Path(tempfile.mkdtemp(prefix="bw-fleet-col-"))
    server = NatsServer(work).start()

    def collector(durable: str, idle: str) -> tuple[int, float]:
        col = subprocess.Popen([*BPFWATCH, "fleet", "collect", "--server", server.url, "--store",
                                str(work / durable), "--until-idle", idle, "--batch", "256", "--durable", durable],
                               stderr=subprocess.PIPE, text=True)
        cpu = 0.0
        while col.poll() is None:
            try:
                cpu = cpu_seconds(col.pid)
            except OSError:
                break
            time.sleep(0.05)
        err = col.communicate()[1]
        return int(err.strip().splitlines()[-1].split()[1]), cpu

    try:
        agent_sim(0, server.url, str(work), events, n, 1.0)  # n events written in ~1 s, all sent
        got, cpu = collector("full", "0.5")
        _, idle_cpu = collector("full", "0.5")  # again: all read already, so start-up and waiting only
        work_cpu = max(cpu - idle_cpu, 1e-9)
        return {"events": got, "cpu_s": round(cpu, 2), "startup_cpu_s": round(idle_cpu, 2),
                "events_per_cpu_s": round(got / work_cpu)}
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
