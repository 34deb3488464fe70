"""The BPF filesystem: mounting it when absent, checking pin paths, and
finding every pinned object."""

from __future__ import annotations

import ctypes
import os
import stat
from collections.abc import Iterator

from bpfwatch import libbpf as L
from bpfwatch.errors import BpfError, BpfwatchError
from bpfwatch.mounts import mounts

DEFAULT_ROOT = "/sys/fs/bpf"
BPFWATCH_DIR = "/sys/fs/bpf/bpfwatch"
_libc = ctypes.CDLL(None, use_errno=True)


def mount_fs(fstype: str, where: str, data: str = "") -> None:
    os.makedirs(where, exist_ok=True)
    if _libc.mount(fstype.encode(), where.encode(), fstype.encode(), 0, data.encode() or None) != 0:
        err = ctypes.get_errno()
        raise BpfwatchError(f"cannot mount {fstype} at {where}: {os.strerror(err)} "
                            "(needs CAP_SYS_ADMIN; mount it yourself: "
                            f"mount -t {fstype} {fstype} {where})")


def bpffs_mounts() -> list[str]:
    return [mp for mp, t in mounts().items() if t == "bpf"]


def ensure_mounted() -> str:
    """The bpffs mount point, mounting one at /sys/fs/bpf if there is none."""
    found = bpffs_mounts()
    if found:
        return DEFAULT_ROOT if DEFAULT_ROOT in found else found[0]
    mount_fs("bpf", DEFAULT_ROOT, "mode=0700")
    return DEFAULT_ROOT


def on_bpffs(path: str) -> bool:
    path = os.path.realpath(path)
    return any(path == mp or path.startswith(mp.rstrip("/") + "/") for mp in bpffs_mounts())


def pin_dir(path: str) -> str:
    """Creates (mode 0700) a directory for pins; it must be on bpffs."""
    ensure_mounted()
    if not on_bpffs(os.path.dirname(os.path.abspath(path)) if not os.path.exists(path) else path):
        raise BpfwatchError(f"{path} is not on a BPF filesystem: pin under {DEFAULT_ROOT}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def walk_pins() -> Iterator[tuple[str, str, int]]:
    """(path, kind "prog"/"map"/"link", id) of every pinned object."""
    for root in bpffs_mounts():
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                found = pinned_object(path)
                if found:
                    yield path, found[0], found[1]


def pinned_object(path: str) -> tuple[str, int] | None:
    """(kind, id) of a pinned object, or None if the path is not one."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        fd = L.obj_get(path)
    except (OSError, BpfError):
        return None
    try:
        info = L.fdinfo(fd)
    finally:
        os.close(fd)
    for kind in ("link", "prog", "map"):  # a link's fdinfo also names its prog_id
        if f"{kind}_id" in info:
            return kind, int(info[f"{kind}_id"])
    return None
