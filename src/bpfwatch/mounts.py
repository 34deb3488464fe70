"""Mounted filesystems, from /proc/self/mounts."""

from __future__ import annotations

import os
from functools import lru_cache


def mounts() -> dict[str, str]:
    """mount point -> filesystem type."""
    out = {}
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    out[parts[1].replace("\\040", " ")] = parts[2]
    except OSError:
        pass
    return out


def fs_mounted(fstype: str) -> str | None:
    """The first mount point of a filesystem type, or None."""
    return next((mp for mp, t in mounts().items() if t == fstype), None)


@lru_cache(maxsize=1)
def cgroup2_root() -> str | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or
    /sys/fs/cgroup/unified on hybrid systems)."""
    return fs_mounted("cgroup2")


@lru_cache(maxsize=1024)
def cgroup_path(cgroup_id: int) -> str | None:
    """The directory of a cgroup v2 id (its inode number), or None."""
    root = cgroup2_root()
    if root:
        for dirpath, _dirs, _files in os.walk(root):
            try:
                if os.stat(dirpath).st_ino == cgroup_id:
                    return dirpath
            except OSError:
                continue
    return None
