"""File sensor: file.open, file.unlink/rename/mkdir/rmdir/chmod/chown/truncate/
link/symlink, and file.io totals per (process, file).

BPF side: bpf/file.bpf.c. Which syscalls it decodes, and how, is the table
below, written to the kernel per architecture; path prefix filters run in the
kernel for paths the kernel resolves, and here for the rest.
"""

from __future__ import annotations

import errno
import os
import posixpath
import time
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice
from typing import Any

import numpy as np

from bpfwatch import libbpf as L
from bpfwatch import syscalls
from bpfwatch.btf_dtype import cstr, enum_values, record_dict, struct_dtype
from bpfwatch.errors import UsageError
from bpfwatch.events.model import from_shape, shape
from bpfwatch.events.text import text
from bpfwatch.sensors.base import Fields, Request, RowDecoder, Scope, Sensor, SensorOptions

PATHS_PER_PROCESS = 4096  # remembered paths of open files, per process (the oldest quarter forgotten when full)
EXIT_LINGER_S = 1.0  # a process's paths outlive it this long: its file.io records may come later
PREFIX_MAX = 256
PREFIXES = 16
ARG_NONE, DIR_CWD, DIR_NONE, ARG_HOW = -1, -2, -3, -4
PATH1_RESOLVED, PATH1_TRUNC, PATH2_TRUNC, PATH1_BY_KEY = 1, 2, 4, 8
AT_EMPTY_PATH = 0x1000  # an empty path means dirfd itself
AT_REMOVEDIR = 0x200

# kind name in file.h -> event type
KINDS = {
    "BW_FILE_OPEN": "file.open", "BW_FILE_UNLINK": "file.unlink", "BW_FILE_RENAME": "file.rename",
    "BW_FILE_MKDIR": "file.mkdir", "BW_FILE_RMDIR": "file.rmdir", "BW_FILE_CHMOD": "file.chmod",
    "BW_FILE_CHOWN": "file.chown", "BW_FILE_TRUNCATE": "file.truncate", "BW_FILE_LINK": "file.link",
    "BW_FILE_SYMLINK": "file.symlink", "BW_FILE_READ": "file.io", "BW_FILE_WRITE": "file.io",
}
FILE_TYPES = sorted(set(KINDS.values()))

_CWD = {"dirfd1": DIR_CWD}
# syscall -> (kind, argument layout); absent arguments are ARG_NONE
SYSCALLS: dict[str, tuple[str, dict[str, int]]] = {
    "open": ("BW_FILE_OPEN", {**_CWD, "path1": 0, "flags": 1, "mode": 2}),
    "openat": ("BW_FILE_OPEN", {"dirfd1": 0, "path1": 1, "flags": 2, "mode": 3}),
    "openat2": ("BW_FILE_OPEN", {"dirfd1": 0, "path1": 1, "flags": ARG_HOW}),
    "creat": ("BW_FILE_OPEN", {**_CWD, "path1": 0, "mode": 1,
                               "fixed_flags": os.O_CREAT | os.O_WRONLY | os.O_TRUNC}),
    "unlink": ("BW_FILE_UNLINK", {**_CWD, "path1": 0}),
    "unlinkat": ("BW_FILE_UNLINK", {"dirfd1": 0, "path1": 1, "flags": 2}),
    "rmdir": ("BW_FILE_RMDIR", {**_CWD, "path1": 0}),
    "mkdir": ("BW_FILE_MKDIR", {**_CWD, "path1": 0, "mode": 1}),
    "mkdirat": ("BW_FILE_MKDIR", {"dirfd1": 0, "path1": 1, "mode": 2}),
    "rename": ("BW_FILE_RENAME", {**_CWD, "path1": 0, "dirfd2": DIR_CWD, "path2": 1}),
    "renameat": ("BW_FILE_RENAME", {"dirfd1": 0, "path1": 1, "dirfd2": 2, "path2": 3}),
    "renameat2": ("BW_FILE_RENAME", {"dirfd1": 0, "path1": 1, "dirfd2": 2, "path2": 3, "flags": 4}),
    "link": ("BW_FILE_LINK", {**_CWD, "path1": 0, "dirfd2": DIR_CWD, "path2": 1}),
    "linkat": ("BW_FILE_LINK", {"dirfd1": 0, "path1": 1, "dirfd2": 2, "path2": 3, "flags": 4}),
    "symlink": ("BW_FILE_SYMLINK", {"dirfd1": DIR_NONE, "path1": 0, "dirfd2": DIR_CWD, "path2": 1}),
    "symlinkat": ("BW_FILE_SYMLINK", {"dirfd1": DIR_NONE, "path1": 0, "dirfd2": 1, "path2": 2}),
    "chmod": ("BW_FILE_CHMOD", {**_CWD, "path1": 0, "mode": 1}),
    "fchmod": ("BW_FILE_CHMOD", {"fd": 0, "mode": 1}),
    "fchmodat": ("BW_FILE_CHMOD", {"dirfd1": 0, "path1": 1, "mode": 2}),
    "fchmodat2": ("BW_FILE_CHMOD", {"dirfd1": 0, "path1": 1, "mode": 2, "flags": 3}),
    "chown": ("BW_FILE_CHOWN", {**_CWD, "path1": 0, "owner": 1}),
    "lchown": ("BW_FILE_CHOWN", {**_CWD, "path1": 0, "owner": 1}),
    "fchown": ("BW_FILE_CHOWN", {"fd": 0, "owner": 1}),
    "fchownat": ("BW_FILE_CHOWN", {"dirfd1": 0, "path1": 1, "owner": 2, "flags": 4}),
    "truncate": ("BW_FILE_TRUNCATE", {**_CWD, "path1": 0, "length": 1}),
    "ftruncate": ("BW_FILE_TRUNCATE", {"fd": 0, "length": 1}),
    **{n: ("BW_FILE_READ", {"fd": 0}) for n in ("read", "pread64", "readv", "preadv", "preadv2")},
    **{n: ("BW_FILE_WRITE", {"fd": 0}) for n in ("write", "pwrite64", "writev", "pwritev", "pwritev2")},
}

