"""Kernel boot-time nanoseconds to wall-clock time."""

from __future__ import annotations

import time

_RESYNC_NS = 1_000_000_000


class BootClock:
    """Converts bpf_ktime_get_boot_ns() values to ns since the epoch.

    The offset is re-read at most once a second so wall-clock adjustments
    (NTP) are followed without a syscall per event.
    """

    def __init__(self) -> None:
        self._offset = 0
        self._synced_at = -_RESYNC_NS
        self.resync()

    def resync(self) -> None:
        boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        self._offset = time.time_ns() - boot
        self._synced_at = boot

    def maybe_resync(self) -> None:
        if time.clock_gettime_ns(time.CLOCK_BOOTTIME) - self._synced_at > _RESYNC_NS:
            self.resync()

    def to_epoch_ns(self, boot_ns: int) -> int:
        return boot_ns + self._offset


# Events come in time order, so the formatted second is nearly always the
# previous one: cache it (strftime is most of the cost of a timestamp).
_last_second = [-1, ""]


def iso8601(epoch_ns: int) -> str:
    """2026-11-22T20:03:46.123456789Z"""
    sec, ns = divmod(epoch_ns, 1_000_000_000)
    cache = _last_second
    if cache[0] != sec:
        cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        cache[0] = sec
    return f"{cache[1]}.{ns:09d}Z"
