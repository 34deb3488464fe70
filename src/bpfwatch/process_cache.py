"""What we know about each live process, for enriching events.

Seeded from /proc at start, updated from exec/fork events, bounded (LRU), and
emptied of a process shortly after it exits, so events that arrive late (a
child's exit after its parent's) still find their context.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass(slots=True)
class ProcInfo:
    pid: int
    ppid: int
    comm: str
    exe: str | None
    exec_id: str
    uid: int
    start_boot_ns: int
    cgroup_id: int = 0


class ProcessCache:
    def __init__(self, max_entries: int = 65536, linger_s: float = 5.0) -> None:
        self.max_entries = max_entries
        self.linger_s = linger_s
        self._procs: OrderedDict[int, ProcInfo] = OrderedDict()
        self._exited: deque[tuple[float, int, str]] = deque()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._procs)

    def get(self, pid: int) -> ProcInfo | None:
        info = self._procs.get(pid)
        if info is not None:
            self._procs.move_to_end(pid)
        return info

    def processes(self) -> list[ProcInfo]:
        """Every process known (live, or exited a moment ago)."""
        return list(self._procs.values())

    def put(self, info: ProcInfo) -> None:
        self._procs[info.pid] = info
        self._procs.move_to_end(info.pid)
        while len(self._procs) > self.max_entries:
            self._procs.popitem(last=False)
            self.evicted += 1

    def exited(self, pid: int) -> None:
        """Forget pid after a short grace period (unless it was reused)."""
        info = self._procs.get(pid)
        if info is not None:
            self._exited.append((time.monotonic() + self.linger_s, pid, info.exec_id))

    def expire(self) -> None:
        now = time.monotonic()
        while self._exited and self._exited[0][0] <= now:
            _, pid, eid = self._exited.popleft()
            info = self._procs.get(pid)
            if info is not None and info.exec_id == eid:
                del self._procs[pid]
