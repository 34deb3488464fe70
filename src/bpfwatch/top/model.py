"""What `bpfwatch top` shows, as data: per-process counters fed by events and
by the kernel's live totals, folded into rows per process, command or cgroup
at each refresh.

Bytes come from two places so that a rate is live and exact: the kernel's maps
of files and sockets still open (totals so far), and the events that report a
file or a connection when it ends (its final totals). A pid's cumulative
total is the sum of both; a refresh's rate is the growth of that sum.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bpfwatch.events.users import user_name

# columns with a per-second rate, in display order: (key, header, what it counts)
RATE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("execs", "EXEC/s", "programs started (execs of its children)"),
    ("opens", "OPEN/s", "files opened"),
    ("read", "READ/s", "bytes read from files"),
    ("write", "WRITE/s", "bytes written to files"),
    ("net_rx", "RX/s", "bytes received on TCP and UDP sockets"),
    ("net_tx", "TX/s", "bytes sent on TCP and UDP sockets"),
    ("conns", "CONN/s", "TCP connections made or accepted"),
    ("fails", "FAIL/s", "failed calls (every syscall with the counter on, else opens, file changes and connects)"),
    ("syscalls", "SYSC/s", "system calls (with --syscalls)"),
    ("dns", "DNS/s", "DNS queries sent"),
)
RATE_KEYS = tuple(k for k, _, _ in RATE_COLUMNS)
BYTE_KEYS = ("read", "write", "net_rx", "net_tx")
GROUPS = ("process", "command", "cgroup")
RECENT_PER_PID = 40        # events kept per process for the drill-down
KEEP_IDLE_S = 10.0         # a row stays this long after its last activity
FORGET_EXITED_S = 5.0      # an exited pid's counters linger for late events


@dataclass(slots=True)
class PidStat:
    pid: int
    comm: str = "?"
    ppid: int = 0
    uid: int | None = None
    user: str | None = None
    exe: str | None = None
    cgroup_id: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RATE_KEYS, 0))
    # cumulative bytes: closed (from events) and live (from the kernel's maps)
    closed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BYTE_KEYS, 0))
    live: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BYTE_KEYS, 0))
    seen_bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BYTE_KEYS, 0))
    syscalls_total: int = 0    # the syscall counter's running totals
    errors_total: int = 0
    exited_at: float | None = None
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_PER_PID))


@dataclass(slots=True)
class Row:
    key: Any                 # pid, comm or cgroup id
    label: str               # what the first column shows
    comm: str
    user: str
    pids: set[int]
    rates: dict[str, float]
    last_active: float
    exe: str | None = None


@dataclass(slots=True)
class Snapshot:
    at: float                # time.time() of the refresh
    interval: float          # seconds the rates cover
    group: str
    rows: list[Row]
    events_per_s: float
    lost: int
    syscalls_on: bool
    filter_text: str


def _failed(ev: dict[str, Any]) -> bool:
    t = ev["type"]
    if t == "network.connect":
        return ev.get("result") not in (None, "established")
    if t == "process.exec_failed":
        return True
    return t.startswith("file.") and t != "file.io" and (ev.get("ret") or 0) < 0


class TopModel:
    """Counters per pid, rows per group. Feed it events (`add`) and the
    kernel's live totals (`set_live`, `set_syscalls`); `refresh` turns what
    accumulated since the last refresh into rates."""

    def __init__(self, group: str = "process", cgroup_name: Callable[[int], str] | None = None) -> None:
        self.group = group
        self.pids: dict[int, PidStat] = {}
        self.rows: dict[Any, Row] = {}
        self.cgroup_name = cgroup_name or (lambda cid: f"cgroup {cid}")
        self.events = 0
        self.syscalls_on = False
        self._last = time.monotonic()

    # -- input ---------------------------------------------------------------------------

    def _stat(self, pid: int) -> PidStat:
        st = self.pids.get(pid)
        if st is None:
            st = self.pids[pid] = PidStat(pid)
        return st

    def seed(self, pid: int, comm: str, ppid: int, uid: int | None, exe: str | None, cgroup_id: int) -> None:
        """What is known of a process before any of its events (the process cache)."""
        st = self._stat(pid)
        st.comm, st.ppid, st.uid, st.exe, st.cgroup_id = comm, ppid, uid, exe, cgroup_id

    def add(self, events: Iterable[dict[str, Any]]) -> None:
        for ev in events:
            self.events += 1
            t = ev["type"]
            pid = ev["pid"]
            st = self._stat(pid)
            st.comm = ev.get("comm") or st.comm
            st.uid = ev.get("uid", st.uid)
            st.user = ev.get("user") or st.user
            st.exe = ev.get("exe") or st.exe
            st.ppid = ev.get("ppid") or st.ppid
            st.cgroup_id = ev.get("cgroup_id") or st.cgroup_id
            st.recent.append(ev)
            c = st.counts
            if t == "process.exec":
                parent = self._stat(ev["ppid"]) if ev.get("ppid") else None
                if parent is not None:
                    parent.counts["execs"] += 1
                st.exited_at = None
            elif t == "process.fork":
                if not ev.get("thread"):
                    child = self._stat(ev["child_pid"])
                    child.comm, child.ppid, child.uid, child.user = st.comm, pid, st.uid, st.user
                    child.exe, child.cgroup_id, child.exited_at = st.exe, st.cgroup_id, None
            elif t == "process.exit":
                if not ev.get("thread"):
                    st.exited_at = time.monotonic()
            elif t == "file.open":
                c["opens"] += 1
            elif t == "file.io":
                st.closed["read"] += ev.get("read_bytes") or 0
                st.closed["write"] += ev.get("write_bytes") or 0
            elif t == "network.connect" or t == "network.accept":
                c["conns"] += 1
            elif t == "network.close" or (t == "network.udp" and ev.get("phase") == "end"):
                st.closed["net_tx"] += ev.get("bytes_sent") or 0
                st.closed["net_rx"] += ev.get("bytes_received") or 0
            elif t == "dns.query":
                c["dns"] += 1
            if not self.syscalls_on and _failed(ev):
                c["fails"] += 1

    def set_live(self, live: dict[int, dict[str, int]]) -> None:
        """The kernel's totals of files and sockets still open, per pid
        (keys of BYTE_KEYS); a pid not in `live` has none open."""
        for pid, st in self.pids.items():
            if pid not in live and any(st.live.values()):
                st.live = dict.fromkeys(BYTE_KEYS, 0)
        for pid, values in live.items():
            st = self._stat(pid)
            st.live = {k: values.get(k, 0) for k in BYTE_KEYS}

    def set_syscalls(self, per_pid: dict[int, tuple[int, int]]) -> None:
        """The syscall counter's running totals per pid: (calls, errors). The
        counter starts empty with the view, so a pid's first totals are its
        calls since then."""
        self.syscalls_on = True
        for pid, (calls, errors) in per_pid.items():
            st = self._stat(pid)
            st.counts["syscalls"] += max(calls - st.syscalls_total, 0)
            st.counts["fails"] += max(errors - st.errors_total, 0)
            st.syscalls_total, st.errors_total = calls, errors

    # -- output --------------------------------------------------------------------------

    def key_of(self, st: PidStat) -> Any:
        if self.group == "command":
            return st.comm
        if self.group == "cgroup":
            return st.cgroup_id
        return st.pid

    def _label(self, key: Any, st: PidStat) -> str:
        if self.group == "cgroup":
            return self.cgroup_name(key)
        return str(key)

    def refresh(self, accept: Callable[[PidStat], bool] | None = None) -> float:
        """Folds the counts since the last refresh into rows; returns the
        seconds they cover. `accept` picks which pids count (a typed filter)."""
        now = time.monotonic()
        dt = max(now - self._last, 1e-3)
        self._last = now
        fresh: dict[Any, dict[str, float]] = {}
        members: dict[Any, set[int]] = {}
        first: dict[Any, PidStat] = {}
        for pid, st in list(self.pids.items()):
            grown = {}
            for k in BYTE_KEYS:
                total = st.closed[k] + st.live[k]
                grown[k] = max(total - st.seen_bytes[k], 0)
                st.seen_bytes[k] = total
            counts = st.counts
            activity = any(counts.values()) or any(grown.values())
            if activity and (accept is None or accept(st)):
                key = self.key_of(st)
                acc = fresh.get(key)
                if acc is None:
                    acc = fresh[key] = dict.fromkeys(RATE_KEYS, 0.0)
                    members[key] = set()
                    first[key] = st
                for k, v in counts.items():
                    acc[k] += v
                for k, v in grown.items():
                    acc[k] += v
                members[key].add(pid)
            st.counts = dict.fromkeys(RATE_KEYS, 0)
            if st.exited_at is not None and now - st.exited_at > FORGET_EXITED_S:
                del self.pids[pid]
        for key, acc in fresh.items():
            st = first[key]
            rates = {k: v / dt for k, v in acc.items()}
            row = self.rows.get(key)
            if row is None:
                row = self.rows[key] = Row(key, self._label(key, st), st.comm, "", set(), rates, now)
            row.rates, row.last_active, row.pids = rates, now, members[key]
            row.comm = st.comm if self.group != "command" else key
            row.user = st.user or (user_name(st.uid) or str(st.uid) if st.uid is not None else "")
            row.exe = st.exe
        for key, row in list(self.rows.items()):
            if key not in fresh:
                # idle rows stay a while (a pause in a busy process); rows of processes
                # that have all exited go at once: a build would leave hundreds
                gone = all(self.pids.get(p) is None or self.pids[p].exited_at is not None for p in row.pids)
                if gone or now - row.last_active > KEEP_IDLE_S:
                    del self.rows[key]
                else:
                    row.rates = dict.fromkeys(RATE_KEYS, 0.0)
        return dt

    def regroup(self, group: str) -> None:
        if group not in GROUPS:
            raise ValueError(group)
        self.group = group
        self.rows.clear()

    def snapshot(self, dt: float, events_per_s: float, lost: int, filter_text: str = "") -> Snapshot:
        return Snapshot(time.time(), dt, self.group, list(self.rows.values()), events_per_s, lost,
                        self.syscalls_on, filter_text)

    def recent_events(self, row: Row, limit: int = 200) -> list[dict[str, Any]]:
        """The latest events of a row's processes, oldest first."""
        evs = [e for pid in row.pids if pid in self.pids for e in self.pids[pid].recent]
        evs.sort(key=lambda e: e["ts"])
        return evs[-limit:]


def sort_rows(rows: list[Row], column: str, reverse: bool = True) -> list[Row]:
    """Rows by a rate column (busiest first), or by the label for 'key' or 'comm'."""
    if column == "key":
        return sorted(rows, key=lambda r: (isinstance(r.key, str), r.key), reverse=not reverse)
    if column == "comm":
        return sorted(rows, key=lambda r: r.comm, reverse=not reverse)
    return sorted(rows, key=lambda r: (r.rates.get(column, 0.0), -len(r.pids)), reverse=reverse)
