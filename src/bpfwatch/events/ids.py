"""Stable exec ids.

An exec id names one process image: the boot, the pid and the boot-time
nanosecond the image began (the exec, or the fork for a child that has not
exec'd). All three come from the kernel, so a restarted agent, or a second
one, derives the same id for the same exec, and ids never repeat across boots.
Processes found in /proc at start use their start time (clock-tick precision).
"""

from __future__ import annotations

import base64
import os
from functools import lru_cache

try:
    # hashlib's blake2b is this one; importing hashlib also loads OpenSSL (3.3 MB of
    # RSS and 2 ms of every start), which a tracer that writes no capture never uses
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - a Python built without it
    from hashlib import blake2b

_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


@lru_cache(maxsize=1)
def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "unknown-boot"


# a fork's child id is asked for again at its exit: 4,096 ids cover 4 s of children at
# 1k forks/s (a miss costs ~1 us); 16,384 held 4.5 MB of the agent's RSS under load
@lru_cache(maxsize=4096)
def exec_id(pid: int, start_boot_ns: int) -> str:
    digest = blake2b(f"{boot_id()}:{pid}:{start_boot_ns}".encode(), digest_size=12).digest()
    return base64.urlsafe_b64encode(digest).decode()


def tick_floor(ns: int) -> int:
    """Boot ns rounded down to clock ticks, as /proc/<pid>/stat shows a start
    time, so an id derived from a fork equals the one later read from /proc."""
    return ns - ns % _TICK_NS
