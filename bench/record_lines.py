"""The row's floor for the agent's CPU, in Python: what a pipeline that
writes each kernel record as a JSON line cannot do without. Replayed by
pipeline_stages.py over a recording; run live beside the agent by
agent_overhead.py (`--live SECONDS`: the agent's own sensors loaded, read
as the agent paces its reads, lines written to a file; prints its CPU share
as JSON).
"""

from __future__ import annotations

import argparse
import operator
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import orjson  # noqa: E402

from bpfwatch.agent import config as agent_config  # noqa: E402
from bpfwatch.agent.runner import Agent  # noqa: E402
from bpfwatch.events.clock import BootClock, second_text  # noqa: E402
from bpfwatch.events.text import dumps, text  # noqa: E402
from bpfwatch.monitor import READS_PER_WINDOW  # noqa: E402
from bpfwatch.ringbuf import RingBuffer  # noqa: E402
from bpfwatch.sensors.base import dispatch  # noqa: E402

# what enrichment adds to a kernel record's fields
RECORD_CONTEXT = b'"user":null,"exe":null,"exec_id":null'


class RecordLines:
    """The least a pipeline that writes each record's real content as a
    JSON line does, per record (this row's floor for the agent's own
    records): every field the agent's decoders read is unpacked from the
    real record, through the agent's own record-by-record path (drain's
    `singles`), and written into a bytes template of that record's kind,
    with the time formatted and the process's context looked up by pid. No
    dict, no encoder, no window, no enrichment, no filter: each distinct
    string (comm, the path at the head of the record's tail) is decoded and
    JSON-escaped once and looked up after that, as a real pipeline's caches
    would. Records of the kinds the agent decodes otherwise (a few network
    and DNS kinds) are walked and left out of the count."""

    def __init__(self, rows: dict[int, Any]) -> None:
        self.rows = rows
        self.seconds: dict[int, bytes] = {}
        self.contexts: dict[int, bytes] = {}
        self.texts = KernelStrings()
        self.offset = BootClock.shared().to_epoch_ns(0)

    def reader(self, out: list[bytes], types: list[int], hdr: Any, kind_at: tuple[int, int]) -> Any:
        """fn(ring): every record of the ring drained, its line appended to `out`."""
        return each_record({kind: self._one(kind, rd, out) for kind, rd in self.rows.items()}, types, hdr, kind_at)

    def _one(self, kind: int, rd: Any, out: list[bytes]) -> Any:
        fields = rd.fields
        codes = [code for _, code in struct_codes(fields.struct.format) if code != "x"]
        strings = [i for i, c in enumerate(codes) if c == "s"]
        numbers = [i for i, c in enumerate(codes) if c != "s" and i > 0]
        names = fields.names
        line = (b'{"ts":%d,"time":"%s.%09dZ","type":"' + str(kind).encode() + b'","source":"ebpf",'
                + b"".join(b'"%s":%%d,' % names[i].encode() for i in numbers)
                + b"".join(b'"%s":%%s,' % names[i].encode() for i in strings)
                + (b'"path":%s,' if rd.tail else b"") + b"%s}\n")
        nums, strs = _tuple_getter(numbers), _tuple_getter(strings)
        unpack, size, tail = fields.struct.unpack_from, fields.size, rd.tail
        seconds, contexts, keep = self.seconds, self.contexts, out.append
        rendered = self.texts.__getitem__
        offset = self.offset

        def one(buf: Any, off: int, length: int) -> None:
            row = unpack(buf, off)
            ts = row[0] + offset
            sec, ns = divmod(ts, 1_000_000_000)
            when = seconds.get(sec)
            if when is None:
                when = seconds[sec] = second_text(sec).encode()
            context = contexts.get(row[1])
            if context is None:
                context = contexts[row[1]] = RECORD_CONTEXT
            if tail:
                keep(line % (ts, when, ns, *nums(row), *map(rendered, strs(row)),
                             rendered(buf[off + size: off + length].tobytes()), context))
            else:
                keep(line % (ts, when, ns, *nums(row), *map(rendered, strs(row)), context))
        return one


def _tuple_getter(idx: list[int]) -> Any:
    """fn(row) -> the fields at idx, always as a tuple (a one-field
    itemgetter gives the field itself)."""
    if len(idx) == 1:
        return operator.itemgetter(slice(idx[0], idx[0] + 1))
    return operator.itemgetter(*idx) if idx else (lambda row: ())


