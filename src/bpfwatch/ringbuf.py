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
WALK_BYTES = 256 << 10  # records found before they are handed out and their space given back (at most
                        # a quarter of the ring: a small one must not wait for its whole content)
LENGTH_MASK = ~(BUSY_BIT | DISCARD_BIT) & 0xFFFFFFFF


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


class _Stopped(Exception):
    """A decoder failed on record `at` of a walk (its error is `error`)."""

    def __init__(self, at: int, error: BaseException) -> None:
        super().__init__(at)
        self.at = at
        self.error = error


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
        self._words = self._data.view(np.uint32)  # many headers and kinds read at once
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
        ring._words = ring._data.view(np.uint32)
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
        self._prod = self._data = self._words = None  # type: ignore[assignment]
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

        The consumer position is advanced once the records before it have been
        handled (about every WALK_BYTES), so `handle` must copy
        what it keeps. Stops at the first record still being written (BUSY)
        or after max_bytes.

        With `singles` (record kind -> fn(buf, offset, length)), records go
        to it one by one, in ring order, unless they are part of a run of
        more than SHORT_RUN records of one length. A record's kind is the u32
        at offset kind_at[0] of records of at least kind_at[1] bytes. Where
        sizes alternate (an open's record, then its file's totals) every run
        is one record long, and handing it out as a Run cost a Run, a
        dispatch and a decoder call: about as much as decoding it.

        The records are first only found (their positions), then handed out:
        the walk is a few operations a record, and the headers and kinds of
        what it found are read at once. Walking a record and handing it to a
        function that does nothing cost 490-520 ns one by one, 325-331 ns so
        (docs/benchmarks.md). A run longer than SHORT_RUN is counted with a
        few vector operations once SHORT_RUN + 1 of its records have been
        seen, and goes out whole.
        """
        cons = self._cons.value
        prod = int(self._prod[0])
        limit = prod if max_bytes is None else min(prod, cons + max_bytes)
        kind_off, min_len = kind_at
        if kind_off % 4:
            raise ValueError(f"record kind at offset {kind_off}: not a u32 boundary")
        u32, mask, size = self._u32, self.mask, self.size
        short = SHORT_RUN if singles else 0
        long_at = short + 1 if short else 2  # a run this long goes out as one Run
        walk = min(WALK_BYTES, size >> 2)
        busy, length_mask = BUSY_BIT, LENGTH_MASK
        seen = 0
        start = cons
        try:
            while cons < limit:
                # find the next records: up to one still being written, one that
                # ends past the byte budget or wraps past the end of the data, or
                # the first of a long run
                edge = min(limit, (cons | mask) + 1)
                until = min(edge, cons + walk)
                found: list[int] = []
                keep = found.append
                pos, long_run = cons, 0
                alike, same = 0, 0  # the last header, and how many records in a row carried it
                while pos < edge:
                    hdr = u32[(pos & mask) >> 2]
                    if hdr & busy or (pos >= until and hdr != alike):  # a chunk ends between runs
                        break
                    nxt = pos + (((hdr & length_mask) + 15) & ~7)  # 8-byte header, 8-byte aligned
                    if nxt > edge:
                        break
                    if hdr == alike:
                        same += 1
                        if same == long_at:  # a long run: it goes out whole, from its first record
                            stride = nxt - pos
                            pos -= (same - 1) * stride
                            del found[1 - same:]
                            long_run = self._run_length(pos & mask, stride, hdr, (edge - pos) // stride)
                            break
                    else:
                        alike, same = hdr, 1
                    keep(pos)
                    pos = nxt
                if found:
                    failed = None
                    try:
                        seen += self._hand_out(found, handle, singles, kind_off, min_len)
                    except _Stopped as stop:
                        cons, failed = found[stop.at], stop.error
                    if failed is not None:
                        raise failed  # as the decoder raised it, outside the handler: no chained _Stopped
                    cons = pos
                    self._cons.value = cons  # the kernel gets the space back
                    if not long_run:
                        continue
                off = cons & mask
                hdr = u32[off >> 2]
                if hdr & busy:
                    break
                length = hdr & length_mask
                stride = (length + HDR_SIZE + 7) & ~7
                if long_run:
                    if not hdr & DISCARD_BIT:
                        handle(Run(length, long_run, stride, self._bytes, off + HDR_SIZE))
                        seen += long_run
                    cons += long_run * stride
                elif cons + stride <= limit or limit == prod:
                    # one record the walk stops at: it wraps (its two parts are joined), or
                    # it is committed yet past the producer position (taken as written)
                    if not hdr & DISCARD_BIT:
                        data = self._bytes
                        if off + stride > size:
                            rec = memoryview(bytes(data[off + HDR_SIZE:]) + bytes(data[: stride - (size - off)]))
                            handle(Run(length, 1, stride, rec, 0))
                        else:
                            handle(Run(length, 1, stride, data, off + HDR_SIZE))
                        seen += 1
                    cons += stride
                else:
                    break  # the byte budget is spent; the rest waits for the next call
                self._cons.value = cons
        finally:
            self._cons.value = cons
            self.bytes_consumed += cons - start
        return seen

    def _hand_out(self, found: list[int], handle: Callable[[Run], None],
                  singles: dict[int, Callable[[memoryview, int, int], None]] | None, kind_off: int,
                  min_len: int) -> int:
        """Hands the records at positions `found` (none of them wrapping) to
        `singles` or `handle`, in order; returns how many (discarded ones are
        skipped). A failure raises _Stopped with the index of the record that
        failed, which stays unconsumed."""
        words, u32, mask, data = self._words, self._u32, self.mask, self._bytes
        at = np.array(found, dtype=np.int64) & mask
        hdrs = words[at >> 2]
        lengths = hdrs & LENGTH_MASK
        rec = at + HDR_SIZE
        recs = rec.tolist()
        it = iter(recs)
        try:
            if singles and not (hdrs & DISCARD_BIT).any() and int(lengths.min()) >= min_len:
                # the usual read: every record whole and long enough to carry its kind
                get = singles.get
                kinds = words[((rec + kind_off) & mask) >> 2].tolist()
                for kind, r, length in zip(kinds, it, lengths.tolist(), strict=True):
                    fn = get(kind)
                    if fn is None:
                        handle(Run(length, 1, (length + HDR_SIZE + 7) & ~7, data, r))
                    else:
                        fn(data, r, length)
                return len(recs)
            n = 0
            for r, hdr in zip(it, hdrs.tolist(), strict=True):
                if hdr & DISCARD_BIT:
                    continue
                length = hdr & LENGTH_MASK
                fn = singles.get(u32[((r + kind_off) & mask) >> 2]) if singles and length >= min_len else None
                if fn is None:
                    handle(Run(length, 1, (length + HDR_SIZE + 7) & ~7, data, r))
                else:
                    fn(data, r, length)
                n += 1
            return n
        except BaseException as e:  # an interrupt too: what was handed out stays consumed
            raise _Stopped(len(recs) - it.__length_hint__() - 1, e) from e

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
