"""The reorder window: events from several CPUs reach the ring slightly out
of time order, so each waits `window_ns` and leaves sorted by `ts`.

Held events live in one list sorted by ts, with the released prefix skipped
by an index and dropped in bulk: at a high rate a 0.25 s window holds tens of
thousands of events, and slicing the whole list on every poll cost more than
decoding the events did.
"""

from __future__ import annotations

import bisect
import operator
from typing import Any

Event = dict[str, Any]
_ts = operator.itemgetter("ts")
_COMPACT_AT = 256  # released events kept referenced (and alive) before the list is rebuilt


class ReorderWindow:
    def __init__(self, window_ns: int) -> None:
        self.window_ns = window_ns
        self._held: list[Event] = []
        self._lo = 0  # held[:lo] has been released
        self._released_ts = 0
        self.late = 0  # events that came after a newer one had left

    def __len__(self) -> int:
        return len(self._held) - self._lo

    @property
    def released_any(self) -> bool:
        return self._released_ts > 0

    def oldest_ts(self) -> int | None:
        return self._held[self._lo]["ts"] if len(self._held) > self._lo else None

    def add(self, events: list[Event]) -> None:
        """Takes a batch (it is sorted in place)."""
        if not events:
            return
        events.sort(key=_ts)  # nearly sorted already (one ring): timsort is about one pass
        # anything older than what already left came late: counted, and sent at once
        self.late += bisect.bisect_left(events, self._released_ts, key=_ts)
        held = self._held
        if len(held) == self._lo or held[-1]["ts"] <= events[0]["ts"]:
            held.extend(events)
            return
        # merge: only the held tail newer than the batch's first event is sorted again
        at = bisect.bisect_right(held, events[0]["ts"], lo=self._lo, key=_ts)
        tail = held[at:]
        del held[at:]
        tail.extend(events)
        tail.sort(key=_ts)
        held.extend(tail)

    def release(self, now_ns: int | None) -> list[Event]:
        """Events whose window ended by `now_ns` (CLOCK_BOOTTIME), in ts
        order; every held event with None."""
        held, lo = self._held, self._lo
        if len(held) == lo:
            return []
        cut = len(held) if now_ns is None else bisect.bisect_right(held, now_ns - self.window_ns, lo=lo, key=_ts)
        if cut == lo:
            return []
        out = held[lo:cut]
        self._released_ts = max(self._released_ts, out[-1]["ts"])
        if cut == len(held):
            self._held, self._lo = [], 0
        elif cut >= _COMPACT_AT:
            self._held, self._lo = held[cut:], 0
        else:
            self._lo = cut
        return out
