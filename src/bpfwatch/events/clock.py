"""Kernel boot-time nanoseconds to wall-clock time."""

from __future__ import annotations

import time

_RESYNC_NS = 1_000_000_000


class BootClock:
    """Converts bpf_ktime_get_boot_ns() values to ns since the epoch.

    The offset is re-read at most once a second so wall-clock adjustments
    (NTP) are followed without a syscall per event. One clock serves the
    whole process (`shared()`): two event sources converting with offsets
    read at different moments would disagree on which side of a cut an
    event falls.
    """

    _shared: BootClock | None = None

    def __init__(self) -> None:
        self._offset = 0
        self._synced_at = -_RESYNC_NS
        self.resync()

    @classmethod
    def shared(cls) -> BootClock:
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def resync(self) -> None:
        # bracket the wall-clock read between two boot-clock reads and keep
        # the tightest of a few tries: a preemption between the reads would
        # otherwise shift every timestamp by however long it lasted
        best_span, offset, boot = None, 0, 0
        for _ in range(3):
            b0 = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            wall = time.time_ns()
            b1 = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            if best_span is None or b1 - b0 < best_span:
                best_span, offset, boot = b1 - b0, wall - (b0 + b1) // 2, b1
        self._offset = offset
        self._synced_at = boot

    def maybe_resync(self) -> None:
        if time.clock_gettime_ns(time.CLOCK_BOOTTIME) - self._synced_at > _RESYNC_NS:
            self.resync()

    def to_epoch_ns(self, boot_ns: int) -> int:
        return boot_ns + self._offset


# Events come in time order, so the formatted second is nearly always the
# previous one: cache it (strftime is most of the cost of a timestamp).
_last_second = [-1, ""]


def second_text(sec: int) -> str:
    """2026-11-22T20:03:46: the part of iso8601's text before the fraction."""
    cache = _last_second
    if cache[0] != sec:
        cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        cache[0] = sec
    return cache[1]  # type: ignore[return-value]


def iso8601(epoch_ns: int) -> str:
    """2026-11-22T20:03:46.123456789Z"""
    sec, ns = divmod(epoch_ns, 1_000_000_000)
    return f"{second_text(sec)}.{ns:09d}Z"
