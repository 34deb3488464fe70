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

from bpfwatch import syscalls
from bpfwatch.btf_dtype import struct_dtype
from bpfwatch.ringbuf import RingBuffer
from conftest import ROOT

sys.path.append(str(ROOT / "bench"))  # after the project and tests: its names shadow none
import floor


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
