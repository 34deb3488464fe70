"""index.json: what a capture directory holds. Always replaced atomically
(temp file, fsync, rename, fsync of the directory), so a reader or a crash
never sees half of it."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import stat
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from bpfwatch.errors import UsageError
from bpfwatch.textfile import read_small

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
        """The manifest, or None when there is none or it is damaged
        (`load_checked` says why)."""
        return cls.load_checked(directory)[0]

    @classmethod
    def load_checked(cls, directory: str) -> tuple[Manifest | None, str | None]:
        """(the manifest, None), (None, None) when there is none, or (None, why)
        when index.json is there but unusable: not a regular file, not JSON,
        or a field of the wrong type. Segment names must be plain names of
        this directory (never `../x` or `/etc/passwd`); a name listed twice
        counts once."""
        path = os.path.join(directory, NAME)
        if not os.path.lexists(path):
            return None, None
        try:
            raw = read_small(path, "manifest", MAX_MANIFEST_BYTES, follow=False)
        except UsageError as e:
            return None, str(e)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None, "not JSON"
        try:
            return cls._from_doc(doc), None
        except (TypeError, ValueError, KeyError) as e:
            return None, str(e) or type(e).__name__

    @classmethod
    def _from_doc(cls, doc: Any) -> Manifest:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} manifest")
        segs_doc = doc.get("segments", [])
        if not isinstance(segs_doc, list):
            raise TypeError("segments: not a list")
        segments: list[Segment] = []
        seen: set[str] = set()
        for i, sd in enumerate(segs_doc):
            if not isinstance(sd, dict):
                raise TypeError(f"segments[{i}]: not an object")
            seg = Segment(**{k: _field(f"segments[{i}].{k}", sd.get(k, d), t)
                             for k, (t, d) in _SEGMENT_FIELDS.items() if k in sd or d is not _REQUIRED})
            if not valid_segment_name(seg.name):
                raise ValueError(f"segments[{i}].name: {seg.name!r} is not a segment of this directory")
            if seg.name in seen:
                continue
            seen.add(seg.name)
            segments.append(seg)
        opened = doc.get("open")
        if opened is not None and not isinstance(opened, dict):
            raise TypeError("open: not an object")
        return cls(segments=segments, open=opened, next_seq=_field("next_seq", doc.get("next_seq", 1), int),
                   dropped_events=_field("dropped_events", doc.get("dropped_events", 0), int),
                   created=_field("created", doc.get("created", 0), int), host=str(doc.get("host", "")))

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
        fd = create_new(tmp, mode)
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
    """The sequence number of a segment's file name, None for any other name."""
    if not valid_segment_name(name):
        return None
    return int(name[len(PREFIX):].split("-", 1)[0])


_SEGMENT_NAME = re.compile(r"^bpfwatch-\d{1,12}-[0-9A-Za-z]{1,32}\.jsonl(?:\.zst|\.gz)?(?:\.open)?$")


def valid_segment_name(name: object) -> bool:
    """A name the writer gives a segment: no path separators, no `..`, a
    sequence number of at most 12 digits."""
    return isinstance(name, str) and _SEGMENT_NAME.match(name) is not None


def create_new(path: str, mode: int) -> int:
    """A fresh file at `path` for writing, never through a link: whatever is
    there (a stale temp file, or a link someone planted) is removed first,
    and O_EXCL refuses to follow a link made in between."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    os.fchmod(fd, mode)
    return fd


def open_regular(path: str, write: bool = False) -> int:
    """An fd on a regular file (read-only, or read-write), never through a
    link, and never blocking on a FIFO or a device planted in its place."""
    fd = os.open(path, (os.O_RDWR if write else os.O_RDONLY) | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_directory(directory: str) -> None:
    """A capture directory the agent may write in: owned by this user and not
    writable by anyone else. Otherwise another user could plant links where
    the agent (often root) creates or truncates files."""
    try:
        st = os.stat(directory)
    except OSError as e:
        raise DirectoryError(f"capture directory {directory}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise DirectoryError(f"capture directory {directory} is not a directory")
    me = os.geteuid()
    if st.st_uid != me:
        raise DirectoryError(f"capture directory {directory} belongs to uid {st.st_uid}, not to this user "
                             f"(uid {me}): refusing to write in it (chown it, or choose another directory)")
    if st.st_mode & 0o022:
        raise DirectoryError(f"capture directory {directory} is writable by others (mode "
                             f"{stat.S_IMODE(st.st_mode):04o}): refusing to write in it (chmod go-w)")


class DirectoryError(Exception):
    """A capture directory that must not be written in."""


_REQUIRED = object()
MAX_MANIFEST_BYTES = 64 << 20
_SEGMENT_FIELDS: dict[str, tuple[type, Any]] = {
    "name": (str, _REQUIRED), "seq": (int, _REQUIRED), "first_ts": (int, None), "last_ts": (int, None),
    "records": (int, 0), "raw_bytes": (int, 0), "bytes": (int, 0), "sha256": (str, ""),
    "compression": (str, "none"), "closed_at": (int, 0), "recovered": (bool, False),
}


def _field(name: str, value: Any, kind: type) -> Any:
    """A manifest value of the expected type (None only where that is the default)."""
    if value is None and name.rsplit(".", 1)[-1] in ("first_ts", "last_ts"):
        return None
    if kind is int and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 63):
        raise TypeError(f"{name}: {value!r} is not a non-negative integer")
    if kind is not int and not isinstance(value, kind):
        raise TypeError(f"{name}: {value!r} is not a {kind.__name__}")
    if name.endswith(".compression") and value not in ("none", "zstd", "gzip"):
        raise ValueError(f"{name}: {value!r} is not a compression")
    return value
