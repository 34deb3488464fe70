"""The batch decoding pieces without a kernel: the reorder window, records
unpacked as runs (fixed and variable size, padded to size classes), and the
dispatch of runs that mix event types. Each is held against a plain one-by-one
reference on generated input."""

from __future__ import annotations

import itertools
import random
import re
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfwatch.btf_dtype import LayoutError, picker, record_struct
from bpfwatch.pipeline.reorder import ReorderWindow
from bpfwatch.ringbuf import BUSY_BIT, DISCARD_BIT, SHORT_RUN, RingBuffer, Run
from bpfwatch.sensors.base import Fields, RowDecoder, Sensor, dispatch

HDR = np.dtype({"names": ["ts_boot_ns", "type", "pid"], "formats": ["<u8", "<u4", "<u4"],
                "offsets": [0, 8, 12], "itemsize": 16})
REC = np.dtype({"names": ["ts_boot_ns", "type", "pid", "a", "name_len", "comm"],
                "formats": ["<u8", "<u4", "<u4", "<i8", "<u2", "S6"],
                "offsets": [0, 8, 12, 16, 24, 26], "itemsize": 32})


def _record(i: int, kind: int, tail: bytes, size: int) -> bytes:
    fixed = record_struct(REC).pack(1000 + i, kind, i, -i, len(tail), b"c%d" % (i % 7))
    return (fixed + tail).ljust(size, b"\xee")  # padding: stale bytes, as the kernel's size classes leave


def _run(records: list[bytes], as_memoryview: bool = False) -> Run:
    """Records of one length laid out as the ring does: 8-byte headers, 8-byte
    aligned; in an ndarray, or a memoryview as RingBuffer hands them out."""
    length = len(records[0])
    stride = (length + 8 + 7) & ~7
    buf = bytearray(8)
    for r in records:
        buf += r.ljust(stride, b"\0")
    data = memoryview(bytes(buf)) if as_memoryview else np.frombuffer(bytes(buf), dtype=np.uint8)
    return Run(length, len(records), stride, data, 8)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=20), min_size=1, max_size=70), st.integers(0, 2))
def test_variable_rows_match_one_by_one(tails, pick):
    size = 32 + 64  # every record padded to one size class
    records = [_record(i, 3, t, size) for i, t in enumerate(tails)]
    run = _run(records)
    idx = None if pick == 0 else [i for i in range(len(records)) if i % (pick + 1) == 0]
    got = [(r.pid, r.a, r.comm.rstrip(b"\0"), tail[: r.name_len]) for r, tail in Sensor.variable_rows(run, idx, REC)]
    want = [(i, -i, b"c%d" % (i % 7), tails[i]) for i in (range(len(records)) if idx is None else idx)]
    assert got == want
    # the dict form says the same
    dicts = [(d["pid"], d["a"]) for d, _ in Sensor.variable_records(run, idx, REC)]
    assert dicts == [(p, a) for p, a, _, _ in want]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.binary(max_size=20), min_size=1, max_size=70), st.integers(0, 3), st.booleans())
def test_fields_match_one_by_one(tails, pick, as_memoryview):
    """The hot decoders' plain tuples: the chosen fields only, in the record's
    order, for single records, short runs, long runs and picked indexes."""
    size = 32 + 64
    records = [_record(i, 3, t, size) for i, t in enumerate(tails)]
    run = _run(records, as_memoryview)
    idx = None if pick == 0 else [i for i in range(len(records)) if i % (pick + 1) == 0]
    want_ids = list(range(len(records)) if idx is None else idx)
    f = Fields(REC, "pid a name_len comm")
    assert [(pid, a) for pid, a, _, _ in f.rows(run, idx)] == [(i, -i) for i in want_ids]
    got = [(pid, comm.rstrip(b"\0"), tail[:n]) for (pid, _, n, comm), tail in f.rows_with_tail(run, idx)]
    assert got == [(i, b"c%d" % (i % 7), tails[i]) for i in want_ids]
    assert all(len(tail) == size - REC.itemsize for _, tail in f.rows_with_tail(run, idx))


