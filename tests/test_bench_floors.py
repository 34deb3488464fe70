"""The floors the benchmarks measure bpfwatch against do what they say:
a floor that made no records, or counted nothing, would flatter every
comparison with it. The objects are attached by bench/floor.py itself, as
the benchmarks attach them."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfwatch import libbpf as L
from bpfwatch import syscalls
from bpfwatch.bpf import object_path
from bpfwatch.btf_dtype import struct_dtype
from bpfwatch.events import text
from bpfwatch.ringbuf import RingBuffer
from conftest import ROOT

sys.path.append(str(ROOT / "bench"))  # after the project and tests: its names shadow none
import columnar_floor
import floor
import pipeline_stages
import record_lines


@pytest.mark.kernel
def test_records_floor_makes_one_record_per_reported_file_operation(tmp_path):
    """bench/floor.py records: one record for each open, fchown, fchmod and
    close, naming the thread that made the call, and none for a write."""
    nrs = syscalls.table()
    me = threading.get_native_id()
    n = 25
    with floor.attached("records") as obj:
        with obj.btf() as btf:
            dtype = struct_dtype(btf, "bw_floor_record")
        m = obj.map("bw_events")
        ring = RingBuffer(m.fd, m.max_entries, "floor")
        try:
            path = str(tmp_path / "f")
            for _ in range(n):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
                os.write(fd, b"x")
                os.fchown(fd, os.getuid(), os.getgid())
                os.fchmod(fd, 0o600)
                os.close(fd)
            rows: list[np.ndarray] = []
            ring.drain(lambda run: rows.append(run.copy(dtype)))
        finally:
            ring.close()
    recs = np.concatenate(rows)
    mine = recs[recs["tid"] == me]
    by_nr = {name: int((mine["nr"] == nrs[name]).sum()) for name in ("openat", "fchown", "fchmod", "close")}
    assert by_nr == dict.fromkeys(by_nr, n)
    assert len(mine) == 4 * n  # the writes made none
    assert (mine["pid"] == os.getpid()).all() and (mine["uid"] == os.getuid()).all()


@pytest.mark.kernel
def test_counting_floor_counts_every_call():
    """bench/floor.py exit_count: each syscall's number counted in a per-CPU cell."""
    key = syscalls.table()["getppid"].to_bytes(4, "little")
    with floor.attached("exit_count") as obj:
        counts = obj.map("bw_floor_counts")
        before = counts.percpu_u64_sum(key)
        for _ in range(1000):
            os.getppid()
        assert counts.percpu_u64_sum(key) - before >= 1000


def _ring_of(hdr: np.dtype, rows: list[tuple[int, int, int, int]]) -> bytes:
    """Ring records (8-byte header, padded to 8) of a bw_hdr each."""
    out = bytearray()
    for ts, kind, pid, tid in rows:
        rec = np.zeros(1, hdr)
        rec[0]["ts_boot_ns"], rec[0]["type"], rec[0]["pid"], rec[0]["tid"] = ts, kind, pid, tid
        body = rec.tobytes()
        out += len(body).to_bytes(4, "little") + bytes(4) + body + bytes(-len(body) % 8)
    return bytes(out)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, (1 << 63) - 1), st.sampled_from([1, 2, 3]),
                          st.integers(0, (1 << 32) - 1), st.integers(0, (1 << 32) - 1)), min_size=1, max_size=60),
       st.integers(1, 4))
def test_json_line_floor_writes_the_dict_floors_lines_byte_for_byte(rows, reads):
    """pipeline_stages.py's two floors: the template floor is only a floor of
    the same output if it writes what the dict floor's encoder writes."""
    with L.Btf.parse(str(object_path("process"))) as btf:
        hdr = struct_dtype(btf, "bw_hdr")
    step = -(-len(rows) // reads)
    chunks = [_ring_of(hdr, rows[i: i + step]) for i in range(0, len(rows), step)]
    dict_lines, template_lines = bytearray(), bytearray()
    pipeline_stages.replay_floor(chunks, hdr, [1, 2], sink=dict_lines)
    pipeline_stages.replay_line_floor(chunks, hdr, [1, 2], sink=template_lines)
    assert template_lines == dict_lines
    assert dict_lines.count(b"\n") == sum(1 for r in rows if r[1] in (1, 2))


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.lists(st.integers(-(1 << 63), (1 << 63) - 1), min_size=1, max_size=40).map(
                     lambda v: np.array(v, np.int64)),
                 st.lists(st.integers(0, (1 << 64) - 1), min_size=1, max_size=40).map(
                     lambda v: np.array(v, np.uint64)),
                 st.lists(st.integers(-(1 << 31), (1 << 31) - 1), min_size=1, max_size=40).map(
                     lambda v: np.array(v, np.int32))))
def test_columnar_digits_are_the_integers_text(values):
    """The columnar floor's integers, four digits at a time: each one as
    Python writes it, signs and zero and the 64-bit ends included."""
    digits, width = columnar_floor.digits(values)
    for row, w, v in zip(digits, width, values.tolist(), strict=True):
        assert bytes(row[len(row) - w:]) == str(v).encode()


@pytest.mark.kernel
def test_columnar_and_record_by_record_floors_write_the_same_events(tmp_path):
    """The record-line floor (record_lines.py) and its columnar twin are
    only two ways to the same output if they write the same events from the
    same records: the agent's own ring, after real execs, opens (one of a
    name that is not UTF-8), file totals and TCP connections."""
    agent, mon = pipeline_stages.make_agent(tmp_path)
    try:
        target = tmp_path / "opened"
        code = ("import os, socket, subprocess, sys\n"
                f"p = {str(target)!r}\n"
                "for _ in range(40):\n"
                "    f = open(p, 'w'); f.write('x'); f.close()\n"
                "open(os.path.join(os.path.dirname(p), os.fsdecode(b'not-utf8-\\xff')), 'w').close()\n"
                "srv = socket.create_server(('127.0.0.1', 0))\n"
                "for _ in range(5):\n"
                "    c = socket.create_connection(srv.getsockname()); a, _ = srv.accept(); a.close(); c.close()\n"
                "subprocess.run(['/bin/true'])\n")
        subprocess.run([sys.executable, "-c", code], check=True)
        chunk = mon._ring.pending_records()
        hdr, types, rows, kind_at = mon.sensors[0].hdr_dtype, list(mon._decoders), dict(mon._row_decoders), mon._kind_at
    finally:
        mon.close()
        agent.close_outputs()
    by_record: list[bytes] = []
    in_columns: list[bytes] = []
    record_lines.replay_record_line_floor([chunk], rows, types, kind_at, hdr, sink=by_record)
    columnar_floor.replay_columnar_floor([chunk], rows, types, kind_at, hdr, sink=in_columns)

    def events(lines: list[bytes]) -> list[bytes]:  # each parsed, then written again with sorted keys
        return sorted(text.dumps(text.loads(line), option=orjson.OPT_SORT_KEYS)
                      for line in b"".join(lines).splitlines())

    mine = events(by_record)
    assert mine == events(in_columns)
    kinds = {text.loads(e)["type"] for e in mine}
    assert len(kinds) >= 5, kinds  # exec, fork, exit, file operations and totals, TCP at least
    assert sum(str(target).encode() in e for e in mine) >= 40
    assert any(b"not-utf8-\\udcff" in e for e in mine)  # a name that is not UTF-8, kept (docs/events.md)