class KernelStrings(dict[bytes, bytes]):
    """A kernel string (NUL-padded) -> its JSON, made on first sight; bytes
    that are not UTF-8 kept, as the agent writes them (\\udcXX)."""

    def __missing__(self, raw: bytes) -> bytes:
        line = self[raw] = dumps(text(raw.split(b"\0", 1)[0]))
        return line


def struct_codes(fmt: str) -> list[tuple[int, str]]:
    """A struct format's items as (count, code), pad bytes ("x") included."""
    return [(int(count or 1), code) for count, code in re.findall(r"(\d*)([a-zA-Z?])", fmt.lstrip("<"))]


def each_record(ones: dict[int, Any], types: list[int], hdr: Any, kind_at: tuple[int, int]) -> Any:
    """fn(ring): every record of the ring drained in ring order, each of a
    kind in `ones` handed to that kind's fn(buf, offset, length) (the rest
    walked and skipped). Records come one by one (drain's `singles`), or in a
    long run of one kind, which is handed out the same way, record by record."""
    def in_runs(one: Any) -> Any:
        def decode(run: Any, idx: Any, _: Any) -> None:
            for i in range(run.count) if idx is None else idx:
                one(run.buf, run.offset + i * run.stride, run.length)
        return decode

    decoders = {t: in_runs(ones[t]) if t in ones else (lambda run, idx, _: None) for t in types}
    return lambda ring: ring.drain(lambda run: dispatch(run, decoders, hdr, []), None, ones, kind_at)


def replay_record_line_floor(chunks: list[bytes], rows: dict[int, Any], types: list[int], kind_at: tuple[int, int],
                             hdr: Any, pause: float = 0.0, sink: list[bytes] | None = None) -> float:
    """Thread CPU per line of RecordLines over the recording (the lines are
    dropped, or kept in `sink`)."""
    lines = RecordLines(rows)
    n = 0
    buf = bytearray()
    out: list[bytes] = []
    read = lines.reader(out, types, hdr, kind_at)
    t0 = time.thread_time()
    for chunk in chunks:
        if pause:
            time.sleep(pause)
        read(RingBuffer.replay(chunk))
        buf += b"".join(out)
        if sink is not None:
            sink.append(bytes(buf))
        del buf[:]
        n += len(out)
        out.clear()
    return (time.thread_time() - t0) / max(n, 1) * 1e6


def live(seconds: float) -> dict[str, Any]:
    """RecordLines on the agent's own sensors for `seconds`, reading as often
    as the agent does (max_delay / READS_PER_WINDOW) and writing the lines to
    a file, as the agent writes its capture: its CPU share (process time,
    the kernel's share of reading and writing included) and what it wrote."""
    with tempfile.TemporaryDirectory(prefix="bw-record-lines-") as work:
        cfg = agent_config.parse(f'[outputs.capture]\ndirectory = "{work}/capture"\n')
        mon = Agent(cfg).start_source(cfg, False, fallback=False)
        try:
            out: list[bytes] = []
            read = RecordLines(dict(mon._row_decoders)).reader(out, list(mon._decoders), mon.sensors[0].hdr_dtype,
                                                               mon._kind_at)
            pause, ring = mon.max_delay / READS_PER_WINDOW, mon._ring
            lost0 = sum(mon.lost().values())
            n = written = 0
            fd = os.open(f"{work}/lines", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                t0, c0 = time.monotonic(), time.process_time()
                while time.monotonic() - t0 < seconds:
                    time.sleep(pause)
                    read(ring)
                    data = b"".join(out)
                    os.write(fd, data)
                    n, written = n + len(out), written + len(data)
                    out.clear()
                    if written > 64 << 20:  # as a capture segment closes
                        os.ftruncate(fd, 0)
                        os.lseek(fd, 0, os.SEEK_SET)
                        written = 0
                wall, cpu = time.monotonic() - t0, time.process_time() - c0
            finally:
                os.close(fd)
            lost = sum(mon.lost().values()) - lost0
        finally:
            mon.close()
    return {"cpu_pct_of_core": round(cpu / wall * 100, 3), "events_per_s": round(n / wall), "lost": lost}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--live", type=float, required=True, metavar="SECONDS")
    args = ap.parse_args()
    print(orjson.dumps(live(args.live)).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