def test_fields_out_of_order_or_unknown_fail_at_load():
    with pytest.raises(LayoutError, match="not in the record's order"):
        picker(REC, ("a", "pid"))
    with pytest.raises(LayoutError, match="no field nope"):
        picker(REC, ("pid", "nope"))
    assert picker(REC, ("pid", "comm")).unpack(record_struct(REC).pack(1, 2, 3, 4, 5, b"ab")) == (3, b"ab\0\0\0\0")


def test_short_records_are_skipped():
    run = _run([b"\0" * 20, b"\0" * 20])  # shorter than REC's fixed part
    assert list(Sensor.variable_rows(run, None, REC)) == []
    assert Sensor.rows(run, REC, None) == []
    assert Fields(REC, "pid").rows(run, None) == [] and Fields(REC, "pid").rows_with_tail(run, None) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([1, 2, 3]), min_size=1, max_size=90))
def test_dispatch_keeps_ring_order_across_types(kinds):
    """Runs of one length that mix types reach each type's decoder with the
    right records, short runs (plain loop) and long ones (numpy) alike, and
    in ring order across types: a decoder may need what an earlier record of
    another type said (the file sensor's path record, then an operation that
    names the file by key)."""
    records = [_record(i, k, b"", 40) for i, k in enumerate(kinds)]
    seen: dict[int, list[int]] = {}
    order: list[int] = []

    def decoder(kind: int):
        def decode(run: Run, idx: list[int] | None, out: list) -> None:
            pids = [r.pid for r in Sensor.rows(run, REC, idx)]
            seen.setdefault(kind, []).extend(pids)
            order.extend(pids)
        return decode

    counts = {1: 0, 2: 0}
    dispatch(_run(records), {1: decoder(1), 2: decoder(2)}, HDR, [], counts)  # type 3 has no decoder
    for k in (1, 2):
        assert seen.get(k, []) == [i for i, x in enumerate(kinds) if x == k]
        assert counts[k] == kinds.count(k)
    assert 3 not in seen
    assert order == [i for i, x in enumerate(kinds) if x in (1, 2)]


def _events(ts: list[int]) -> list[dict]:
    return [{"ts": t, "n": i} for i, t in enumerate(ts)]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(st.integers(0, 10_000), max_size=40), max_size=12), st.integers(1, 3000))
def test_reorder_window_releases_in_order(batches, window):
    w = ReorderWindow(window)
    out: list[dict] = []
    now = 0
    for b in batches:
        w.add(_events(b))
        now += 700
        released = w.release(now)
        assert all(e["ts"] <= now - window for e in released)
        out += released
    out += w.release(None)
    assert len(w) == 0
    got = [e["ts"] for e in out]
    assert sorted(got) == sorted(t for b in batches for t in b)
    backwards = sum(1 for a, b in itertools.pairwise(got) if b < a)
    assert backwards <= w.late


def test_reorder_window_counts_late_events_and_compacts():
    w = ReorderWindow(100)
    w.add(_events(list(range(10_000, 20_000))))
    first = w.release(19_950)  # everything up to 19,850 leaves
    assert [e["ts"] for e in first] == list(range(10_000, 19_851))
    assert len(w) == 149  # the list was rebuilt: released events are not kept
    assert w.oldest_ts() == 19_851
    w.add(_events([5, 19_900]))  # 5 comes after newer ones left: late
    assert w.late == 1
    rest = [e["ts"] for e in w.release(None)]
    assert rest[0] == 5 and rest[1:] == sorted(rest[1:])


def test_reorder_merge_keeps_order_when_batches_overlap():
    rng = random.Random(7)
    w = ReorderWindow(10**9)
    allts = []
    for _ in range(50):
        batch = sorted(rng.randrange(0, 1000) for _ in range(30))
        allts += batch
        w.add(_events(batch))
    assert [e["ts"] for e in w.release(None)] == sorted(allts)


def test_strided_unpack_matches_numpy_view():
    records = [_record(i, 1, b"x" * (i % 5), 64) for i in range(40)]
    run = _run(records)
    rows = Sensor.rows(run, REC, None)
    view = run.view(REC)
    assert [r.pid for r in rows] == view["pid"].tolist()
    assert [r.a for r in rows] == view["a"].tolist()
    assert struct.calcsize(record_struct(REC).format) == REC.itemsize


