"""The capture writer: events as JSON lines in rotating segments.

A segment is written under a temporary name (`*.jsonl.open`), in whole lines
only: a batch goes out in one write, and a write that fails part-way is cut
back to the last whole line. Closing fsyncs it, renames it to `*.jsonl`,
records it in index.json (with first/last timestamp, record count, sha256),
then a worker thread compresses it. When the directory cannot be written (disk
full, permissions), events wait in a bounded buffer and go out when writes work
again; what overflows the buffer is counted, never silently dropped. After a
kill -9, opening the directory again closes the interrupted segment at its
last whole line and reconciles the manifest with the files."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import operator
import os
import queue
import re
import stat
import threading
import time
from bisect import bisect_right
from collections import deque
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from bpfwatch.capture import codec
from bpfwatch.capture.manifest import (
    NAME,
    OPEN_SUFFIX,
    DirectoryError,
    Manifest,
    Segment,
    check_directory,
    fsync_dir,
    open_regular,
    segment_name,
    seq_of,
    stem_of,
)
from bpfwatch.errors import BpfwatchError
from bpfwatch.events.text import dumps_lines

if TYPE_CHECKING:
    from bpfwatch.agent.config import CaptureConfig

WRITE_CHUNK = 256 << 10
# the compressor process stays this long after its last segment (at a steady load a
# segment comes every few seconds; a child each time cost 37 ms of CPU to start)
COMPRESSOR_IDLE = 60.0
_ts_of = operator.itemgetter("ts")
_TS = re.compile(rb'^\{"ts":(\d+)', re.M)
log = logging.getLogger("bpfwatch.agent")


class CaptureWriter:
    def __init__(self, cfg: CaptureConfig) -> None:
        self.cfg = cfg
        self.dir = cfg.directory
        self.mode = cfg.file_mode
        self.manifest = Manifest()
        self._lock = threading.Lock()          # the manifest: writer and compressor
        self._fd = -1
        self._seg: Segment | None = None
        self._seg_started = 0.0
        self._committed = 0                    # bytes of whole lines in the open segment
        # the hash of an open segment, kept only when segments stay as written:
        # a compressed segment's manifest entry holds the compressed file's hash,
        # so hashing every line as it is written would be work thrown away
        self._digest: hashlib._Hash | None = None
        self._held: deque[tuple[bytes, int]] = deque()
        self._retry_at = 0.0
        self._jobs: queue.Queue[Segment | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._compressor = codec.Compressor()
        # counters (read by metrics)
        self.events_written = 0
        self.bytes_written = 0
        self.rotations = 0
        self.write_errors = 0
        self.compress_errors = 0
        self.failing: str | None = None        # why writes fail right now

    # -- lifecycle --------------------------------------------------------------

    def open(self) -> CaptureWriter:
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
        except OSError as e:
            raise BpfwatchError(f"capture directory {self.dir}: cannot create it: {e.strerror}") from None
        try:
            check_directory(self.dir)
        except DirectoryError as e:
            raise BpfwatchError(str(e)) from None
        if not os.access(self.dir, os.W_OK | os.X_OK):
            raise BpfwatchError(f"capture directory {self.dir} is not writable by this user (uid {os.getuid()})")
        self._recover()
        if self.cfg.compression != "none":
            self._worker = threading.Thread(target=self._compress_loop, name="bw-capture-compress", daemon=True)
            self._worker.start()
            for s in self.manifest.segments:
                if s.compression == "none":
                    self._jobs.put(s)
        else:  # compression was on before: what it left uncompressed is hashed as it stays
            for s in self.manifest.segments:
                if s.compression == "none" and not s.sha256:
                    self._hash_as_stored(s)
        self._save()
        return self

    def close(self) -> None:
        """Writes what is held, closes the open segment, finishes compression
        and saves the manifest."""
        if self._held:
            self._flush_held()
        if self._held:
            log.error("capture: %d events could not be written before exit (%s)", len(self._held), self.failing)
            with self._lock:
                self.manifest.dropped_events += len(self._held)
            self._held.clear()
        self._close_segment()
        if self._worker is not None:
            self._jobs.put(None)
            self._worker.join()
            self._worker = None
        self._save()

    # -- writing ---------------------------------------------------------------------

    def write(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        buf, ends = dumps_lines(events)
        stamps = list(map(_ts_of, events))
        if self._held:
            # writes are failing: queue behind what is held, and try the disk
            # again only every retry_interval, not on every batch
            self._hold(buf, ends, stamps, 0)
            if time.monotonic() >= self._retry_at:
                self._flush_held()
            return
        done = self._write_lines(buf, ends, stamps)
        if done < len(ends):
            self._hold(buf, ends, stamps, done)

    def tick(self, now: float | None = None) -> None:
        """Time-based rotation and retries; call it every loop."""
        now = time.monotonic() if now is None else now
        if self._seg is not None and now - self._seg_started >= self.cfg.max_segment_age:
            self._close_segment()
        if self._held and now >= self._retry_at:
            self._flush_held()

    def backlog_after(self, seq: int, line: int) -> int:
        """Events written after line `line` of segment `seq` (how far a reader
        of this capture at that position is behind)."""
        with self._lock:
            closed = sum(s.records for s in self.manifest.segments if s.seq >= seq)
        seg = self._seg
        open_records = seg.records if seg is not None and seg.seq >= seq else 0
        return max(closed + open_records - line, 0)

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def dropped(self) -> int:
        return self.manifest.dropped_events

    def _hold(self, buf: bytearray, ends: list[int], stamps: list[int], start: int) -> None:
        held = self._held
        for k in range(start, len(ends)):
            held.append((bytes(buf[ends[k - 1] if k else 0:ends[k]]), stamps[k]))
        over = len(held) - self.cfg.buffer_events
        if over > 0:
            for _ in range(over):
                held.popleft()
            with self._lock:
                self.manifest.dropped_events += over

    def _flush_held(self) -> None:
        lines = [line for line, _ in self._held]
        done = self._write_lines(bytearray().join(lines), list(accumulate(map(len, lines))),
                                 [ts for _, ts in self._held])
        for _ in range(done):
            self._held.popleft()
        if not self._held and self.failing is None:
            log.info("capture: writes work again; the held events are written")

    def _write_lines(self, buf: bytearray, ends: list[int], stamps: list[int]) -> int:
        """Writes whole lines (line k is buf[ends[k-1]:ends[k]]) into segments,
        rotating by count and size; returns how many were written (fewer when
        the directory cannot be written)."""
        cfg, n, i = self.cfg, len(ends), 0
        view = memoryview(buf)
        try:
            while i < n:
                if self._seg is None:
                    self._open_segment()
                seg = self._seg
                assert seg is not None
                start = ends[i - 1] if i else 0
                j = min(n, i + cfg.max_segment_events - seg.records)
                # at most WRITE_CHUNK bytes a write: after a full disk, whatever
                # space comes back is used, however much less than the backlog
                j = max(i + 1, min(j, bisect_right(ends, start + WRITE_CHUNK, i, j)))
                if seg.raw_bytes + ends[j - 1] - start > cfg.max_segment_size:
                    k = bisect_right(ends, start + cfg.max_segment_size - seg.raw_bytes, i, j)
                    if k == i and seg.records == 0:
                        k = i + 1  # one line larger than a segment gets a segment of its own
                    if k == i:
                        self._close_segment()
                        continue
                    j = k
                self._append(view[start:ends[j - 1]])
                first, last = min(stamps[i:j]), max(stamps[i:j])
                seg.first_ts = first if seg.first_ts is None else min(seg.first_ts, first)
                seg.last_ts = last if seg.last_ts is None else max(seg.last_ts, last)
                seg.records += j - i
                self.events_written += j - i
                i = j
                if seg.records >= cfg.max_segment_events or seg.raw_bytes >= cfg.max_segment_size:
                    self._close_segment()
        except OSError as e:
            self._failed(e)
            return i
        finally:
            view.release()
        if self.failing is not None:
            self.failing = None
        return i

    def _append(self, chunk: memoryview) -> None:
        view, fd = chunk, self._fd
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            # never leave part of a line behind
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._committed)
                os.lseek(fd, self._committed, os.SEEK_SET)
            raise
        self._committed += len(chunk)
        if self._digest is not None:
            self._digest.update(chunk)
        assert self._seg is not None
        self._seg.raw_bytes += len(chunk)
        self.bytes_written += len(chunk)

    def _failed(self, e: OSError) -> None:
        self.write_errors += 1
        self._retry_at = time.monotonic() + self.cfg.retry_interval
        reason = f"{errno.errorcode.get(e.errno or 0, 'error')}: {e.strerror}"
        if self.failing != reason:
            log.error("capture: cannot write to %s (%s); holding up to %d events and retrying every %gs",
                      self.dir, reason, self.cfg.buffer_events, self.cfg.retry_interval)
        self.failing = reason

    # -- segments ------------------------------------------------------------------------

    def _open_segment(self) -> None:
        with self._lock:
            seq = self.manifest.next_seq
            name = segment_name(seq, time.time_ns())
            fd = os.open(os.path.join(self.dir, name + OPEN_SUFFIX),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, self.mode)
            os.fchmod(fd, self.mode)
            self.manifest.next_seq = seq + 1
            self.manifest.open = {"name": name + OPEN_SUFFIX, "seq": seq, "started": time.time_ns()}
        self._fd, self._seg, self._committed = fd, Segment(name=name, seq=seq), 0
        self._seg_started = time.monotonic()
        self._digest = hashlib.sha256() if self.cfg.compression == "none" else None
        self._save()

    def _close_segment(self) -> None:
        seg, fd = self._seg, self._fd
        if seg is None:
            return
        self._seg, self._fd = None, -1
        path = os.path.join(self.dir, seg.name)
        try:
            os.fsync(fd)
        except OSError as e:
            log.error("capture: fsync of %s failed: %s", seg.name, e.strerror)
        os.close(fd)
        if seg.records == 0:
            with contextlib.suppress(OSError):
                os.unlink(path + OPEN_SUFFIX)
            with self._lock:
                self.manifest.open = None
            return
        try:
            os.rename(path + OPEN_SUFFIX, path)
        except OSError as e:
            log.error("capture: cannot close segment %s: %s (it is recovered at the next start)",
                      seg.name, e.strerror)
            return
        fsync_dir(self.dir)
        # a segment to be compressed is hashed then (or, if that fails, as it stays)
        seg.bytes, seg.closed_at = seg.raw_bytes, time.time_ns()
        seg.sha256 = self._digest.hexdigest() if self._digest is not None else ""
        with self._lock:
            self.manifest.segments.append(seg)
            self.manifest.open = None
        self.rotations += 1
        self._retain()
        self._save()
        if self._worker is not None:
            self._jobs.put(seg)

    def _retain(self) -> None:
        """Deletes the oldest closed segments beyond the count and size limits."""
        cfg = self.cfg
        with self._lock:
            segs = self.manifest.segments
            total = sum(s.bytes for s in segs)
            while segs and ((cfg.retain_segments and len(segs) > cfg.retain_segments)
                            or (cfg.retain_size and total > cfg.retain_size)):
                old = segs.pop(0)
                total -= old.bytes
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.dir, old.name))
                log.debug("capture: retention deleted %s", old.name)

    def _save(self) -> None:
        with self._lock:
            try:
                self.manifest.save(self.dir, self.mode)
            except OSError as e:
                self.write_errors += 1
                log.error("capture: cannot update %s/index.json: %s (the previous one stays valid)",
                          self.dir, e.strerror)

    # -- compression -------------------------------------------------------------------------

    def _compress_loop(self) -> None:
        try:
            while True:
                try:
                    seg = self._jobs.get(timeout=COMPRESSOR_IDLE)
                except queue.Empty:
                    self._compressor.close()  # segments stopped coming: its memory goes
                    continue
                if seg is None:
                    return
                try:
                    self._compress(seg)
                except (OSError, ValueError) as e:
                    self.compress_errors += 1
                    log.error("capture: cannot compress %s: %s (kept uncompressed)", seg.name,
                              getattr(e, "strerror", None) or e)
                    if not seg.sha256:
                        self._hash_as_stored(seg)
                        self._save()
        finally:
            self._compressor.close()

    def _hash_as_stored(self, seg: Segment) -> None:
        """A segment left uncompressed: its manifest entry gets the hash it was not given while written."""
        try:
            digest = codec.sha256_file(os.path.join(self.dir, seg.name))
        except OSError as e:
            log.error("capture: cannot hash %s: %s", seg.name, e.strerror)
            return
        with self._lock:
            seg.sha256 = digest

    def _compress(self, seg: Segment) -> None:
        kind = self.cfg.compression
        src = os.path.join(self.dir, seg.name)
        dst_name = seg.name + codec.SUFFIX[kind]
        dst = os.path.join(self.dir, dst_name)
        with self._lock:
            if seg not in self.manifest.segments:
                return  # deleted by retention meanwhile
        if not os.path.exists(src):
            return
        try:
            size, digest = self._compressor.compress(src, dst + ".tmp", kind, self.cfg.compression_level, self.mode)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(dst + ".tmp")
            if not os.path.exists(src):
                return  # deleted by retention while compressing
            raise
        os.rename(dst + ".tmp", dst)
        with self._lock:
            if seg not in self.manifest.segments:
                with contextlib.suppress(OSError):
                    os.unlink(dst)
                return
            seg.name, seg.bytes, seg.sha256, seg.compression = dst_name, size, digest, kind
        self._save()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(src)

    # -- recovery ------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Reconciles index.json with the files after any kind of stop."""
        m, damaged = Manifest.load_checked(self.dir)
        if damaged:
            # set it aside for whoever wants to look, and rebuild from the segments
            aside = f"{NAME}.damaged-{time.time_ns()}"
            with contextlib.suppress(OSError):
                os.rename(os.path.join(self.dir, NAME), os.path.join(self.dir, aside))
            log.warning("capture: %s/%s is damaged (%s): set aside as %s, rebuilt from the segments",
                        self.dir, NAME, damaged, aside)
        m = m or Manifest()
        names = set(os.listdir(self.dir))
        # every sequence number a name takes, even one left alone below (a directory, a FIFO):
        # a new segment named like it could never be renamed into place
        taken = [q for q in map(seq_of, names) if q is not None]
        for n in [n for n in names if n.endswith(".tmp")]:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.dir, n))
            names.discard(n)
        for n in [n for n in names if seq_of(n) is not None]:
            if not stat.S_ISREG(os.lstat(os.path.join(self.dir, n)).st_mode):
                log.warning("capture: %s/%s is not a regular file: left alone", self.dir, n)
                names.discard(n)
        kept: list[Segment] = []
        for s in m.segments:
            if s.name in names:
                plain = s.name.removesuffix(codec.SUFFIX[s.compression]) if s.compression != "none" else None
                if plain and plain in names:  # compressed, but the plain copy was not yet removed
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.dir, plain))
                    names.discard(plain)
                kept.append(s)
                continue
            if s.compression == "none":
                done = [n for n in names if n.startswith(s.name) and n != s.name and not n.endswith(OPEN_SUFFIX)]
                if done:  # compressed just before the stop; the manifest lagged
                    s.name, s.compression = done[0], codec.compression_of(done[0])
                    s.bytes, s.sha256 = os.path.getsize(os.path.join(self.dir, s.name)), codec.sha256_file(
                        os.path.join(self.dir, s.name))
                    kept.append(s)
                    continue
            log.warning("capture: segment %s listed in index.json is missing", s.name)
        listed = {s.name for s in kept}
        for n in sorted(names):
            seq = seq_of(n)
            if seq is None or n in listed:
                continue
            try:
                if n.endswith(OPEN_SUFFIX):
                    seg = self._recover_open(n, seq)
                elif stem_of(n) not in {stem_of(s.name) for s in kept}:
                    seg = self._adopt(n, seq)
                else:
                    continue
            except codec.READ_ERRORS as e:
                log.warning("capture: %s/%s cannot be read (%s): left out of the manifest", self.dir, n,
                            getattr(e, "strerror", None) or e)
                continue
            if seg is not None:
                kept.append(seg)
        kept.sort(key=lambda s: s.seq)
        m.segments = kept
        m.open = None
        m.next_seq = max([m.next_seq, *(s.seq + 1 for s in kept), *(q + 1 for q in taken)])
        self.manifest = m

    def _recover_open(self, name: str, seq: int) -> Segment | None:
        """A segment the writer was killed in: cut to its last whole line and close it."""
        path = os.path.join(self.dir, name)
        with os.fdopen(open_regular(path, write=True), "rb+") as f:
            data = f.read()
            whole = data.rfind(b"\n") + 1
            if 0 < whole < len(data):
                f.truncate(whole)
                data = data[:whole]
        if whole == 0:
            os.unlink(path)
            return None
        final = name.removesuffix(OPEN_SUFFIX)
        os.rename(path, os.path.join(self.dir, final))
        fsync_dir(self.dir)
        seg = self._describe(final, seq, data)
        seg.recovered = True
        log.warning("capture: recovered %s after an unclean stop: %d events", final, seg.records)
        return seg

    def _adopt(self, name: str, seq: int) -> Segment:
        """A closed segment the manifest missed (the stop came between rename and save)."""
        with codec.open_read(os.path.join(self.dir, name)) as f:
            data = f.read()
        seg = self._describe(name, seq, data)
        seg.compression = codec.compression_of(name)
        seg.bytes = os.lstat(os.path.join(self.dir, name)).st_size
        seg.sha256 = codec.sha256_file(os.path.join(self.dir, name))
        return seg

    @staticmethod
    def _describe(name: str, seq: int, data: bytes) -> Segment:
        stamps = [int(x) for x in _TS.findall(data)]
        return Segment(name=name, seq=seq, first_ts=min(stamps) if stamps else None,
                       last_ts=max(stamps) if stamps else None, records=data.count(b"\n"),
                       raw_bytes=len(data), bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                       closed_at=time.time_ns())

    # -- metrics ---------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._lock:
            segs = list(self.manifest.segments)
            dropped = self.manifest.dropped_events
        return {"events_written": self.events_written, "bytes_written": self.bytes_written,
                "rotations": self.rotations, "segments": len(segs), "disk_bytes": sum(s.bytes for s in segs),
                "write_errors": self.write_errors, "compress_errors": self.compress_errors,
                "held": len(self._held), "dropped": dropped, "failing": self.failing is not None}