_OPEN_FLAGS = [(getattr(os, n), n) for n in (
    "O_CREAT", "O_EXCL", "O_NOCTTY", "O_TRUNC", "O_APPEND", "O_NONBLOCK", "O_DSYNC", "O_ASYNC",
    "O_DIRECT", "O_DIRECTORY", "O_NOFOLLOW", "O_NOATIME", "O_CLOEXEC", "O_PATH") if hasattr(os, n)]
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
_O_SYNC = getattr(os, "O_SYNC", 0)


def open_flag_names(flags: int) -> list[str]:
    return list(_open_flag_names(flags))


@lru_cache(maxsize=1024)  # few distinct flag sets: each is named once
def _open_flag_names(flags: int) -> tuple[str, ...]:
    names = [("O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE")[flags & 3]]
    if _O_TMPFILE and flags & _O_TMPFILE == _O_TMPFILE:
        names.append("O_TMPFILE")
        flags &= ~_O_TMPFILE
    if _O_SYNC and flags & _O_SYNC == _O_SYNC:
        names.append("O_SYNC")
        flags &= ~_O_SYNC
    names += [n for bit, n in _OPEN_FLAGS if flags & bit]
    return tuple(names)


def error_name(ret: int) -> str | None:
    return errno.errorcode.get(-ret, f"E{-ret}") if ret < 0 else None


# the fields the decoders read, in the records' order (file.h)
OP_FIELDS = ("ts_boot_ns pid tid cgroup_id file ret length uid kind nr flags mode owner_uid owner_gid "
             "path1_len dir1_len path2_len dir2_len rflags comm")
IO_FIELDS = "ts_boot_ns tid tgid file reads writes read_bytes write_bytes first_ns last_ns uid comm closed"


def op_paths(data: bytes, l1: int, ld1: int, l2: int, ld2: int
             ) -> tuple[str | None, str | None, str | None, str | None]:
    """The path, its directory, the second path and its directory of a file
    record's tail (each NUL-padded; a length of 0 means absent)."""
    p1 = text(data[:l1].rstrip(b"\0")) if l1 else None
    o = l1 + ld1
    d1 = text(data[l1:o].rstrip(b"\0")) if ld1 else None
    p2 = d2 = None
    if l2:
        p2 = text(data[o: o + l2].rstrip(b"\0"))
        if ld2:
            d2 = text(data[o + l2: o + l2 + ld2].rstrip(b"\0"))
    return p1, d1, p2, d2


def join_path(directory: str | None, path: str) -> str:
    """An absolute, normalised path from a dir and a path relative to it.
    An empty path names nothing (the call fails with ENOENT): it stays ""."""
    if not path:
        return ""
    full = posixpath.join(directory, path) if directory and not path.startswith("/") else path
    full = posixpath.normpath(full)
    return "/" + full.lstrip("/") if full.startswith("//") else full


