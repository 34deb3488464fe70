"""Batch consumer of a BPF_MAP_TYPE_RINGBUF, reading the mmapped ring directly.

Layout (kernel/bpf/ringbuf.c): page 0 holds the consumer position (the only
page user space may write); page 1 the producer position; the data pages
follow. The kernel offers them mapped twice in a row so a wrapping record is
contiguous, but it populates the whole mapping at mmap time, so that would
double the resident size: we map them once and assemble the rare record that
straddles the end. Each record has an 8-byte header (u32 length with
BUSY/DISCARD bits, u32 page offset); records are 8-byte aligned, so a header
never straddles.

Records of equal length that follow each other are handed out as one strided
numpy view, so a burst of fixed-size events is decoded with a handful of
numpy operations instead of a Python call per event.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import mmap
import select
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HDR_SIZE = 8
SHORT_RUN = 32  # runs up to this long go record by record to `singles` (the faster way up to ~32)


@dataclass(slots=True)
class Run:
    """`count` consecutive records of `length` bytes each, `stride` apart,
    starting at `offset` of `buf` (the ring's data pages).

    Views are valid only until the consumer position is advanced, so decoders
    must copy what they keep.
    """

    length: int
    count: int
    stride: int
    buf: memoryview | np.ndarray  # bytes-like: slices and struct.unpack_from on it are cheap
    offset: int

    def view(self, dtype: np.dtype) -> np.ndarray:
        """The records as a strided structured array (zero-copy)."""
        return np.ndarray((self.count,), dtype=dtype, buffer=self.buf, offset=self.offset,
                          strides=(self.stride,))

    def copy(self, dtype: np.dtype) -> np.ndarray:
        """The records copied out of the ring as a structured array.

        The run is one contiguous block of the ring, so it is copied as flat
        bytes (a memcpy) and viewed through `dtype` padded to the stride; a
        structured copy of the strided view goes field by field, 20x slower.
        """
        used = (self.count - 1) * self.stride + self.length  # the last record may end the mapping
        block = np.empty(self.count * self.stride, dtype=np.uint8)
        block[:used] = self.buf[self.offset: self.offset + used]
        padded = _padded(dtype, self.stride)
        return np.frombuffer(block, dtype=padded, count=self.count)

    def record(self, i: int = 0) -> memoryview:
        """The bytes of record i."""
        start = self.offset + i * self.stride
        return memoryview(self.buf)[start: start + self.length]


@functools.lru_cache(maxsize=64)
def _padded(dtype: np.dtype, itemsize: int) -> np.dtype:
    fields = dtype.fields or {}
    return np.dtype({"names": list(fields), "formats": [f[0] for f in fields.values()],
                     "offsets": [f[1] for f in fields.values()], "itemsize": itemsize})


class RingBuffer:
    """Consumer side of one ring buffer map, given its fd and data size."""

    def __init__(self, map_fd: int, size: int, name: str = "") -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring buffer size {size} is not a power of two")
        self.name = name
        self.size = size
        self.mask = size - 1
        self.fd = map_fd
        page = mmap.PAGESIZE
        self._cons_mm = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod_mm = mmap.mmap(map_fd, page + size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        # one aligned 8-byte store publishes the consumer position
        self._cons = ctypes.c_uint64.from_buffer(self._cons_mm)
        self._prod = np.frombuffer(self._prod_mm, dtype=np.uint64, count=1)
        self._data = np.frombuffer(self._prod_mm, dtype=np.uint8, offset=page)
        # headers read one at a time as plain u32s (a numpy scalar read costs 20x more)
        self._u32 = memoryview(self._prod_mm)[page:].cast("I")
        # what the decoders get: slicing a memoryview costs a third of slicing an ndarray
        self._bytes = memoryview(self._prod_mm)[page:]
        self.bytes_consumed = 0

    @classmethod
    def replay(cls, records: bytes, name: str = "replay") -> RingBuffer:
        """A ring over recorded bytes (records with their headers, as drained
        from a real ring): drain() reads them once, exactly as it reads the
        kernel's. For benchmarks and tests that replay a recording."""
        ring = cls.__new__(cls)
        size = 1 << max(12, (len(records) - 1).bit_length())
        buf = bytearray(size)
        buf[: len(records)] = records
        ring.name, ring.size, ring.mask, ring.fd = name, size, size - 1, -1
        ring._cons_mm = None  # type: ignore[assignment]  # nothing mapped: close() has nothing to do
        ring._cons = ctypes.c_uint64(0)  # type: ignore[assignment]
        ring._prod = np.array([len(records)], dtype=np.uint64)
        ring._data = np.frombuffer(buf, dtype=np.uint8)
        ring._u32 = memoryview(buf).cast("I")
        ring._bytes = memoryview(buf)
        ring.bytes_consumed = 0
        return ring

    def pending_records(self) -> bytes:
        """A copy of the committed records not consumed yet (headers
        included, up to the first one still being written), as replay()
        takes them: for recording what the next drain reads."""
        cons, prod = self.consumer_pos, self.producer_pos
        a, b = cons & self.mask, prod & self.mask
        if prod == cons:
            return b""
        raw = bytes(self._bytes[a:b]) if b > a else bytes(self._bytes[a:]) + bytes(self._bytes[:b])
        u32 = memoryview(raw).cast("I")
        end = 0
        while end < len(raw) and not u32[end >> 2] & BUSY_BIT:
            end += ((u32[end >> 2] & ~(BUSY_BIT | DISCARD_BIT)) + HDR_SIZE + 7) & ~7
        u32.release()
        return raw[:min(end, len(raw))]

    def close(self) -> None:
        if self._cons_mm is None:
            return
        del self._cons
        self._u32.release()
        self._bytes.release()
        self._prod = self._data = None  # type: ignore[assignment]
        self._cons_mm.close()
        with contextlib.suppress(BufferError):  # a caller still holds a view
            self._prod_mm.close()
        self._cons_mm = None  # type: ignore[assignment]

    @property
    def consumer_pos(self) -> int:
        return self._cons.value

    @property
    def producer_pos(self) -> int:
        return int(self._prod[0])

    def pending_bytes(self) -> int:
        return self.producer_pos - self.consumer_pos

    def drain(self, handle: Callable[[Run], None], max_bytes: int | None = None,
              singles: dict[int, Callable[[memoryview, int, int], None]] | None = None,
              kind_at: tuple[int, int] = (0, 0)) -> int:
        """Hands every committed record to `handle` as runs; returns records seen.

        The consumer position is advanced after each run has been handled,
        so `handle` must copy what it keeps. Stops at the first record still
        being written (BUSY) or after max_bytes.

        With `singles` (record kind -> fn(buf, offset, length)), the records
        of short runs whose kind has a function go to it one by one, in ring
        order. A record's kind is the u32 at offset kind_at[0] of records of
        at least kind_at[1] bytes. Where sizes alternate (an open's record,
        then its file's totals) every run is one record long, and handing it
        out as a Run cost a Run, a dispatch and a decoder call: about as much
        as decoding it.
        """
        cons = self._cons.value
        prod = int(self._prod[0])
        limit = prod if max_bytes is None else min(prod, cons + max_bytes)
        data, u32, mask, size = self._bytes, self._u32, self.mask, self.size
        kind_off, min_len = kind_at
        if kind_off % 4:
            raise ValueError(f"record kind at offset {kind_off}: not a u32 boundary")
        short = SHORT_RUN if singles else 0
        seen = 0
        start = cons
        try:
            while cons < limit:
                off = cons & mask
                hdr = u32[off >> 2]
                if hdr & BUSY_BIT:
                    break
                length = hdr & ~(BUSY_BIT | DISCARD_BIT)
                stride = (length + HDR_SIZE + 7) & ~7
                nmax = (limit - cons) // stride
                if nmax == 0 and limit < prod:
                    break  # the byte budget is spent; the rest waits for the next call
                fits = (size - off) // stride  # whole records before the end of the data
                n = min(nmax, fits)
                run = 1
                if n > 1 and u32[(off + stride) >> 2] == hdr:
                    run = self._run_length(off, stride, hdr, n)
                if not hdr & DISCARD_BIT:
                    if fits == 0:  # this record wraps: join its two parts
                        joined = memoryview(bytes(data[off + HDR_SIZE:]) + bytes(data[: stride - (size - off)]))
                        handle(Run(length, 1, stride, joined, 0))
                    elif run <= short and length >= min_len:
                        rec = off + HDR_SIZE
                        for _ in range(run):
                            fn = singles.get(u32[(rec + kind_off) >> 2])  # type: ignore[union-attr]
                            if fn is None:
                                handle(Run(length, 1, stride, data, rec))
                            else:
                                fn(data, rec, length)
                            rec += stride
                    else:
                        handle(Run(length, run, stride, data, off + HDR_SIZE))
                    seen += run
                cons += run * stride
                self._cons.value = cons  # the kernel gets the space back at once
        finally:
            self.bytes_consumed += cons - start
        return seen

    def _run_length(self, off: int, stride: int, hdr: int, n: int) -> int:
        """How many of the next n records (stride apart) carry header `hdr`:
        scanned in growing windows, so a short run costs little and a long one
        is still a few vector operations."""
        u32 = self._u32
        for k in range(1, min(n, 16)):  # short runs are common: plain reads before numpy
            if u32[(off + k * stride) >> 2] != hdr:
                return k
        if n <= 16:
            return n
        done, window = 16, 64
        while done < n:
            w = min(window, n - done)
            hdrs = np.ndarray((w,), dtype=np.uint32, buffer=self._data, offset=off + done * stride,
                              strides=(stride,))
            diff = np.flatnonzero(hdrs != hdr)
            if diff.size:
                return done + int(diff[0])
            done += w
            window *= 8
        return n


class Poller:
    """Waits on several ring buffers with epoll; the timeout bounds the delay
    added by BPF-side wake-up batching."""

    def __init__(self) -> None:
        self._ep = select.epoll()
        self._rings: dict[int, RingBuffer] = {}

    def add(self, ring: RingBuffer) -> None:
        # Edge-triggered: level-triggered epoll reports a ring ready whenever it
        # holds any byte, so a steady producer made every wait return at once and
        # defeated the kernel's wake-up batching (one poll per few records). With
        # edges only the kernel's wake-ups count; what is left waits for the timeout.
        self._ep.register(ring.fd, select.EPOLLIN | select.EPOLLET)
        self._rings[ring.fd] = ring

    def add_wakeup(self, fd: int) -> None:
        """An fd that only interrupts the wait (e.g. a stop pipe)."""
        self._ep.register(fd, select.EPOLLIN)

    def wait(self, timeout: float) -> list[RingBuffer]:
        """Rings with data; every ring with pending bytes when the wait timed out."""
        events = self._ep.poll(timeout)
        ready = [self._rings[fd] for fd, _ in events if fd in self._rings]
        if not ready:
            ready = [r for r in self._rings.values() if r.pending_bytes() > 0]
        return ready

    def close(self) -> None:
        self._ep.close()
        self._rings.clear()