def _ring_bytes(records: list[bytes], flags: list[int]) -> bytes:
    """Records with the ring's 8-byte headers (length | flags, page offset), 8-byte aligned."""
    out = bytearray()
    for r, f in zip(records, flags, strict=True):
        out += struct.pack("<II", len(r) | f, 0) + r.ljust((len(r) + 7) & ~7, b"\0")
    return bytes(out)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.sampled_from([0, 0, 0, DISCARD_BIT])), min_size=1, max_size=60))
def test_replayed_ring_hands_out_what_was_recorded(spec):
    """RingBuffer.replay (the benchmarks' recordings) drains like the kernel's
    ring: every record once, in order, discarded ones skipped, by runs."""
    records = [_record(i, 1, b"t" * extra, 32 + extra) for i, (extra, _) in enumerate(spec)]
    raw = _ring_bytes(records, [f for _, f in spec])
    ring = RingBuffer.replay(raw)
    got: list[bytes] = []
    ring.drain(lambda run: got.extend(bytes(run.record(i)) for i in range(run.count)))
    assert got == [r for r, (_, f) in zip(records, spec, strict=True) if not f & DISCARD_BIT]
    assert ring.pending_bytes() == 0 and ring.bytes_consumed == len(raw)
    ring.close()


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1, 2, 3]), st.integers(0, 24), st.sampled_from([0, 0, 0, DISCARD_BIT])),
                min_size=1, max_size=80),
       st.sampled_from([set(), {1}, {1, 2}, {1, 2, 3}]))
def test_single_records_keep_ring_order_with_runs(spec, single_kinds):
    """Records of short runs go to their kind's single function, the rest
    (kinds without one, long runs) to the run handler: every committed record
    reaches exactly one of them, once, in ring order, and a RowDecoder turns
    each into the event its run decoder gives. Lengths repeat (runs form) or
    alternate (runs of one), and some records are shorter than the layout."""
    records = [_record(i, k, b"t" * extra, 32 + extra if extra > 4 else 14 + extra)
               for i, (k, extra, _) in enumerate(spec)]
    raw = _ring_bytes(records, [f for _, _, f in spec])
    fields = Fields(REC, "pid a name_len")
    rd = RowDecoder(fields, lambda row, tail: {"pid": row[0], "a": row[1], "tail": tail[: row[2]]}, tail=True)
    seen: list[tuple[str, int]] = []  # (path, pid) in the order handed out
    events: list[dict] = []

    def one_of(kind: int):
        inner = rd.single(kind, events, counts)

        def one(buf, off, length):
            seen.append(("single", struct.unpack_from("<I", buf, off + 12)[0]))
            inner(buf, off, length)
        return one

    counts = {1: 0, 2: 0, 3: 0}
    singles = {k: one_of(k) for k in single_kinds}

    def handle(run: Run) -> None:
        for i in range(run.count):
            seen.append(("run", struct.unpack_from("<I", run.record(i), 12)[0] if run.length >= 16 else -1))
        rd.decode(run, None, events)

    ring = RingBuffer.replay(raw)
    n = ring.drain(handle, None, singles, (8, 16))
    kept = [i for i, (_, _, f) in enumerate(spec) if not f & DISCARD_BIT]
    assert n == len(kept)
    assert [pid for _, pid in seen if pid >= 0] == [i for i in kept if len(records[i]) >= 16]
    assert [e["pid"] for e in events] == [i for i in kept if len(records[i]) >= 32]
    assert all(e["a"] == -e["pid"] and e["tail"] == b"t" * spec[e["pid"]][1] for e in events)
    assert sum(counts.values()) == sum(1 for how, _ in seen if how == "single")
    assert all(how == "run" for how, pid in seen if pid >= 0 and spec[pid][0] not in single_kinds)
    ring.close()