# each operation's fields after path, syscall, ret and error (and path_truncated), in schema order
_OP_EXTRA = {"file.open": ("flags", "mode", "fd"), "file.mkdir": ("mode",), "file.chmod": ("mode",),
             "file.chown": ("owner_uid", "owner_gid"), "file.truncate": ("length",),
             "file.rename": ("new_path",), "file.link": ("new_path",), "file.symlink": ("target",)}
# (type, a path was cut short) -> the event's shape
_OP_SHAPES = {(kind, cut): shape(kind, "path", "syscall", "ret", "error", *(("path_truncated",) if cut else ()),
                                 *_OP_EXTRA.get(kind, ()), **({"path_truncated": True} if cut else {}))
              for kind in set(KINDS.values()) for cut in (False, True)}
_IO_SHAPE = shape("file.io", "path", "reads", "writes", "read_bytes", "write_bytes", "duration_ns", "closed")


@lru_cache(maxsize=4096)  # a workload repeats the same few calls on the same few paths
def op_parts(kind: str, nr: int, flags: int, rflags: int, data: bytes, l1: int, ld1: int, l2: int, ld2: int
             ) -> tuple[str, dict[str, Any], str, str | None, str | None, tuple[str, ...], bool]:
    """What a file operation's record shares with every record of the same
    call on the same path: its type, the event's shape, the syscall's name,
    the path from the record (the caller looks up one named by key), the
    second path (rename, link) or the symlink's target, and for open the
    flags' names and whether a mode was given."""
    sysname = syscalls.name_of(nr)
    if kind == "file.unlink" and sysname == "unlinkat" and flags & AT_REMOVEDIR:
        kind = "file.rmdir"
    p1, d1, p2, d2 = op_paths(data, l1, ld1, l2, ld2)
    second = None
    if kind == "file.symlink":
        path, second = (join_path(d2, p2) if p2 is not None else None), p1
    else:
        path = p1 if rflags & PATH1_RESOLVED or p1 is None else join_path(d1, p1)
        if p1 == "" and kind != "file.open" and flags & AT_EMPTY_PATH:
            path = d1  # AT_EMPTY_PATH: the call acts on dirfd itself (0x1000 is O_DSYNC to open)
        if kind in ("file.rename", "file.link"):
            second = join_path(d2, p2) if p2 is not None else None
    names: tuple[str, ...] = ()
    creates = False
    if kind == "file.open":
        names = _open_flag_names(flags)
        # O_TMPFILE includes O_DIRECTORY's bit: all of its bits, not any, mean a mode was given
        creates = bool(flags & os.O_CREAT or (_O_TMPFILE and flags & _O_TMPFILE == _O_TMPFILE))
    return kind, _OP_SHAPES[kind, bool(rflags & (PATH1_TRUNC | PATH2_TRUNC))], sysname, path, second, names, creates


def check_prefixes(prefixes: list[str]) -> list[str]:
    out = []
    for p in prefixes:
        if not p.startswith("/"):
            raise UsageError(f"path prefix '{p}' must be absolute (start with /)")
        if len(p.encode()) >= PREFIX_MAX:
            raise UsageError(f"path prefix '{p[:40]}...' is longer than {PREFIX_MAX - 1} bytes")
        out.append(p)
    if len(out) > PREFIXES:
        raise UsageError(f"at most {PREFIXES} path prefixes")
    return out


@dataclass(slots=True)
class FileOptions:
    types: set[str] = field(default_factory=lambda: set(FILE_TYPES))
    failed_only: bool = False
    prefixes: list[str] = field(default_factory=list)
    open_write_only: bool = False  # only opens that may write (enough for the security rules)


