"""Where the agent's CPU goes, stage by stage, per event of the mixed load
that agent_overhead.py runs (1k execs/s, 10k opens/s, 1k TCP connections/s).

The kernel's records are recorded once from the agent's real ring (its own
event source, default config), then replayed through the agent's own stages
in this process: ring reading and decoding, reordering, enrichment, type
selection, redaction and the capture write (JSON lines, file). Each stage's
thread CPU per event is measured on exactly the same input, run after run, so
a change to one stage shows as a number. Beside it, over the same records in
the same run, three floors:
- the least any Python pipeline with a dict per event does (read the ring,
  unpack each record's header, build an event dict of the same size, format
  its time, encode it as a JSON line);
- the least any Python pipeline that writes a JSON line per event does, with
  no object per event: the same reading and unpacking, and the same line
  filled into a bytes template with what differs from event to event: the
  header's fields and the time formatted, the process's context, the path
  and the call's result looked up rendered;
- the same template pipeline fed by the real records (RecordLines): every
  field the agent's decoders read, unpacked from each record through the
  agent's own record-by-record path, and written into its kind's line (this
  row's floor in Python: what any pipeline that writes each kernel record as
  a JSON line cannot do without);
- the same lines made in columns instead (columnar_floor.py: numpy per
  kind and read, the record's place found by the ring walk), to show
  whether rendering in columns would take the floor lower.

All are replayed twice: back to back, and with the live agent's pause
before each read (max_delay / READS_PER_WINDOW: 62.5 ms at the agent's
250 ms). The pauses are not counted, but the time after them is: on this
machine, work done after the CPU sat idle for 10 ms or more costs 1.3-1.5x
what the same work costs back to back (caches refilled), and the live agent
pauses between reads by design.

    python bench/pipeline_stages.py [--seconds 5] [--runs 5] [--pause-runs 3]
"""

from __future__ import annotations

import argparse
import os
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

from bpfwatch.agent import config as agent_config  # noqa: E402
from bpfwatch.agent.runner import Agent  # noqa: E402
from bpfwatch.events.clock import iso8601, second_text  # noqa: E402
from bpfwatch.events.model import common_fields  # noqa: E402
from bpfwatch.monitor import READS_PER_WINDOW  # noqa: E402
from bpfwatch.pipeline.gc_tuning import tune_for_streaming  # noqa: E402
from bpfwatch.ringbuf import RingBuffer  # noqa: E402
from bpfwatch.sensors.base import Fields, dispatch  # noqa: E402
from columnar_floor import replay_columnar_floor  # noqa: E402
from record_lines import replay_record_line_floor  # noqa: E402

LOAD = (("exec", 1000), ("open", 10000), ("conn", 1000))


def loadgen_source() -> str:
    return (HERE / "agent_overhead.py").read_text().split('LOADGEN = r"""')[1].split('"""')[0]


def make_agent(work: Path) -> tuple[Agent, Any]:
    cfg = agent_config.parse(f'[outputs.capture]\ndirectory = "{work / "capture"}"\ncompression = "zstd"\n')
    agent = Agent(cfg)
    agent.open_outputs(cfg)
    source = agent.start_source(cfg, False, fallback=False)
    return agent, source


def record(seconds: float) -> tuple[list[bytes], int]:
    """The raw records of each drain while the load runs, with the events it gave."""
    with tempfile.TemporaryDirectory(prefix="bw-stages-") as work:
        agent, mon = make_agent(Path(work))
        try:
            ring, chunks = mon._ring, []
            drain = ring.drain

            def recording_drain(handle: Any, max_bytes: int | None = None, *rest: Any) -> int:
                chunk = ring.pending_records()
                before = ring.consumer_pos
                n = drain(handle, len(chunk) if max_bytes is None else min(max_bytes, len(chunk)), *rest)
                chunks.append(chunk[: ring.consumer_pos - before])
                return n

            ring.drain = recording_drain
            gens = [subprocess.Popen([sys.executable, "-c", loadgen_source(), kind, str(rate), str(seconds)],
                                     stdout=subprocess.DEVNULL) for kind, rate in LOAD]
            events = 0
            while any(g.poll() is None for g in gens):
                events += len(mon.poll())
            events += len(mon.poll(0, final=True))
        finally:
            mon.close()
            agent.close_outputs()
    return [c for c in chunks if c], events


