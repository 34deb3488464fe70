"""Following a capture directory from a cursor: the agent's events leave for
the fleet from its own capture, so the capture is the buffer of every outage.

A cursor is (segment sequence number, line number in that segment). Lines
are read from the open segment as the writer appends them (whole lines only),
and from closed segments whatever their compression; a segment that
retention deleted before its lines were sent is skipped and counted.

The cursor file holds the acknowledged position and, while a range is being
sent, that range ("pending"): after a crash the same range is sent again with
the same message ids, so the server drops what it already has.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import orjson

from bpfwatch.capture import codec
from bpfwatch.capture.manifest import OPEN_SUFFIX, create_new, fsync_dir, open_regular
from bpfwatch.capture.reader import _resolve, segments
from bpfwatch.errors import BpfwatchError
from bpfwatch.textfile import read_small

CURSOR_NAME = "nats-cursor.json"
_CHUNK = 1 << 20


@dataclass
class Cursor:
    seq: int = 0       # 0: the oldest segment there is
    line: int = 0
    pending: tuple[int, int, int] | None = None  # (seq, first line, end line) sent, not yet acknowledged

    @classmethod
    def load(cls, directory: str) -> Cursor:
        path = os.path.join(directory, CURSOR_NAME)
        if not os.path.lexists(path):
            return cls()
        try:
            doc = orjson.loads(read_small(path, "cursor file", limit=4096, follow=False))
            pending = doc.get("pending")
            cur = cls(int(doc["seq"]), int(doc["line"]),
                      tuple(int(x) for x in pending) if pending else None)  # type: ignore[arg-type]
        except (BpfwatchError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise BpfwatchError(f"{path}: not a cursor file ({e}); remove it to send the capture from its "
                                "oldest segment") from None
        if cur.seq < 0 or cur.line < 0 or (cur.pending is not None and len(cur.pending) != 3):
            raise BpfwatchError(f"{path}: a cursor with negative or malformed positions")
        return cur

    def save(self, directory: str, mode: int = 0o600, durable: bool = True) -> None:
        """Replaces the cursor file atomically; `durable` also fsyncs it (a
        process crash loses nothing either way: power loss may, without)."""
        path = os.path.join(directory, CURSOR_NAME)
        tmp = path + ".tmp"
        fd = create_new(tmp, mode)
        try:
            os.write(fd, orjson.dumps({"seq": self.seq, "line": self.line,
                                       "pending": list(self.pending) if self.pending else None}))
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        if durable:
            fsync_dir(directory)


@dataclass
class Range:
    """Lines [start, end) of segment `seq`."""

    seq: int
    start: int
    lines: list[bytes]

    @property
    def end(self) -> int:
        return self.start + len(self.lines)


class CaptureTail:
    """Reads whole lines from a cursor onwards, one segment at a time."""

    def __init__(self, directory: str, cursor: Cursor) -> None:
        self.directory = directory
        self.seq = cursor.seq
        self.line = cursor.line
        self.skipped_segments = 0
        self._stream: BinaryIO | None = None
        self._stream_seq = -1
        self._rest = b""
        self._lines: deque[bytes] = deque()  # whole lines read, not yet handed out
        self._open = False         # the segment was still being written when opened

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(OSError):
                self._stream.close()
            self._stream = None
        self._stream_seq = -1
        self._rest = b""
        self._lines.clear()

    def read(self, max_lines: int, stay: bool = False) -> Range | None:
        """Up to max_lines new lines of one segment, or None when there is
        nothing new (yet). With `stay`, only lines of the segment being read
        (None at its end): what a range that is being filled can take."""
        for _ in range(4):  # a segment may end and the next begin between two looks
            if not self._ensure_stream():
                return None
            lines = list(self._take(max_lines))
            if lines:
                start = self.line
                self.line += len(lines)
                return Range(self._stream_seq, start, lines)
            if stay or not self._segment_finished():
                return None
            self.close()
            self.seq, self.line = self.seq + 1, 0
        return None

    # -- internals -----------------------------------------------------------------

    def _ensure_stream(self) -> bool:
        if self._stream is not None and self._stream_seq == self.seq:
            return True
        self.close()
        segs = segments(self.directory)
        if not segs:
            return False
        if self.seq == 0:
            self.seq = segs[0].seq
        seg = next((s for s in segs if s.seq == self.seq), None)
        if seg is None:
            later = [s for s in segs if s.seq > self.seq]
            if not later:
                return False  # not written yet
            # deleted by retention before it was sent: what it held is gone
            self.skipped_segments += later[0].seq - self.seq
            self.seq, self.line = later[0].seq, 0
            seg = later[0]
        path = _resolve(self.directory, seg)
        if path is None:
            # listed but gone (retention deleted it a moment ago): its lines are lost once a later one exists
            if any(s.seq > seg.seq for s in segs):
                self.skipped_segments += 1
                self.seq, self.line = seg.seq + 1, 0
            return False
        self._open = path.endswith(OPEN_SUFFIX)
        try:
            if self._open:
                self._stream = os.fdopen(open_regular(path), "rb")
            else:
                self._stream = codec.open_read(path)
        except OSError:
            return False  # renamed or compressed in between: the next look finds its new name
        self._stream_seq = seg.seq
        self._skip(self.line)
        return True

    def _skip(self, n: int) -> None:
        """Passes over the first n lines (those already sent)."""
        skipped = 0
        while skipped < n:
            for _ in self._take(n - skipped):
                skipped += 1
            if skipped < n and not self._more():
                # still being written, or shorter than the cursor says: resume at its end
                self.line = skipped
                return

    def _more(self) -> bool:
        """Reads the next chunk: its whole lines join the queue, a trailing
        partial line waits in `_rest` for the rest of it."""
        assert self._stream is not None
        chunk = self._stream.read(_CHUNK)
        if not chunk:
            return False
        data = self._rest + chunk
        cut = data.rfind(b"\n") + 1
        if cut:
            self._lines.extend(data[:cut - 1].split(b"\n"))
        self._rest = data[cut:]
        return True

    def _take(self, n: int) -> Iterator[bytes]:
        """Whole lines, at most n: from what was read, then from the file."""
        lines = self._lines
        taken = 0
        while taken < n:
            if not lines:
                try:
                    if not self._more():
                        return
                except codec.READ_ERRORS:
                    return
                continue
            taken += 1
            yield lines.popleft()

    def _segment_finished(self) -> bool:
        """Whether the segment being read will get no more lines: it was
        closed when opened, or its `.open` file has been renamed since (and
        every line written before that has been read)."""
        if not self._open:
            return True
        segs = segments(self.directory)
        seg = next((s for s in segs if s.seq == self._stream_seq), None)
        if seg is not None and seg.name.endswith(OPEN_SUFFIX):
            return False
        # closed: lines written before the rename are in the file we hold
        try:
            return not self._more() and not self._lines
        except codec.READ_ERRORS:
            return True
