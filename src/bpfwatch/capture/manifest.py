"""index.json: what a capture directory holds. Always replaced atomically
(temp file, fsync, rename, fsync of the directory), so a reader or a crash
never sees half of it."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

NAME = "index.json"
FORMAT = "bpfwatch-capture"
VERSION = 1
PREFIX = "bpfwatch-"
OPEN_SUFFIX = ".open"  # a segment being written: renamed when closed


@dataclass
class Segment:
    name: str
    seq: int
    first_ts: int | None = None
    last_ts: int | None = None
    records: int = 0
    raw_bytes: int = 0        # uncompressed JSON lines
    bytes: int = 0            # on disk
    sha256: str = ""          # of the file on disk
    compression: str = "none"
    closed_at: int = 0        # epoch ns
    recovered: bool = False   # closed by crash recovery (the writer was killed)

    def overlaps(self, since: int | None, until: int | None) -> bool:
        if self.first_ts is None or self.last_ts is None:
            return True
        return not ((since is not None and self.last_ts < since) or (until is not None and self.first_ts > until))


@dataclass
class Manifest:
    segments: list[Segment] = field(default_factory=list)
    open: dict[str, Any] | None = None    # {"name", "seq", "started"} of the segment being written
    next_seq: int = 1
    dropped_events: int = 0               # never written: the hold buffer overflowed
    created: int = field(default_factory=time.time_ns)
    host: str = field(default_factory=socket.gethostname)

    @classmethod
    def load(cls, directory: str) -> Manifest | None:
        """The manifest, or None when there is none (or it does not parse)."""
        try:
            with open(os.path.join(directory, NAME), "rb") as f:
                doc = orjson.loads(f.read())
        except (OSError, orjson.JSONDecodeError):
            return None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            return None
        known = set(Segment.__dataclass_fields__)
        return cls(segments=[Segment(**{k: v for k, v in s.items() if k in known}) for s in doc.get("segments", [])],
                   open=doc.get("open"), next_seq=int(doc.get("next_seq", 1)),
                   dropped_events=int(doc.get("dropped_events", 0)), created=int(doc.get("created", 0)),
                   host=str(doc.get("host", "")))

    def to_json(self) -> bytes:
        doc = {"format": FORMAT, "version": VERSION, "host": self.host, "created": self.created,
               "updated": time.time_ns(), "next_seq": self.next_seq, "dropped_events": self.dropped_events,
               "records": sum(s.records for s in self.segments),
               "bytes": sum(s.bytes for s in self.segments),
               "open": self.open, "segments": [asdict(s) for s in self.segments]}
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)

    def save(self, directory: str, mode: int = 0o600) -> None:
        path = os.path.join(directory, NAME)
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)
            data = self.to_json()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        fsync_dir(directory)


def fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def segment_name(seq: int, start_ns: int) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start_ns / 1e9))
    return f"{PREFIX}{seq:08d}-{stamp}.jsonl"


def stem_of(name: str) -> str:
    """A segment's name without `.jsonl` and what follows (compression, `.open`):
    the same for every form the segment takes."""
    return name.split(".jsonl", 1)[0]


def seq_of(name: str) -> int | None:
    if not name.startswith(PREFIX):
        return None
    digits = name[len(PREFIX):].split("-", 1)[0]
    return int(digits) if digits.isdigit() else None
