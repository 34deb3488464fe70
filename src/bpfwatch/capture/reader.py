"""Reading a capture directory back: segments in order (compressed or not,
the one still being written included), skipping those outside the time
window by their manifest timestamps, through the same filters as `trace`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from bpfwatch.capture import codec
from bpfwatch.capture.manifest import NAME, OPEN_SUFFIX, Manifest, Segment, seq_of, stem_of
from bpfwatch.errors import BpfwatchError, UsageError
from bpfwatch.events.text import loads
from bpfwatch.filters import Filter

_CHUNK = 1 << 20


@dataclass
class Problem:
    segment: str
    message: str


def segments(directory: str, include_open: bool = True, problems: list[Problem] | None = None) -> list[Segment]:
    """The directory's segments, oldest first: from index.json, plus files it
    does not list yet (a capture being written, or one without a manifest).
    A damaged index.json is a problem, and the segments on disk are read
    without it."""
    if not os.path.isdir(directory):
        raise UsageError(f"{directory} is not a capture directory (no such directory)")
    try:
        names = os.listdir(directory)
    except OSError as e:
        raise BpfwatchError(f"cannot read capture directory {directory}: {e.strerror}") from None
    m, damaged = Manifest.load_checked(directory)
    if damaged and problems is not None:
        problems.append(Problem(NAME, f"damaged ({damaged}): reading the segments on disk without it"))
    if m is None and not damaged and not any(seq_of(n) is not None for n in names):
        raise UsageError(f"{directory} is not a capture directory (no index.json, no segments)")
    listed = list(m.segments) if m else []
    seen = {s.name for s in listed}
    stems = {stem_of(s.name) for s in listed}
    for n in sorted(names):
        seq = seq_of(n)
        if seq is None or n in seen:
            continue
        if n.endswith(OPEN_SUFFIX) and not include_open:
            continue
        if stem_of(n) in stems:
            continue  # another form of a listed segment (compression in progress)
        stems.add(stem_of(n))
        listed.append(Segment(name=n, seq=seq, compression=codec.compression_of(n.removesuffix(OPEN_SUFFIX))))
    listed.sort(key=lambda s: s.seq)
    return listed


def _resolve(directory: str, seg: Segment) -> str | None:
    """The segment's file now: it may have been compressed since the manifest was read."""
    path = os.path.join(directory, seg.name)
    if os.path.lexists(path):
        return path
    stem = stem_of(seg.name) + ".jsonl"
    for suffix in ("", ".zst", ".gz"):
        alt = os.path.join(directory, stem + suffix)
        if os.path.lexists(alt):
            return alt
    return None


def lines(path: str, tail: list[bytes] | None = None, digest: list[str] | None = None) -> Iterator[bytes]:
    """Whole lines of one segment; a trailing partial line is left out (and
    put in `tail` when given). With `digest`, the file's sha256 is appended
    to it once all of it was read."""
    stream, hashed = codec.open_read_hashed(path)
    with stream as f:
        rest = b""
        while chunk := f.read(_CHUNK):
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            yield from data[:cut].splitlines()
            rest = data[cut:]
        if digest is not None:
            digest.append(hashed.hexdigest())
    if rest and tail is not None:
        tail.append(rest)


def read(directory: str, since: int | None = None, until: int | None = None, types: set[str] | None = None,
         event_filter: Filter | None = None, problems: list[Problem] | None = None) -> Iterator[dict[str, Any]]:
    """Events of a capture in segment order; `since`/`until` in epoch ns.
    Every intact event is read; each damaged segment (unreadable, cut short,
    not what the manifest says, not a regular file) adds a problem and the
    events before its damage are still read."""
    match = event_filter.match if event_filter is not None and event_filter.active else None
    found = problems if problems is not None else []
    for seg in segments(directory, problems=found):
        if not seg.overlaps(since, until):
            continue
        path = _resolve(directory, seg)
        if path is None:
            found.append(Problem(seg.name, "missing (deleted by retention while reading?)"))
            continue
        closed = not path.endswith(OPEN_SUFFIX)
        count, bad_lines, tail, digest = 0, 0, [], []
        try:
            for raw in lines(path, tail, digest):
                count += 1
                try:
                    ev = loads(raw)
                except orjson.JSONDecodeError:
                    bad_lines += 1
                    continue
                if not isinstance(ev, dict):
                    bad_lines += 1
                    continue
                ts = ev.get("ts", 0)
                if not isinstance(ts, int):
                    bad_lines += 1
                    continue
                if (since is not None and ts < since) or (until is not None and ts > until):
                    continue
                if types is not None and ev.get("type") not in types:
                    continue
                if match is not None and not match(ev):
                    continue
                yield ev
        except codec.READ_ERRORS as e:
            found.append(Problem(seg.name, f"unreadable after {count} lines: {getattr(e, 'strerror', None) or e}"))
            continue
        if seg.sha256 and path.endswith(seg.name) and digest and digest[0] != seg.sha256:
            found.append(Problem(seg.name, f"sha256 does not match the manifest ({count} lines read from it)"))
        if bad_lines:
            found.append(Problem(seg.name, f"{bad_lines} lines that are not events"))
        if closed and tail:
            found.append(Problem(seg.name, f"ends in a cut-off line ({len(tail[0])} bytes)"))
        if closed and seg.records and count != seg.records:
            found.append(Problem(seg.name, f"{count} lines, the manifest says {seg.records}"))
        elif closed and count == 0 and not bad_lines:
            found.append(Problem(seg.name, "empty"))


def verify(directory: str) -> tuple[int, list[Problem]]:
    """Checks every listed segment against its sha256 and record count."""
    m, damaged = Manifest.load_checked(directory)
    if m is None:
        raise UsageError(f"{directory}: no readable index.json" + (f" ({damaged})" if damaged else ""))
    problems: list[Problem] = []
    for seg in m.segments:
        path = os.path.join(directory, seg.name)
        if not os.path.lexists(path):
            problems.append(Problem(seg.name, "missing"))
            continue
        try:
            # an empty hash: a segment still waiting for its compression, which hashes it
            if (seg.sha256 or seg.compression != "none") and codec.sha256_file(path) != seg.sha256:
                problems.append(Problem(seg.name, "sha256 does not match the manifest"))
                continue
            count = sum(1 for _ in lines(path))
        except codec.READ_ERRORS as e:
            problems.append(Problem(seg.name, f"unreadable: {getattr(e, 'strerror', None) or e}"))
            continue
        if count != seg.records:
            problems.append(Problem(seg.name, f"{count} records, the manifest says {seg.records}"))
    return len(m.segments), problems
