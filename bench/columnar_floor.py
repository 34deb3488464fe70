"""The least a pipeline that writes each record as a JSON line does when it
renders in columns (numpy) instead of record by record: pipeline_stages.py
replays it beside RecordLines, over the same recording.

Per read of the ring: each record's place is found by the ring walk (the one
step that is record by record in any reader: a record's length says where the
next begins), then per kind the records' fixed parts are gathered into a
structured array, every integer column is turned into digits four at a time
(a 10,000-entry table), the time's second and the process's context are
rendered once per distinct value, the strings once per distinct string, and
the lines are assembled by scattering each piece into one buffer. The
record's tail (a path) is the one part taken out per record, as a bytes
slice looked up rendered.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bpfwatch.events.clock import BootClock, second_text
from bpfwatch.ringbuf import RingBuffer
from record_lines import RECORD_CONTEXT, KernelStrings, each_record, struct_codes

_CODES = {"Q": "<u8", "q": "<i8", "I": "<u4", "i": "<i4", "H": "<u2", "h": "<i2", "B": "u1", "b": "i1", "?": "u1"}
_DIGITS = np.frombuffer(b"".join(b"%04d" % i for i in range(10_000)), dtype=np.uint8).reshape(10_000, 4)
_TENS = 10 ** np.arange(1, 20, dtype=np.uint64)


def struct_dtype_of(fmt: str) -> tuple[np.dtype, list[str]]:
    """A numpy record dtype matching a struct format of fields and pad bytes,
    and each field's kind ("n" number, "s" string)."""
    names, formats, offsets, kinds, pos = [], [], [], [], 0
    for n, code in struct_codes(fmt):
        if code == "x":
            pos += n
            continue
        names.append(f"f{len(names)}")
        formats.append(f"S{n}" if code == "s" else _CODES[code])
        offsets.append(pos)
        kinds.append("s" if code == "s" else "n")
        pos += n if code == "s" else np.dtype(_CODES[code]).itemsize
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": pos}), kinds


