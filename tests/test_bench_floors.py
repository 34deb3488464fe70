"""The floors the benchmarks measure bpfwatch against do what they say:
a floor that made no records, or counted nothing, would flatter every
comparison with it. The objects are attached by bench/floor.py itself, as
the benchmarks attach them."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfwatch import libbpf as L
from bpfwatch import syscalls
from bpfwatch.bpf import object_path
from bpfwatch.btf_dtype import struct_dtype
from bpfwatch.ringbuf import RingBuffer
from conftest import ROOT

sys.path.append(str(ROOT / "bench"))  # after the project and tests: its names shadow none
import floor
import pipeline_stages


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