class FileSensor(Sensor):
    name = "file"
    object_name = "file"

    @classmethod
    def plan(cls, req: Request) -> FileOptions | None:
        types = req.types_of("file")
        return FileOptions(types=types, failed_only=req.allow.failed_only,
                           prefixes=check_prefixes(req.allow.paths)) if types else None

    def __init__(self, fopts: FileOptions | None = None, options: SensorOptions | None = None,
                 scope: Scope | None = None) -> None:
        super().__init__(options, scope)
        self.fopts = fopts or FileOptions()
        self.fopts.prefixes = check_prefixes(self.fopts.prefixes)
        # tgid -> {file key -> path}, for file.io and fd-based calls. Files closed
        # with no I/O leave no trace here, so each process's map is bounded, and a
        # process's map goes shortly after it exits.
        self._paths: dict[int, dict[int, str | None]] = {}
        self._exited: deque[tuple[float, int]] = deque()

    def configure(self, obj: L.BpfObject) -> None:
        obj.map("bw_file_scratch").max_entries = L.num_possible_cpus()
        with obj.btf() as btf:
            self._kind_ids = enum_values(btf, "bw_file_kind")
        mask = 0
        for cname, tname in KINDS.items():
            if tname in self.fopts.types:
                mask |= 1 << self._kind_ids[cname]
        if "file.io" not in self.fopts.types:
            # close/dup and process exit only flush read/write totals: without
            # file.io they are one program less on every syscall
            for prog in ("bw_file_close", "bw_file_proc_exit"):
                obj.program(prog).autoload = False
        obj.set_rodata(emit_kinds=mask, failed_only=int(self.fopts.failed_only),
                       open_write_only=int(self.fopts.open_write_only),
                       n_prefixes=len(self.fopts.prefixes), nr_close=syscalls.table()["close"],
                       nr_dup2=syscalls.table().get("dup2", -1), nr_dup3=syscalls.table()["dup3"])

    def populate(self, obj: L.BpfObject) -> None:
        with obj.btf() as btf:
            desc_dt = struct_dtype(btf, "bw_sysdesc")
        table = obj.map("bw_sysdesc")
        nrs = syscalls.table()
        close = np.zeros(1, desc_dt)
        close[0]["kind"] = self._kind_ids["BW_FILE_CLOSE"]
        wanted = self.fopts.types
        for name, (kind, layout) in SYSCALLS.items():
            if name not in nrs or KINDS[kind] not in wanted:
                continue  # e.g. arm64 has no open(2); kinds not asked for stay off the hot path
            rec = np.zeros(1, desc_dt)
            for f in ("dirfd1", "path1", "dirfd2", "path2", "fd", "flags", "mode", "owner", "length"):
                rec[0][f] = layout.get(f, ARG_NONE)
            rec[0]["fixed_flags"] = layout.get("fixed_flags", 0)
            rec[0]["kind"] = self._kind_ids[kind]
            table.update(nrs[name].to_bytes(4, "little"), rec.tobytes())
        if "file.io" in wanted:
            table.update(nrs["close"].to_bytes(4, "little"), close.tobytes())
        prefixes = obj.map("bw_prefixes")
        for i, p in enumerate(self.fopts.prefixes):
            raw = p.encode()
            prefixes.update(i.to_bytes(4, "little"), len(raw).to_bytes(4, "little") + raw.ljust(PREFIX_MAX, b"\0"))

    def layouts(self, btf: L.Btf) -> None:
        super().layouts(btf)
        ids = enum_values(btf, "bw_event_type")
        self.op_dtype = struct_dtype(btf, "bw_file_event")
        self.io_dtype = struct_dtype(btf, "bw_fileio_event")
        self.path_dtype = struct_dtype(btf, "bw_fileio_path_event")
        self.io_key_dtype = struct_dtype(btf, "bw_fileio_key")
        self.io_stats_dtype = struct_dtype(btf, "bw_fileio_stats")
        self._kind_names = {v: KINDS.get(k) for k, v in enum_values(btf, "bw_file_kind").items()}
        self.op_fields = Fields(self.op_dtype, OP_FIELDS)
        self.io_fields = Fields(self.io_dtype, IO_FIELDS)
        self.path_fields = Fields(self.path_dtype, "tgid file path_len")
        self.decode_rows({ids["BW_EV_FILE_OP"]: RowDecoder(self.op_fields, self._op_event, tail=True),
                          ids["BW_EV_FILE_IO"]: RowDecoder(self.io_fields, self._io_event),
                          ids["BW_EV_FILE_IOPATH"]: RowDecoder(self.path_fields, self._path_record, tail=True)})

    def live_io(self) -> dict[int, dict[str, int]]:
        """Bytes read and written so far on the files each process still has
        open (the kernel's running totals, before file.io reports them)."""
        out: dict[int, dict[str, int]] = {}
        if self.obj is None:
            return out
        for key, raw in self.obj.map("bw_fileio").items():
            v = record_dict(self.io_stats_dtype, raw)
            if v["ignored"]:
                continue
            acc = out.setdefault(record_dict(self.io_key_dtype, key)["tgid"], {"read": 0, "write": 0})
            acc["read"] += v["read_bytes"]
            acc["write"] += v["write_bytes"]
        return out

    # -- decoding ---------------------------------------------------------------

    def _path_record(self, row: tuple[Any, ...], data: bytes) -> None:
        tgid, file, path_len = row
        self._remember(tgid, file, text(data[:path_len].rstrip(b"\0")))

    def _io_event(self, row: tuple[Any, ...]) -> dict[str, Any] | None:
        ts, tid, tgid, file, reads, writes, read_bytes, write_bytes, first_ns, last_ns, uid, comm, closed = row
        files = self._paths.get(tgid)
        path = files.pop(file, None) if files else None
        if self.fopts.prefixes and not self.path_wanted(path):
            return None
        ev = from_shape(_IO_SHAPE, ts, tgid, tid, 0, uid, cstr(comm), 0)
        ev["path"] = path
        ev["reads"] = reads
        ev["writes"] = writes
        ev["read_bytes"] = read_bytes
        ev["write_bytes"] = write_bytes
        ev["duration_ns"] = max(last_ns - first_ns, 0)
        ev["closed"] = bool(closed)
        return ev

    def _op_event(self, row: tuple[Any, ...], data: bytes) -> dict[str, Any] | None:
        (ts, pid, tid, cgroup_id, file, ret, length, uid, kind_id, nr, flags, mode, owner_uid, owner_gid,
         l1, ld1, l2, ld2, rflags, comm) = row
        kind = self._kind_names.get(kind_id)
        if kind is None:
            return None
        kind, form, sysname, path, second, names, creates = op_parts(kind, nr, flags, rflags, data, l1, ld1, l2, ld2)
        if rflags & PATH1_BY_KEY and kind != "file.symlink":
            path = self._paths.get(pid, {}).get(file)
        if self.fopts.prefixes and not self.path_wanted(path):
            return None
        ev = from_shape(form, ts, pid, tid, 0, uid, cstr(comm), cgroup_id)
        ev["path"] = path
        ev["syscall"] = sysname
        ev["ret"] = ret
        if ret < 0:
            ev["error"] = error_name(ret)
        if kind == "file.open":
            if file:
                self._remember(pid, file, path)  # later file.io and f* calls on it need it
            ev["flags"] = list(names)
            if creates:
                ev["mode"] = mode & 0o7777
            if ret >= 0:
                ev["fd"] = ret
        elif kind in ("file.mkdir", "file.chmod"):
            ev["mode"] = mode & 0o7777
        elif kind == "file.chown":
            ev["owner_uid"] = None if owner_uid == 0xFFFFFFFF else owner_uid
            ev["owner_gid"] = None if owner_gid == 0xFFFFFFFF else owner_gid
        elif kind == "file.truncate":
            ev["length"] = length
        elif kind in ("file.rename", "file.link"):
            ev["new_path"] = second
        elif kind == "file.symlink":
            ev["target"] = second
        return ev

    def _remember(self, tgid: int, key: int, path: str | None) -> None:
        files = self._paths.get(tgid)
        if files is None:
            files = self._paths[tgid] = {}
        files.pop(key, None)  # re-inserted last: dicts keep insertion order, oldest first
        files[key] = path
        if len(files) > PATHS_PER_PROCESS:
            # the oldest quarter goes at once, into a new dict: deleting the
            # oldest one by one leaves a run of empty slots at the front that
            # every next(iter()) walks, ~1 us an open in a process that opens
            # many files and reads none (their closes are not reported)
            self._paths[tgid] = dict(islice(files.items(), PATHS_PER_PROCESS // 4, None))

    def tick(self, out: list[dict[str, Any]], exited: list[int], force: bool = False) -> None:
        """Forgets the paths of processes that exited a moment ago."""
        now = time.monotonic()
        gone = self._exited
        gone.extend((now, pid) for pid in exited)
        while gone and now - gone[0][0] >= EXIT_LINGER_S:
            self._paths.pop(gone.popleft()[1], None)

    def path_wanted(self, path: str | None) -> bool:
        """The Python half of the prefix filter (for paths the kernel could not resolve)."""
        prefixes = self.fopts.prefixes
        if not prefixes:
            return True
        return path is not None and any(path.startswith(p) for p in prefixes)
