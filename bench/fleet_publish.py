"""The fleet's publisher against the obvious alternative, in one run on one
JetStream server (Debian's nats-server on loopback): bpfwatch's batches
(1000 events, zstd, one message per event family, acknowledged) and one
acknowledged message per event, the way a per-event forwarder sends. Both
read the same capture; reported: events/s to acknowledged storage, the
publisher's CPU per event, and the bytes the server stored. Then the
collector: events/s from the stream into Parquet.

    python bench/fleet_publish.py [--events 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import BPFWATCH, save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from bpfwatch.fleet.connect import NatsAuth  # noqa: E402
from bpfwatch.fleet.publisher import NatsPublisher, PublishSettings  # noqa: E402
from natsserver import NatsServer  # noqa: E402
from test_fleet import synthetic_capture  # noqa: E402


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def stream_bytes(url: str, stream: str) -> int:
    import nats

    async def go() -> int:
        nc = await nats.connect(url)
        try:
            info = await nc.jetstream().stream_info(stream)
            return int(info.state.bytes)
        finally:
            await nc.close()

    return asyncio.run(go())


def batched(url: str, capture: Path, n: int) -> dict[str, Any]:
    pub = NatsPublisher(PublishSettings(NatsAuth(servers=[url]), host="bench", batch_events=1000, batch_age=0.01,
                                        stream="BENCH_BATCH", subject_prefix="bbatch"), str(capture))
    c0, t0 = cpu(), time.perf_counter()
    pub.start()
    while pub.stats.published_events < n:
        time.sleep(0.01)
    took, used = time.perf_counter() - t0, cpu() - c0
    pub.close()
    return {"events_per_s": round(n / took), "cpu_us_per_event": round(used / n * 1e6, 2),
            "messages": pub.stats.published_messages, "stored_bytes": stream_bytes(url, "BENCH_BATCH")}


def per_event(url: str, capture: Path, n: int) -> dict[str, Any]:
    from bpfwatch.fleet.tail import CaptureTail, Cursor

    async def go() -> dict[str, Any]:
        import nats
        from nats.js.api import StreamConfig

        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="BENCH_EACH", subjects=["beach.>"]))
        tail = CaptureTail(str(capture), Cursor())
        sent = 0
        c0, t0 = cpu(), time.perf_counter()
        while sent < n and (rng := tail.read(1000)) is not None:
            # acknowledged one by one, 256 in flight: a fair forwarder, not a naive one
            for k in range(0, len(rng.lines), 256):
                await asyncio.gather(*(js.publish("beach.bench.process", line, headers={
                    "Nats-Msg-Id": f"{rng.seq}:{rng.start + k + i}"}) for i, line in enumerate(rng.lines[k:k + 256])))
            sent += len(rng.lines)
        took, used = time.perf_counter() - t0, cpu() - c0
        await nc.close()
        return {"events_per_s": round(sent / took), "cpu_us_per_event": round(used / sent * 1e6, 2),
                "messages": sent}

    out = asyncio.run(go())
    out["stored_bytes"] = stream_bytes(url, "BENCH_EACH")
    return out


def collect(url: str, n: int, store: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    p = subprocess.run([*BPFWATCH, "fleet", "collect", "--server", url, "--store", str(store), "--stream",
                        "BENCH_BATCH", "--prefix", "bbatch", "--until-idle", "1.5", "--batch", "256"],
                       capture_output=True, text=True, check=True)
    took = time.perf_counter() - t0 - 1.5
    events = int(p.stderr.strip().splitlines()[-1].split()[1])
    assert events == n, p.stderr
    return {"events_per_s": round(events / took), "parquet_bytes": sum(f.stat().st_size for f in store.rglob("*"))}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bw-fleet-bench-"))
    server = NatsServer(work).start()
    try:
        capture = work / "capture"
        synthetic_capture(capture, args.events, mark="bench", segment_events=100_000)
        b = batched(server.url, capture, args.events)
        e = per_event(server.url, capture, args.events)
        c = collect(server.url, args.events, work / "store")
        result = {"events": args.events, "batched": b, "per_event": e, "collector": c,
                  "ratio_events_per_s": round(b["events_per_s"] / e["events_per_s"], 1),
                  "ratio_stored_bytes": round(e["stored_bytes"] / max(b["stored_bytes"], 1), 1)}
        save("fleet_publish", result)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