def digits(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integers (any sign) as right-aligned ASCII digits, (N, width), and each
    one's length, a leading '-' included."""
    neg = values < 0
    mag = np.abs(values.astype(np.int64)).astype(np.uint64) if values.dtype.kind == "i" else values.astype(np.uint64)
    top = int(mag.max()) if len(mag) else 0
    chunks = max(1, (len(str(top)) + 3) // 4)
    parts = np.empty((len(mag), chunks), dtype=np.int64)
    q = mag
    for k in range(chunks - 1, -1, -1):
        q, r = np.divmod(q, np.uint64(10_000))
        parts[:, k] = r
    out = _DIGITS[parts].reshape(len(mag), chunks * 4)
    width = np.searchsorted(_TENS, mag, side="right") + 1
    if neg.any():
        out = np.concatenate([np.zeros((len(mag), 1), np.uint8), out], axis=1)
        out[np.flatnonzero(neg), out.shape[1] - 1 - width[neg]] = ord("-")
        width = width + neg
    return out, width


class Lines:
    """One buffer of lines assembled piece by piece: constant bytes, right
    aligned digit blocks, or ragged byte strings."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pieces: list[tuple[str, Any, Any]] = []

    def const(self, raw: bytes) -> None:
        self.pieces.append(("c", np.frombuffer(raw, np.uint8), len(raw)))

    def number(self, values: np.ndarray) -> None:
        self.pieces.append(("d", *digits(values)))

    def ragged(self, flat: np.ndarray, lengths: np.ndarray) -> None:
        self.pieces.append(("r", flat, lengths))

    def build(self) -> bytes:
        n = self.n
        total = np.zeros(n, np.int64)
        for *_, width in self.pieces:
            total += width
        ends = np.cumsum(total)
        out = np.empty(int(ends[-1]) if n else 0, np.uint8)
        pos = ends - total
        for kind, data, width in self.pieces:
            if kind == "c":
                out[pos[:, None] + np.arange(width)] = data
            elif kind == "d":
                cols = np.arange(data.shape[1])
                lead = data.shape[1] - width
                keep = cols >= lead[:, None]
                out[(pos[:, None] + cols - lead[:, None])[keep]] = data[keep]
            else:
                starts = np.cumsum(width) - width
                out[np.repeat(pos - starts, width) + np.arange(len(data))] = data
            pos = pos + width
        return out.tobytes()


def rendered_many(values: np.ndarray, render: Any) -> tuple[np.ndarray, np.ndarray]:
    """Each value's rendering (render(value) -> bytes, once per distinct
    value) as a ragged (flat bytes, lengths) pair."""
    uniq, inverse = np.unique(values, return_inverse=True)
    texts = [render(v) for v in uniq.tolist()]
    sizes = np.array([len(t) for t in texts], np.int64)
    lengths = sizes[inverse]
    flat = np.frombuffer(b"".join(texts), np.uint8)
    # the flat bytes of each record's text, in record order
    idx = np.repeat((np.cumsum(sizes) - sizes)[inverse] - (np.cumsum(lengths) - lengths), lengths)
    return flat[idx + np.arange(int(lengths.sum()))], lengths


class ColumnLines:
    """The records of each read, per kind, turned into JSON lines in columns."""

    def __init__(self, rows: dict[int, Any], types: list[int], hdr: Any, kind_at: tuple[int, int]) -> None:
        self.kinds: dict[int, tuple[Any, np.dtype, list[str], bool, int]] = {}
        for kind, rd in rows.items():
            dtype, kinds = struct_dtype_of(rd.fields.struct.format)
            self.kinds[kind] = (rd, dtype, kinds, rd.tail, rd.fields.size)
        self.offset = BootClock.shared().to_epoch_ns(0)
        self.seconds: dict[int, bytes] = {}
        self.texts = KernelStrings()
        # where each kind's records are in the read being made: (offsets, lengths)
        self.found: dict[int, tuple[list[int], list[int]]] = {k: ([], []) for k in self.kinds}
        self._drain = each_record({k: self._collector(*self.found[k]) for k in self.kinds}, types, hdr, kind_at)

    @staticmethod
    def _collector(offs: list[int], lens: list[int]) -> Any:
        at, ln = offs.append, lens.append

        def one(buf: Any, off: int, length: int) -> None:
            at(off)
            ln(length)
        return one

    def second(self, sec: int) -> bytes:
        text = self.seconds.get(sec)
        if text is None:
            text = self.seconds[sec] = b'"' + second_text(sec).encode() + b"."
        return text

    def read(self, ring: RingBuffer) -> tuple[bytes, int]:
        """Every record of the ring, as JSON lines (one buffer per kind,
        joined), and how many."""
        for offs, lens in self.found.values():
            offs.clear()
            lens.clear()
        self._drain(ring)
        data, buf = ring._data, ring._bytes
        out, n = [], 0
        for kind, (offs, lens) in self.found.items():
            if offs:
                out.append(self._lines(kind, data, buf, np.array(offs, np.int64), lens, offs))
                n += len(offs)
        return b"".join(out), n

    def _lines(self, kind: int, data: np.ndarray, buf: Any, at: np.ndarray, lens: list[int], offs: list[int]
               ) -> bytes:
        rd, dtype, kinds, tail, size = self.kinds[kind]
        recs = data[at[:, None] + np.arange(dtype.itemsize)].view(dtype).reshape(-1)
        names = rd.fields.names
        lines = Lines(len(at))
        ts = recs["f0"].astype(np.int64) + self.offset
        sec, ns = np.divmod(ts, 1_000_000_000)
        lines.const(b'{"ts":')
        lines.number(ts)
        lines.const(b',"time":')
        lines.ragged(*rendered_many(sec, self.second))
        ns_digits = _DIGITS[np.stack([ns // 100_000_000, (ns // 10_000) % 10_000, ns % 10_000], axis=1)]
        lines.pieces.append(("d", ns_digits.reshape(len(at), 12)[:, 3:], np.full(len(at), 9)))
        lines.const(b'Z","type":"' + str(kind).encode() + b'","source":"ebpf"')
        for i, (name, k) in enumerate(zip(names, kinds, strict=True)):
            if i == 0:
                continue
            lines.const(b',"' + name.encode() + b'":')
            col = recs[f"f{i}"]
            if k == "n":
                lines.number(col)
            else:
                lines.ragged(*rendered_many(col, self.texts.__getitem__))
        if tail:
            texts = [self.texts[buf[o + size: o + ln].tobytes()] for o, ln in zip(offs, lens, strict=True)]
            lines.const(b',"path":')
            lines.ragged(np.frombuffer(b"".join(texts), np.uint8), np.array([len(t) for t in texts], np.int64))
        lines.const(b",")
        lines.ragged(*rendered_many(recs["f1"], lambda pid: RECORD_CONTEXT))
        lines.const(b"}\n")
        return lines.build()


def replay_columnar_floor(chunks: list[bytes], rows: dict[int, Any], types: list[int], kind_at: tuple[int, int],
                          hdr: Any, pause: float = 0.0, sink: list[bytes] | None = None) -> float:
    """Thread CPU per line of ColumnLines over the recording."""
    lines = ColumnLines(rows, types, hdr, kind_at)
    n = 0
    t0 = time.thread_time()
    for chunk in chunks:
        if pause:
            time.sleep(pause)
        text, count = lines.read(RingBuffer.replay(chunk))
        if sink is not None:
            sink.append(text)
        n += count
    return (time.thread_time() - t0) / max(n, 1) * 1e6