def test_pending_records_stop_at_one_still_being_written():
    records = [_record(i, 1, b"", 40) for i in range(4)]
    raw = _ring_bytes(records, [0, 0, BUSY_BIT, 0])
    ring = RingBuffer.replay(raw)
    assert ring.pending_records() == raw[: 2 * 48]  # two whole records; the third is not committed
    assert ring.drain(lambda run: None) == 2
    ring.close()


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=300), st.integers(4, 16))
def test_file_paths_remembered_are_the_newest_and_bounded(keys, cap):
    """The file sensor's path memory (file key -> path, per process): at most
    `cap` entries, always the most recently opened ones (an open of a key
    again makes it the newest), at least three quarters of `cap` of them."""
    from bpfwatch.sensors import file as F

    old, F.PATHS_PER_PROCESS = F.PATHS_PER_PROCESS, cap
    try:
        fs = F.FileSensor()
        order: dict[int, str] = {}
        for i, k in enumerate(keys):
            fs._remember(7, k, f"/p/{k}/{i}")
            order.pop(k, None)
            order[k] = f"/p/{k}/{i}"
            kept = fs._paths[7]
            assert len(kept) <= cap
            newest = list(order.items())[-len(kept):]
            assert list(kept.items()) == newest
            assert len(kept) >= min(len(order), cap - cap // 4)
    finally:
        F.PATHS_PER_PROCESS = old


# the fields of each event the hot decoders build from a copied shape
# (events/model.shape), in the order every output writes them (docs/events.md)
COMMON = ["ts", "time", "type", "source", "pid", "tid", "ppid", "uid", "user", "comm", "exe", "cgroup_id", "exec_id"]
ADDRESSES = ["protocol", "family", "local_addr", "local_port", "remote_addr", "remote_port"]
FILE_EXTRA = {"file.open": ["flags", "mode", "fd"], "file.mkdir": ["mode"], "file.chmod": ["mode"],
              "file.chown": ["owner_uid", "owner_gid"], "file.truncate": ["length"], "file.rename": ["new_path"],
              "file.link": ["new_path"], "file.symlink": ["target"]}
TCP_EXTRA = {"network.connect": ["result", "error", "latency_ns"], "network.accept": [],
             "network.close": ["bytes_sent", "bytes_received", "bytes_exact", "duration_ns", "closed_by",
                               "retransmits", "segs_in", "segs_out", "role"],
             "network.state": ["old_state", "new_state", "role"]}


def _sensor(cls: type, name: str) -> Sensor:
    from bpfwatch import libbpf as L
    from bpfwatch.bpf import object_path

    sensor = cls()
    with L.Btf.parse(str(object_path(name))) as btf:
        sensor.layouts(btf)
    return sensor


def _row(fields: Fields, draw: st.DrawFn, **fixed: object) -> tuple[object, ...]:
    """A row as the decoder gets it: every picked field from its struct code,
    `fixed` ones as given."""
    out = []
    codes = [(int(n or 1), c) for n, c in re.findall(r"(\d*)([a-zA-Z?])", fields.struct.format) if c != "x"]
    for name, (size, code) in zip(fields.names, codes, strict=True):
        if name in fixed:
            out.append(fixed[name])
        elif code == "s":
            out.append(draw(st.binary(min_size=size, max_size=size)))
        else:
            bits = struct.calcsize(code) * 8
            lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if code.islower() else (0, (1 << bits) - 1)
            out.append(draw(st.integers(lo, hi)))
    return tuple(out)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_file_events_keep_their_fields_in_order(data):
    """Every file operation and file.io event, whatever its record holds, has
    its type's fields in schema order: the decoder only fills the copied shape
    (a store to a misspelt key would add one at the end)."""
    from bpfwatch.sensors import file as F

    fs = _sensor(F.FileSensor, "file")
    names = {v: k for k, v in fs._kind_names.items() if v is not None}
    kind = data.draw(st.sampled_from(sorted(k for k in names if k != "file.io")))
    ret = data.draw(st.integers(-200, 300))
    lens = {n: data.draw(st.integers(0, 40)) for n in ("path1_len", "dir1_len", "path2_len", "dir2_len")}
    tail = data.draw(st.binary(min_size=sum(lens.values()), max_size=sum(lens.values()) + 8))
    row = _row(fs.op_fields, data.draw, kind=names[kind], ret=ret, nr=data.draw(st.sampled_from([2, 257, 87, 263])),
               rflags=data.draw(st.integers(0, 15)), **lens)
    ev = fs._op_event(row, tail)
    assert ev is not None
    cut = bool(row[fs.op_fields.names.index("rflags")] & (F.PATH1_TRUNC | F.PATH2_TRUNC))
    extra = FILE_EXTRA.get(ev["type"], [])
    assert list(ev) == [*COMMON, "path", "syscall", "ret", "error", *(["path_truncated"] if cut else []), *extra]
    assert (ev["error"] is None) == (ret >= 0)
    assert ev.get("path_truncated", False) is cut
    if ev["type"] == "file.open":
        assert ev["fd"] == (ret if ret >= 0 else None)
        ev["flags"].append("changed")  # each event's list is its own
        assert "changed" not in fs._op_event(row, tail)["flags"]
    io = fs._io_event(_row(fs.io_fields, data.draw))
    assert list(io) == [*COMMON, "path", "reads", "writes", "read_bytes", "write_bytes", "duration_ns", "closed"]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_process_and_tcp_events_keep_their_fields_in_order(data):
    from bpfwatch.sensors.network import NetworkSensor
    from bpfwatch.sensors.process import EXEC_PATHS_TRUNCATED, ProcessSensor

    ps = _sensor(ProcessSensor, "process")
    fork_fields = next(rd.fields for rd in ps.row_decoders.values() if rd.event == ps._fork_event)
    exit_fields = next(rd.fields for rd in ps.row_decoders.values() if rd.event == ps._exit_event)
    exec_fields = next(rd.fields for rd in ps.row_decoders.values() if rd.event == ps._exec_event)
    fork = ps._fork_event(_row(fork_fields, data.draw))
    assert list(fork) == [*COMMON, "child_pid", "child_tid", "thread", "clone_flags", "child_start_boot_ns",
                          "child_exec_id"]
    exit_ = ps._exit_event(_row(exit_fields, data.draw))
    assert list(exit_) == [*COMMON, "exit_code", "signal", "signal_name", "core_dumped", "status", "thread",
                           "duration_ns", "start_boot_ns", "user_time_ns", "system_time_ns"]
    lens = {n: data.draw(st.integers(0, 30)) for n in ("args_len", "exe_len", "cwd_len", "pexe_len", "filename_len",
                                                        "interp_len")}
    flags = data.draw(st.integers(0, 63))
    exec_ = ps._exec_event(_row(exec_fields, data.draw, flags=flags, **lens),
                           data.draw(st.binary(min_size=sum(lens.values()), max_size=sum(lens.values()) + 8)))
    cut = bool(flags & EXEC_PATHS_TRUNCATED)
    assert list(exec_) == [*COMMON, "gid", "euid", "egid", "loginuid", "argv", "argc", "argv_truncated",
                           "argv_omitted_args", "argv_omitted_bytes", "filename", "interpreter", "exe_memfd", "cwd",
                           "tty", "ns_pid", "pidns", "start_boot_ns", "parent", *(["paths_truncated"] if cut else [])]
    assert exec_.get("paths_truncated", False) is cut

    ns = _sensor(NetworkSensor, "network")
    ns.nopts.types = set(TCP_EXTRA)
    kinds = {v: k for k, v in ns._kind_names.items()}
    kind = data.draw(st.sampled_from(sorted(TCP_EXTRA)))
    tcp = ns._tcp(_row(ns.tcp_fields, data.draw, kind=kinds[kind], family=data.draw(st.sampled_from([2, 10]))))
    assert list(tcp) == [*COMMON, *ADDRESSES, *TCP_EXTRA[kind]]


def _wrapped_ring(raw: bytes, start: int) -> RingBuffer:
    """A ring whose records begin `start` bytes before the end of its data, so
    they wrap as the kernel's do (the header of a record never straddles)."""
    size = 1 << max(12, len(raw).bit_length())
    ring = RingBuffer.replay(bytes(size))
    cons = size - start
    for i, b in enumerate(raw):
        ring._bytes[(cons + i) & ring.mask] = b
    ring._cons.value = cons
    ring._prod[0] = cons + len(raw)
    return ring


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 60) | st.sampled_from([SHORT_RUN, SHORT_RUN + 1, SHORT_RUN + 3]),
                          st.sampled_from([1, 2, 3]), st.sampled_from([0, 8, 24]),
                          st.sampled_from([0, 0, 0, DISCARD_BIT])), min_size=1, max_size=12),
       st.integers(0, 64).map(lambda k: k * 8), st.sampled_from([None, 64, 200, 1000, 4096]),
       st.sampled_from([set(), {1}, {1, 2, 3}]))
