"""What every sensor shares: object lifetime, ring buffer, lost-event count."""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bpfwatch import libbpf as L
from bpfwatch.bpf import object_path
from bpfwatch.btf_dtype import field_names, padded_struct, picker, record_tuple, struct_dtype
from bpfwatch.errors import UsageError
from bpfwatch.ringbuf import RingBuffer, Run
from bpfwatch.sensors import chain

_U32 = struct.Struct("<I")
Decoder = Callable[[Run, "list[int] | None", list[dict[str, Any]]], None]

DEFAULT_RING_SIZE = 16 << 20


@dataclass(slots=True)
class SensorOptions:
    ring_size: int = DEFAULT_RING_SIZE
    wakeup_bytes: int = 0  # BPF-side wake-up batching; 0 wakes on every record

    def __post_init__(self) -> None:
        check_ring_size(self.ring_size)
        check_wakeup_bytes(self.wakeup_bytes, self.ring_size)


COMM_LEN = 16


@dataclass(slots=True)
class Scope:
    """Which processes every sensor looks at, decided in the kernel
    (bw_filter.bpf.h). One sensor owns the shared maps; the others reuse them
    by fd through `shared`."""

    pids: set[int] | None = None   # tgids (None: all)
    follow: set[int] = field(default_factory=set)  # of those, the ones whose descendants join
    uid: int | None = None
    comms: set[str] | None = None  # exact names (<= 15 bytes)
    deny_pids: set[int] = field(default_factory=set)
    deny_comms: set[str] = field(default_factory=set)
    cgroups: set[int] | None = None  # allowed cgroup ids
    deny_cgroups: set[int] = field(default_factory=set)
    shared: dict[str, int] = field(default_factory=dict)

    # shared by every sensor: the scope maps, and the one ring buffer all write to
    MAPS = ("bw_tracked", "bw_comms", "bw_deny_pids", "bw_deny_comms", "bw_cgroups", "bw_events")

    def validate(self) -> None:
        for c in (self.comms or set()) | self.deny_comms:
            if len(c.encode()) >= COMM_LEN:
                raise UsageError(f"comm '{c}' is longer than the kernel's {COMM_LEN - 1} bytes")

    def rodata(self) -> dict[str, int]:
        return {"flt_tracked": int(self.pids is not None), "flt_uid_on": int(self.uid is not None),
                "flt_uid": self.uid or 0, "flt_comm": int(self.comms is not None),
                "flt_deny_comm": int(bool(self.deny_comms)), "flt_deny_pid": int(bool(self.deny_pids)),
                "flt_cgroup": (1 if self.cgroups is not None else 0) | (2 if self.deny_cgroups else 0)}


def dispatch(run: Run, decoders: dict[int, Decoder], hdr_dtype: np.dtype, out: list[dict[str, Any]],
             counts: dict[int, int] | None = None) -> None:
    """Hands each record of a run to the decoder of its event type (a ring may
    carry several sensors' records: their type ids are distinct), counting
    the records of each type decoded in `counts`.

    Records go in ring order: consecutive records of one type are one call,
    and a type that comes back later gets another. A decoder may need what an
    earlier record of another type said (the file sensor's path record, then
    an operation naming that file by key), so a run is never regrouped by type."""
    if run.length < hdr_dtype.itemsize:
        return
    type_off = hdr_dtype.fields["type"][1]
    count = run.count
    if count == 1:  # variable-length records come one by one: no numpy here
        t = _U32.unpack_from(run.buf, run.offset + type_off)[0]
        fn = decoders.get(t)
        if fn is not None:
            fn(run, None, out)
            if counts is not None:
                counts[t] += 1
        return
    if count <= 32:  # numpy's per-call cost outweighs a short loop
        unpack, buf, base, stride = _U32.unpack_from, run.buf, run.offset + type_off, run.stride
        kinds = [unpack(buf, base + i * stride)[0] for i in range(count)]
        starts = [0, *(i for i in range(1, count) if kinds[i] != kinds[i - 1])]
        firsts = [kinds[a] for a in starts]
    else:
        types = run.view(hdr_dtype)["type"]
        starts = [0, *(np.flatnonzero(types[1:] != types[:-1]) + 1).tolist()]
        firsts = types[starts].tolist()
    for t, a, b in zip(firsts, starts, [*starts[1:], count], strict=True):
        fn = decoders.get(t)
        if fn is not None:
            fn(run if b - a == count else Run(run.length, b - a, run.stride, run.buf, run.offset + a * run.stride),
               None, out)
            if counts is not None:
                counts[t] += b - a


