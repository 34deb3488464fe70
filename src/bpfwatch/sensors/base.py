"""What every sensor shares: object lifetime, ring buffer, lost-event count."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bpfwatch import libbpf as L
from bpfwatch.bpf import object_path
from bpfwatch.btf_dtype import struct_dtype
from bpfwatch.errors import UsageError
from bpfwatch.ringbuf import RingBuffer, Run

DEFAULT_RING_SIZE = 16 << 20


@dataclass(slots=True)
class SensorOptions:
    ring_size: int = DEFAULT_RING_SIZE
    wakeup_bytes: int = 0  # BPF-side wake-up batching; 0 wakes on every record


def check_ring_size(size: int) -> int:
    page = 4096
    if size < page or size & (size - 1):
        raise UsageError(f"ring buffer size {size} must be a power of two of at least {page} bytes")
    return size


class Sensor:
    """Loads `bpf/<object_name>.bpf.o`, attaches it, and decodes its records.

    Subclasses set `name`/`object_name`, and may override `configure` (before
    load), `populate` (after load) and `decode` (one run of records).
    """

    name = ""
    object_name = ""

    def __init__(self, options: SensorOptions | None = None) -> None:
        self.options = options or SensorOptions()
        check_ring_size(self.options.ring_size)
        self.obj: L.BpfObject | None = None
        self.ring: RingBuffer | None = None
        self.events = 0
        self._zero_key = b"\0\0\0\0"

    # -- lifecycle -----------------------------------------------------------

    def open(self) -> None:
        obj = L.BpfObject(str(object_path(self.object_name)))
        try:
            obj.map("bw_events").max_entries = self.options.ring_size
            obj.set_rodata(bw_wakeup_bytes=self.options.wakeup_bytes)
            self.configure(obj)
            obj.load()
            self.obj = obj
            self.populate(obj)
            self.layouts(obj.btf())
            obj.attach_all()
            self.ring = RingBuffer(obj.map("bw_events").fd, self.options.ring_size, self.name)
        except BaseException:
            self.obj = None
            obj.close()
            raise

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

    # -- hooks ---------------------------------------------------------------

    def configure(self, obj: L.BpfObject) -> None:
        pass

    def populate(self, obj: L.BpfObject) -> None:
        pass

    def layouts(self, btf: L.Btf) -> None:
        """Builds the decoder's dtypes from the loaded object's BTF."""
        self.hdr_dtype = struct_dtype(btf, "bw_hdr")

    def decode(self, run: Run, out: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    # -- consuming -------------------------------------------------------------

    def drain(self, out: list[dict[str, Any]], max_bytes: int | None = None) -> int:
        assert self.ring is not None
        n = self.ring.drain(self._decoder(out), max_bytes)
        self.events += n
        return n

    def _decoder(self, out: list[dict[str, Any]]) -> Callable[[Run], None]:
        return lambda run: self.decode(run, out)

    def lost(self) -> int:
        """Records the kernel could not put in the ring (summed over CPUs)."""
        if self.obj is None:
            return 0
        return self.obj.map("bw_lost").percpu_u64_sum(self._zero_key)