def test_drain_walks_runs_budgets_and_wraps_in_order(groups, start, budget, single_kinds):
    """Groups of alike records (1 to 60 in a row, so runs longer than
    SHORT_RUN form), wrapping past the end of the ring, read in byte budgets:
    every committed record reaches its kind's single function or the run
    handler exactly once, in ring order; runs longer than SHORT_RUN go out
    as one Run, and every other record with a single function to it."""
    records, flags, kinds = [], [], []
    for count, kind, extra, flag in groups:
        for _ in range(count):
            records.append(_record(len(records), kind, b"t" * extra, 32 + extra))
            flags.append(flag)
            kinds.append(kind)
    raw = _ring_bytes(records, flags)
    ring = _wrapped_ring(raw, start)
    # each record's run (records alike in a row, whatever group they came in), and the one that wraps
    run_of, wraps, laps, pos = [], set(), [], 0
    for i, r in enumerate(records):
        same = i > 0 and len(r) == len(records[i - 1]) and flags[i] == flags[i - 1]
        run_of.append(run_of[-1] if same else i)
        stride = 8 + ((len(r) + 7) & ~7)
        at = ring.size - start + pos  # where it starts, counted from the ring's beginning before the records
        laps.append((at + stride - 1) // ring.size)  # on which side of the ring's end it ends
        if at // ring.size != laps[-1]:
            wraps.add(i)
        pos += stride
    run_len = [run_of.count(run_of[i]) for i in range(len(records))]
    # runs that the ring's end cuts in two
    cut = {run_of[i] for i in range(len(records)) if i in wraps or (i and run_of[i] == run_of[i - 1]
                                                                     and laps[i] != laps[i - 1])}
    got: list[tuple[str, int]] = []
    singles = {k: (lambda buf, off, length: got.append(("single", struct.unpack_from("<I", buf, off + 12)[0])))
               for k in single_kinds}

    def handle(run: Run) -> None:
        got.extend(("run" if run.count > SHORT_RUN else "one", struct.unpack_from("<I", run.record(i), 12)[0])
                   for i in range(run.count))

    for _ in range(len(records) + 2):
        ring.drain(handle, budget, singles or None, (8, 16))
    assert ring.pending_bytes() == 0
    assert [pid for _, pid in got] == [i for i, f in enumerate(flags) if not f]
    for how, pid in got:
        if how == "run":  # a run is cut by a byte budget or the ring's end, never joined across them
            assert run_len[pid] > SHORT_RUN
        elif how == "single":
            assert kinds[pid] in single_kinds and pid not in wraps
        elif singles:
            assert kinds[pid] not in single_kinds or pid in wraps or run_len[pid] > SHORT_RUN
        if budget is None and run_of[pid] not in cut and run_len[pid] > SHORT_RUN:
            assert how == "run"  # nothing cut it


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=2, max_size=80), st.data())
def test_a_failing_decoder_leaves_its_record_and_the_rest_unread(extras, data):
    """A single function that fails: the error comes out of drain as it was
    raised, the records before it are consumed, and the next drain starts at
    the one that failed."""
    fail_at = data.draw(st.integers(0, len(extras) - 1))
    records = [_record(i, 1, b"t" * e, 32 + e) for i, e in enumerate(extras)]
    ring = RingBuffer.replay(_ring_bytes(records, [0] * len(records)))
    got: list[int] = []

    def one(buf, off, length):
        pid = struct.unpack_from("<I", buf, off + 12)[0]
        if pid == fail_at and not got.count(-1):
            got.append(-1)
            raise KeyError("decoder bug")
        got.append(pid)

    def handle(run: Run) -> None:
        got.extend(struct.unpack_from("<I", run.record(i), 12)[0] for i in range(run.count))

    with pytest.raises(KeyError, match="decoder bug"):
        ring.drain(handle, None, {1: one}, (8, 16))
    assert got == [*range(fail_at), -1]
    ring.drain(handle, None, {1: one}, (8, 16))
    assert got == [*range(fail_at), -1, *range(fail_at, len(records))]
    assert ring.pending_bytes() == 0