MAX_RING_SIZE = 1 << 30  # the kernel's limit for a BPF ring buffer is lower than this in practice


def check_ring_size(size: int) -> int:
    page = 4096
    if isinstance(size, bool) or not isinstance(size, int) or size < page or size > MAX_RING_SIZE \
            or size & (size - 1):
        raise UsageError(f"ring buffer size {size} must be a power of two from {page} bytes to 1 GiB")
    return size


def check_wakeup_bytes(wakeup: int, ring_size: int) -> int:
    """Wake-up batching must leave room in the ring: with a threshold at or
    above the ring's size no wake-up ever comes, and a quarter of it or more
    fills the ring before the consumer runs (113 of 200,001 events kept)."""
    if isinstance(wakeup, bool) or not isinstance(wakeup, int) or wakeup < 0:
        raise UsageError(f"wakeup_bytes {wakeup!r} must be a size in bytes (0 wakes on every record)")
    if wakeup > ring_size // 4:
        raise UsageError(f"wakeup_bytes {wakeup} is more than a quarter of the ring buffer ({ring_size} bytes): "
                         "events would be lost before the consumer wakes; lower it or raise the ring size")
    return wakeup


@dataclass
class Request:
    """What a Monitor was asked for, as each sensor plans itself from it: the
    event types, both sides of the filter, and the settings a sensor may take
    (udp_idle, dns_port, rules, syscall_counts, ...)."""

    types: set[str]
    allow: Any
    deny: Any
    settings: dict[str, Any]

    def types_of(self, family: str) -> set[str]:
        return {t for t in self.types if t.startswith(family + ".")}


class Fields:
    """Chosen fields of one record layout, unpacked as plain tuples (see
    btf_dtype.picker): what the hot decoders read records with. Records
    shorter than the layout are skipped."""

    __slots__ = ("names", "size", "struct")

    def __init__(self, dtype: np.dtype, names: str) -> None:
        self.names = tuple(names.split())
        self.size = dtype.itemsize
        self.struct = picker(dtype, self.names)

    def rows(self, run: Run, idx: list[int] | None) -> list[tuple[Any, ...]]:
        count, stride = run.count, run.stride
        if run.length < self.size:
            return []
        unpack, buf, base = self.struct.unpack_from, run.buf, run.offset
        if count == 1:
            return [unpack(buf, base)]
        if count <= 8 or (idx is not None and len(idx) <= 16):
            return [unpack(buf, base + i * stride) for i in (range(count) if idx is None else idx)]
        used = (count - 1) * stride + run.length  # the last record may end the mapping
        block = buf[base: base + used].tobytes() + bytes(count * stride - used)
        rows = list(padded_struct(self.struct, stride).iter_unpack(block))
        return rows if idx is None else [rows[i] for i in idx]

    def rows_with_tail(self, run: Run, idx: list[int] | None) -> list[tuple[tuple[Any, ...], bytes]]:
        """(fields, the bytes after the fixed part) of each variable-size record."""
        size, length = self.size, run.length
        if length < size:
            return []
        unpack, stride = self.struct.unpack_from, run.stride
        blob = run.buf[run.offset: run.offset + (run.count - 1) * stride + length].tobytes()
        if run.count == 1:
            return [(unpack(blob), blob[size:])]
        return [(unpack(blob, o), blob[o + size: o + length])
                for o in [i * stride for i in (range(run.count) if idx is None else idx)]]