def replay_agent(chunks: list[bytes], pause: float = 0.0) -> dict[str, float]:
    """Thread CPU per event of each of the agent's stages over the recording,
    idle for `pause` seconds before each read."""
    with tempfile.TemporaryDirectory(prefix="bw-stages-") as work:
        agent, mon = make_agent(Path(work))
        spent: Counter[str] = Counter()

        def timed(stage: str, fn: Any) -> Any:
            def run(*a: Any, **kw: Any) -> Any:
                t = time.thread_time()
                try:
                    return fn(*a, **kw)
                finally:
                    spent[stage] += time.thread_time() - t
            return run

        try:
            mon.enrich = timed("enrich", mon.enrich)
            mon._select = timed("select", mon._select)
            mon._in_order = timed("reorder", mon._in_order)
            agent.capture.write = timed("capture write", agent.capture.write)
            agent.redactor = timed("redact", agent.redactor)
            tune_for_streaming()
            n = 0
            t0 = time.thread_time()
            for chunk in chunks:
                if pause:
                    time.sleep(pause)  # thread CPU does not count it
                ring = RingBuffer.replay(chunk)
                ring.drain = timed("ring + decode", ring.drain)
                mon._ring = ring
                events = mon.poll(0)
                agent._emit(events)
                n += len(events)
            events = mon.poll(0, final=True)
            agent._emit(events)
            n += len(events)
            total = time.thread_time() - t0
        finally:
            mon.close()
            agent.close_outputs()
    out = {stage: v / n * 1e6 for stage, v in spent.items()}
    out["other"] = (total - sum(spent.values())) / n * 1e6
    out["total"] = total / n * 1e6
    out["events"] = n
    return out


def _replay(chunks: list[bytes], hdr: Any, types: list[int], pause: float, sink: bytearray | None,
            decode: Any, encode: Any) -> float:
    """Thread CPU per event of reading the recorded records, `decode` (a
    run decoder for every type the agent decodes) and `encode` (the read's
    decoded items appended to a buffer as JSON lines), idle for `pause`
    seconds before each read. The lines are dropped, or kept in `sink`."""
    decoders = dict.fromkeys(types, decode)
    buf = bytearray()
    n = 0
    t0 = time.thread_time()
    for chunk in chunks:
        if pause:
            time.sleep(pause)
        out: list[Any] = []
        ring = RingBuffer.replay(chunk)
        ring.drain(lambda run, out=out: dispatch(run, decoders, hdr, out))
        encode(out, buf)
        if sink is not None:
            sink += buf
        del buf[:]
        n += len(out)
    return (time.thread_time() - t0) / max(n, 1) * 1e6


def replay_floor(chunks: list[bytes], hdr: Any, types: list[int], pause: float = 0.0,
                 sink: bytearray | None = None) -> float:
    """The least a dict-per-event pipeline does with the same records, per
    event (see _replay)."""
    fields = Fields(hdr, "ts_boot_ns pid tid")
    dumps, opt = orjson.dumps, orjson.OPT_APPEND_NEWLINE

    def minimal(run: Any, idx: Any, out: list[dict[str, Any]]) -> None:
        for ts, pid, tid in fields.rows(run, idx):
            ev = common_fields("file.open", ts, pid, tid, 0, 0, "comm", None, 0, None)
            ev["path"] = "/tmp/bw-bench-open"
            ev["syscall"] = "openat"
            ev["ret"] = 3
            ev["error"] = None
            out.append(ev)

    def encode(out: list[dict[str, Any]], buf: bytearray) -> None:
        for ev in out:
            ev["time"] = iso8601(ev["ts"])
            buf += dumps(ev, option=opt)

    return _replay(chunks, hdr, types, pause, sink, minimal, encode)


# the dict floor's event as its JSON line: what a line needs per event (the
# header's fields, the time), then the parts a pipeline can keep rendered and
# look up (the process's context, the path, the call's result)
LINE = b'{"ts":%d,"time":"%s.%09dZ","type":"file.open","source":"ebpf","pid":%d,"tid":%d,%s,%s,%s'
CONTEXT = b'"ppid":0,"uid":0,"user":null,"comm":"comm","exe":null,"cgroup_id":0,"exec_id":null'
PATH = b'"path":"/tmp/bw-bench-open"'
RESULT = b'"syscall":"openat","ret":3,"error":null}\n'


