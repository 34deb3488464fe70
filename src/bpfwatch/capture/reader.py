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
from bpfwatch.errors import UsageError
from bpfwatch.events.text import loads
from bpfwatch.filters import Filter

_CHUNK = 1 << 20


@dataclass
class Problem:
    segment: str
    message: str


def segments(directory: str, include_open: bool = True) -> list[Segment]:
    """The directory's segments, oldest first: from index.json, plus files it
    does not list yet (a capture being written, or one without a manifest)."""
    if not os.path.isdir(directory):
        raise UsageError(f"{directory} is not a capture directory (no such directory)")
    m = Manifest.load(directory)
    if m is None and not os.path.exists(os.path.join(directory, NAME)) \
            and not any(seq_of(n) is not None for n in os.listdir(directory)):
        raise UsageError(f"{directory} is not a capture directory (no index.json, no segments)")
    listed = list(m.segments) if m else []
    names = {s.name for s in listed}
    stems = {stem_of(s.name) for s in listed}
    for n in os.listdir(directory):
        seq = seq_of(n)
        if seq is None or n in names or n.endswith(".tmp"):
            continue
        if n.endswith(OPEN_SUFFIX) and not include_open:
            continue
        if stem_of(n) in stems:
            continue  # another form of a listed segment (compression in progress)
        listed.append(Segment(name=n, seq=seq, compression=codec.compression_of(n.removesuffix(OPEN_SUFFIX))))
    listed.sort(key=lambda s: s.seq)
    return listed


def _resolve(directory: str, seg: Segment) -> str | None:
    """The segment's file now: it may have been compressed since the manifest was read."""
    path = os.path.join(directory, seg.name)
    if os.path.exists(path):
        return path
    stem = stem_of(seg.name) + ".jsonl"
    for suffix in ("", ".zst", ".gz"):
        alt = os.path.join(directory, stem + suffix)
        if os.path.exists(alt):
            return alt
    return None


def lines(path: str) -> Iterator[bytes]:
    """Whole lines of one segment (a trailing partial line is left out)."""
    with codec.open_read(path) as f:
        rest = b""
        while chunk := f.read(_CHUNK):
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            yield from data[:cut].splitlines()
            rest = data[cut:]


def read(directory: str, since: int | None = None, until: int | None = None, types: set[str] | None = None,
         event_filter: Filter | None = None, problems: list[Problem] | None = None) -> Iterator[dict[str, Any]]:
    """Events of a capture in segment order; `since`/`until` in epoch ns."""
    match = event_filter.match if event_filter is not None and event_filter.active else None
    for seg in segments(directory):
        if not seg.overlaps(since, until):
            continue
        path = _resolve(directory, seg)
        if path is None:
            if problems is not None:
                problems.append(Problem(seg.name, "missing (deleted by retention while reading?)"))
            continue
        try:
            for raw in lines(path):
                try:
                    ev = loads(raw)
                except orjson.JSONDecodeError:
                    if problems is not None:
                        problems.append(Problem(seg.name, "a line that is not JSON"))
                    continue
                ts = ev.get("ts", 0)
                if (since is not None and ts < since) or (until is not None and ts > until):
                    continue
                if types is not None and ev.get("type") not in types:
                    continue
                if match is not None and not match(ev):
                    continue
                yield ev
        except (OSError, EOFError, ValueError) as e:  # zstd/gzip errors are ValueError/OSError subclasses
            if problems is not None:
                problems.append(Problem(seg.name, f"unreadable: {e}"))


def verify(directory: str) -> tuple[int, list[Problem]]:
    """Checks every listed segment against its sha256 and record count."""
    m = Manifest.load(directory)
    if m is None:
        raise UsageError(f"{directory}: no readable index.json")
    problems: list[Problem] = []
    for seg in m.segments:
        path = os.path.join(directory, seg.name)
        if not os.path.exists(path):
            problems.append(Problem(seg.name, "missing"))
            continue
        if codec.sha256_file(path) != seg.sha256:
            problems.append(Problem(seg.name, "sha256 does not match the manifest"))
            continue
        try:
            count = sum(1 for _ in lines(path))
        except (OSError, EOFError, ValueError) as e:
            problems.append(Problem(seg.name, f"unreadable: {e}"))
            continue
        if count != seg.records:
            problems.append(Problem(seg.name, f"{count} records, the manifest says {seg.records}"))
    return len(m.segments), problems