class RowDecoder:
    """One event type decoded record by record: the fields it reads, and a
    function of them (with `tail`, also of the bytes after them) that gives
    the event or None. It decodes runs (`decode`, a Decoder) and single
    records (`single`, for RingBuffer.drain), so both share one function."""

    __slots__ = ("event", "fields", "tail")

    def __init__(self, fields: Fields, event: Callable[..., dict[str, Any] | None], tail: bool = False) -> None:
        self.fields = fields
        self.event = event
        self.tail = tail

    def decode(self, run: Run, idx: list[int] | None, out: list[dict[str, Any]]) -> None:
        event = self.event
        if self.tail:
            for row, data in self.fields.rows_with_tail(run, idx):
                ev = event(row, data)
                if ev is not None:
                    out.append(ev)
        else:
            for row in self.fields.rows(run, idx):
                ev = event(row)
                if ev is not None:
                    out.append(ev)

    def single(self, kind: int, out: list[dict[str, Any]], counts: dict[int, int] | None
               ) -> Callable[[Any, int, int], None]:
        """fn(buf, offset, length) decoding the record there into `out`,
        counted in `counts` as dispatch counts (records shorter than the
        layout are counted and skipped)."""
        unpack, size, event = self.fields.struct.unpack_from, self.fields.size, self.event
        tally = counts if counts is not None else {kind: 0}
        if self.tail:
            def one(buf: Any, off: int, length: int) -> None:
                tally[kind] += 1
                if length >= size:
                    ev = event(unpack(buf, off), buf[off + size: off + length].tobytes())
                    if ev is not None:
                        out.append(ev)
        else:
            def one(buf: Any, off: int, length: int) -> None:
                tally[kind] += 1
                if length >= size:
                    ev = event(unpack(buf, off))
                    if ev is not None:
                        out.append(ev)
        return one


def singles(rows: dict[int, RowDecoder], out: list[dict[str, Any]], counts: dict[int, int] | None
            ) -> dict[int, Callable[[Any, int, int], None]]:
    """RingBuffer.drain's `singles`: each row-decoded type's record function,
    decoding into `out` (one read of the ring) and counting in `counts`."""
    return {kind: rd.single(kind, out, counts) for kind, rd in rows.items()}


@functools.lru_cache(maxsize=64)
def all_fields(dtype: np.dtype) -> Fields:
    """Fields of every field of dtype, in the record's order."""
    return Fields(dtype, " ".join(field_names(dtype)))