def replay_line_floor(chunks: list[bytes], hdr: Any, types: list[int], pause: float = 0.0,
                      sink: bytearray | None = None) -> float:
    """The least a pipeline writing one JSON line per event does with the
    same records, per event: no dict, no encoder, a template filled from the
    unpacked header (the dict floor's line, byte for byte). Every part that
    differs between real events is looked up or formatted per event, as a
    real pipeline must: the process's context (by pid, uid, comm, cgroup),
    the path and the call's result are kept rendered, in dicts."""
    fields = Fields(hdr, "ts_boot_ns pid tid")
    seconds: dict[int, bytes] = {}
    contexts: dict[tuple[int, int, bytes, int], bytes] = {}
    paths = {b"/tmp/bw-bench-open": PATH}
    results = {(257, 0, 0, 3): RESULT}

    def minimal(run: Any, idx: Any, out: list[bytes]) -> None:
        for ts, pid, tid in fields.rows(run, idx):
            sec, ns = divmod(ts, 1_000_000_000)
            text = seconds.get(sec)
            if text is None:
                text = seconds[sec] = second_text(sec).encode()
            context = contexts.get((pid, 0, b"comm", 0))
            if context is None:
                context = contexts[(pid, 0, b"comm", 0)] = CONTEXT
            out.append(LINE % (ts, text, ns, pid, tid, context, paths[b"/tmp/bw-bench-open"],
                               results[(257, 0, 0, 3)]))

    def encode(out: list[bytes], buf: bytearray) -> None:
        buf += b"".join(out)

    return _replay(chunks, hdr, types, pause, sink, minimal, encode)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--pause-runs", type=int, default=3, help="runs with the live agent's pauses (each takes "
                    "as long as the recording)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("pipeline_stages: run as root (it loads the agent's programs)")
    chunks, live_events = record(args.seconds)
    with tempfile.TemporaryDirectory(prefix="bw-stages-") as work:
        agent, mon = make_agent(Path(work))
        hdr, types = mon.sensors[0].hdr_dtype, list(mon._decoders)
        rows, kind_at = dict(mon._row_decoders), mon._kind_at
        pause = mon.max_delay / READS_PER_WINDOW  # how long the live agent sits between reads
        mon.close()
        agent.close_outputs()
    runs = [replay_agent(chunks) for _ in range(args.runs)]
    stages = {k: round(median([r[k] for r in runs]), 3) for k in runs[0] if k != "events"}
    # each floor: (its name in the % figures, its µs figure's key, fn(pause) -> µs per event)
    floors = [
        ("floor", "dict_pipeline_floor_us_per_event", lambda p: replay_floor(chunks, hdr, types, p)),
        ("json_line_floor", "json_line_floor_us_per_event", lambda p: replay_line_floor(chunks, hdr, types, p)),
        ("record_line_floor", "record_line_floor_us_per_event",
         lambda p: replay_record_line_floor(chunks, rows, types, kind_at, hdr, p)),
        ("columnar_record_lines", "columnar_record_lines_us_per_event",
         lambda p: replay_columnar_floor(chunks, rows, types, kind_at, hdr, p)),
    ]
    back_to_back = {name: round(median([fn(0.0) for _ in range(args.runs)]), 3) for name, _, fn in floors}
    paused = {"agent": round(median([replay_agent(chunks, pause)["total"] for _ in range(args.pause_runs)]), 3),
              **{name: round(median([fn(pause) for _ in range(args.pause_runs)]), 3) for name, _, fn in floors}}

    def pct(us: float) -> float:  # % of a core at the 20k events/s (µs per event x 20,000 / 10,000)
        return round(us * 2, 1)

    result = {
        "recorded_seconds": args.seconds, "records_bytes": sum(map(len, chunks)), "drains": len(chunks),
        "events_live": live_events, "events_replayed": runs[0]["events"], "runs": args.runs,
        "agent_us_per_event": stages,
        **{key: back_to_back[name] for name, key, _ in floors},
        "agent_over_floor": round(stages["total"] / back_to_back["floor"], 2),
        "pct_of_core_at_20k_events_per_s": {"agent_stages": pct(stages["total"]),
                                            **{name: pct(us) for name, us in back_to_back.items()}},
        "with_live_pauses": {
            "pause_s": pause, "runs": args.pause_runs,
            "agent_us_per_event": paused["agent"], **{key: paused[name] for name, key, _ in floors},
            "pct_of_core_at_20k_events_per_s": {"agent_stages": pct(paused["agent"]),
                                                **{name: pct(paused[name]) for name, _, _ in floors}},
            "over_back_to_back": {"agent": round(paused["agent"] / stages["total"], 2),
                                  **{name: round(paused[name] / us, 2) for name, us in back_to_back.items()}},
        },
    }
    save("pipeline_stages", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