class Sensor:
    """Loads `bpf/<object_name>.bpf.o`, attaches it, and decodes its records.

    Subclasses set `name`/`object_name`, and may override `configure` (before
    load), `populate` (after load) and `decode` (one run of records).

    A sensor a Monitor composes also says what it provides: `plan` builds its
    options from the request (None: not needed), `adjust` changes what it
    needs of the others once all have planned (the security sensor widens the
    file sensor), and `build` makes it with its options.
    """

    name = ""
    object_name = ""
    uses_scope = True  # the object includes bw_filter.bpf.h

    @classmethod
    def plan(cls, req: Request) -> Any | None:
        return None

    @classmethod
    def adjust(cls, req: Request, plans: dict[type[Sensor], Any]) -> None:
        return None

    @classmethod
    def build(cls, opts: Any, options: SensorOptions, scope: Scope) -> Sensor:
        return cls(opts, options, scope)  # type: ignore[call-arg]

    def __init__(self, options: SensorOptions | None = None, scope: Scope | None = None) -> None:
        self.options = options or SensorOptions()
        self.scope = scope or Scope()
        self.scope.validate()
        self.obj: L.BpfObject | None = None
        self.ring: RingBuffer | None = None
        self.events = 0
        self._zero_key = b"\0\0\0\0"

    # -- lifecycle -----------------------------------------------------------

    def open(self, attach: bool = True) -> None:
        """Loads the object; attaches it too unless `attach` is False (then
        call attach() once every sensor is loaded, so all start together)."""
        self.prepare()
        self.load(attach)

    def prepare(self) -> L.BpfObject:
        """Opens and configures the object: nothing is in the kernel yet, so
        a Monitor can still change it (sensors/chain.py) before load()."""
        if self.obj is not None:
            return self.obj
        obj = L.BpfObject(str(object_path(self.object_name)))
        try:
            obj.map("bw_events").max_entries = self.options.ring_size
            obj.set_rodata(bw_wakeup_bytes=self.options.wakeup_bytes)
            if self.uses_scope:
                obj.set_rodata(**self.scope.rodata())
            self.configure(obj)
        except BaseException:
            obj.close()
            raise
        self.obj = obj
        return obj

    def load(self, attach: bool = True) -> None:
        """Loads the prepared object (preparing it first if need be), reusing
        the maps the scope shares."""
        obj = self.prepare()
        try:
            if self.uses_scope:
                for name, fd in self.scope.shared.items():
                    if name in Scope.MAPS or obj.has_map(name):
                        obj.map(name).reuse_fd(fd)
            obj.load()
            # the sensors asked the kernel's BTF their questions while preparing:
            # its ~6 MB go (the answers stay cached; libbpf reads its own copy)
            L.release_vmlinux_btf()
            if self.uses_scope and not self.scope.shared:
                self._fill_scope(obj)
            self.populate(obj)
            self.layouts(obj.btf())
            if attach:
                obj.attach_all()
            if "bw_events" not in self.scope.shared:  # the ring's owner reads it
                self.ring = RingBuffer(obj.map("bw_events").fd, self.options.ring_size, self.name)
        except BaseException:
            self.obj = None
            obj.close()
            raise

    def attach(self) -> None:
        assert self.obj is not None, "attach() needs a loaded sensor"
        self.obj.attach_all()

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        if self.obj is not None:
            self.obj.close()
            self.obj = None

    def __enter__(self) -> Sensor:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fill_scope(self, obj: L.BpfObject) -> None:
        sc = self.scope
        if sc.pids is not None:
            self.track(sc.pids - sc.follow, follow=False)
            self.track(sc.follow, follow=True)
        for name, values in (("bw_comms", sc.comms or ()), ("bw_deny_comms", sc.deny_comms)):
            m = obj.map(name)
            for c in values:
                m.update(c.encode().ljust(COMM_LEN, b"\0"), b"\1")
        deny = obj.map("bw_deny_pids")
        for pid in sc.deny_pids:
            deny.update(pid.to_bytes(4, "little"), b"\1")
        cg = obj.map("bw_cgroups")
        for ids, how in ((sc.cgroups or set(), b"\1"), (sc.deny_cgroups, b"\2")):
            for i in ids:
                cg.update(i.to_bytes(8, "little"), how)

    def shared_maps(self) -> dict[str, int]:
        """fds of the scope maps and the chains' program arrays (sensors/chain.py),
        for the other sensors to reuse."""
        assert self.obj is not None
        return {name: self.obj.map(name).fd for name in Scope.MAPS + chain.MAPS if self.obj.has_map(name)}

    def track(self, pids: set[int] | list[int], follow: bool = True) -> None:
        """Adds tgids to the kernel's tracked set; with follow, their future
        children join it too."""
        assert self.obj is not None, "track() needs a loaded sensor"
        tracked = self.obj.map("bw_tracked")
        how = b"\2" if follow else b"\1"
        for pid in pids:
            tracked.update(int(pid).to_bytes(4, "little"), how)

    def tracked(self) -> set[int]:
        if self.obj is None:
            return set()
        return {int.from_bytes(k, "little") for k in self.obj.map("bw_tracked").keys()}

    # -- hooks ---------------------------------------------------------------

    def configure(self, obj: L.BpfObject) -> None:
        pass

    def populate(self, obj: L.BpfObject) -> None:
        pass

    def layouts(self, btf: L.Btf) -> None:
        """Builds the decoder's dtypes from the loaded object's BTF; subclasses
        fill `decoders` (event type id -> fn(run, indexes or None, out)), and
        through `decode_rows` the types they decode record by record."""
        self.hdr_dtype = struct_dtype(btf, "bw_hdr")
        self.decoders: dict[int, Decoder] = {}
        self.row_decoders: dict[int, RowDecoder] = {}

    def decode_rows(self, rows: dict[int, RowDecoder]) -> None:
        """Event types decoded one record at a time: runs through `decoders`,
        and short runs record by record (Monitor.poll, RingBuffer.drain)."""
        self.row_decoders.update(rows)
        self.decoders.update({kind: rd.decode for kind, rd in rows.items()})

    def singles(self, out: list[dict[str, Any]], counts: dict[int, int] | None = None
                ) -> dict[int, Callable[[Any, int, int], None]]:
        """RingBuffer.drain's `singles` for this sensor's row-decoded types."""
        return singles(self.row_decoders, out, counts)

    def kind_at(self) -> tuple[int, int]:
        """Where a record's event type is, and the least a record holds (its header)."""
        return self.hdr_dtype.fields["type"][1], self.hdr_dtype.itemsize

    def decode(self, run: Run, out: list[dict[str, Any]]) -> None:
        """Dispatches a run to the decoder of each event type in it."""
        dispatch(run, self.decoders, self.hdr_dtype, out)

    @staticmethod
    def records(run: Run, dtype: np.dtype, idx: list[int] | None) -> list[dict[str, Any]]:
        """Sensor.rows as dicts, for decoders off the hot path (byte arrays come as bytes)."""
        return [r._asdict() for r in Sensor.rows(run, dtype, idx)]

    @staticmethod
    def rows(run: Run, dtype: np.dtype, idx: list[int] | None) -> list[Any]:
        """The fixed parts of a run's records (laid out as dtype) as named
        tuples of every field (Fields, for decoders off the hot path). Byte
        arrays come as bytes."""
        return list(map(record_tuple(dtype)._make, all_fields(dtype).rows(run, idx)))

    @staticmethod
    def variable_rows(run: Run, idx: list[int] | None, dtype: np.dtype) -> Iterator[tuple[Any, bytes]]:
        """(fixed part as a named tuple, the bytes after it) of each
        variable-size record; records shorter than the fixed part are skipped."""
        make = record_tuple(dtype)._make
        return ((make(r), tail) for r, tail in all_fields(dtype).rows_with_tail(run, idx))

    @staticmethod
    def variable_records(run: Run, idx: list[int] | None, dtype: np.dtype
                         ) -> Iterator[tuple[dict[str, Any], bytes]]:
        """variable_rows with the fixed part as a dict."""
        return ((r._asdict(), tail) for r, tail in Sensor.variable_rows(run, idx, dtype))

    def tick(self, out: list[dict[str, Any]], exited: list[int], force: bool = False) -> None:
        """Periodic work between drains (e.g. ending idle flows); `out` holds
        the read's events and `exited` the pids whose exit it read; `force` at the end."""

    def after_enrich(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A last look at a batch once enriched (exe, user known)."""
        return events

    # -- consuming -------------------------------------------------------------

    def drain(self, out: list[dict[str, Any]], max_bytes: int | None = None) -> int:
        assert self.ring is not None
        n = self.ring.drain(lambda run: self.decode(run, out), max_bytes, self.singles(out), self.kind_at())
        self.events += n
        return n

    def lost(self) -> int:
        """Records the kernel could not put in the ring (summed over CPUs)."""
        if self.obj is None:
            return 0
        return self.obj.map("bw_lost").percpu_u64_sum(self._zero_key)
