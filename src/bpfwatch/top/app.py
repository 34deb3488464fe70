"""`bpfwatch top`: the loop that feeds the model from a Monitor and the
kernel's live totals, and draws it full-screen with rich (or prints one
snapshot with --once).

rich's Live rather than textual: rich is already what every other table of
bpfwatch uses, imports in a fraction of textual's time (top should start as
fast as trace), and top needs a screen of lines and a few keys, not widgets.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.text import Text

from bpfwatch.errors import UsageError
from bpfwatch.events.clock import iso8601
from bpfwatch.filters import KEYS, Filter
from bpfwatch.monitor import Monitor
from bpfwatch.mounts import cgroup2_root, cgroup_path
from bpfwatch.sensors.file import FileSensor
from bpfwatch.sensors.network import NetworkSensor
from bpfwatch.top.keys import KeyReader, cbreak
from bpfwatch.top.model import GROUPS, RATE_KEYS, PidStat, Row, Snapshot, TopModel, sort_rows
from bpfwatch.top.screen import (
    KEYS_HELP,
    KEYS_HELP_DETAIL,
    ViewState,
    detail_lines,
    fit,
    header_line,
    layout,
    table_lines,
)

TYPES = ["process.*", "file.*", "network.connect", "network.accept", "network.close", "network.udp", "dns.query"]
# keys of the filter language that say which process (the rest say which event)
PROCESS_KEYS = {"pid", "ppid", "uid", "user", "comm", "exe", "cgroup", "container"}
SORT_NAMES = {"pid": "key", "key": "key", "name": "key", "comm": "comm", "execs": "execs", "opens": "opens",
              "read": "read", "write": "write", "rx": "net_rx", "tx": "net_tx", "conns": "conns",
              "fails": "fails", "syscalls": "syscalls", "dns": "dns"}
JSON_NAMES = {"execs": "execs_per_s", "opens": "opens_per_s", "read": "read_bytes_per_s",
              "write": "write_bytes_per_s", "net_rx": "net_rx_bytes_per_s", "net_tx": "net_tx_bytes_per_s",
              "conns": "connections_per_s", "fails": "failed_calls_per_s", "syscalls": "syscalls_per_s",
              "dns": "dns_queries_per_s"}


def cgroup_label(cgroup_id: int) -> str:
    path = cgroup_path(cgroup_id) if cgroup_id else None
    if path is None:
        return f"cgroup {cgroup_id}"
    rel = os.path.relpath(path, cgroup2_root() or "/")
    return "/" if rel == "." else "/" + rel


def parse_filter(text: str) -> tuple[Filter | None, Filter | None]:
    """Typed filter text ('comm=python* path=/etc !user=root') as the filter on
    events and the part of it that picks processes (for the kernel's live
    totals, which belong to a process, not an event)."""
    allow: dict[str, list[str]] = {}
    deny: dict[str, list[str]] = {}
    for token in text.split():
        into = deny if token[:1] in ("!", "-") else allow
        token = token.lstrip("!-")
        key, eq, value = token.partition("=")
        if not eq or not key or not value:
            raise UsageError(f"'{token}': expected KEY=VALUE, !KEY=VALUE to exclude (keys: {', '.join(KEYS)})")
        if key == "follow":
            raise UsageError("follow is a start-up option here (top -f PID)")
        into.setdefault(key, []).extend(v for v in value.split(",") if v)
    if not allow and not deny:
        return None, None
    events = Filter(allow, deny)
    procs = Filter({k: v for k, v in allow.items() if k in PROCESS_KEYS},
                   {k: v for k, v in deny.items() if k in PROCESS_KEYS})
    return events, procs if procs.active else None


def as_process_event(st: PidStat) -> dict[str, Any]:
    return {"type": "process.exec", "pid": st.pid, "ppid": st.ppid, "uid": st.uid, "comm": st.comm,
            "exe": st.exe, "cgroup_id": st.cgroup_id}


class Top:
    def __init__(self, monitor: Monitor, interval: float = 1.0, group: str = "process", sort: str = "opens",
                 filter_text: str = "") -> None:
        self.monitor = monitor
        self.interval = interval
        self.model = TopModel(group, cgroup_label)
        self.state = ViewState(sort=sort)
        self.filter_text = ""
        self.event_filter: Filter | None = None
        self.proc_filter: Filter | None = None
        self.set_filter(filter_text)
        self.snap: Snapshot | None = None
        self.stopping = False
        self._seen = 0
        self._files = next((s for s in monitor.sensors if isinstance(s, FileSensor)), None)
        self._net = next((s for s in monitor.sensors if isinstance(s, NetworkSensor)), None)

    # -- data --------------------------------------------------------------------------

    def set_filter(self, text: str) -> None:
        self.event_filter, self.proc_filter = parse_filter(text)
        self.filter_text = text.strip()

    def accept(self, st: PidStat) -> bool:
        return self.proc_filter is None or self.proc_filter.match(as_process_event(st))

    def start(self) -> None:
        """Seeds the model with the processes already running, and takes the
        kernel's totals as they are now, so the first rates are of this view."""
        for p in self.monitor.cache.processes():
            self.model.seed(p.pid, p.comm, p.ppid, p.uid, p.exe, p.cgroup_id)
        self._sample()
        self.model.refresh()
        self.model.rows.clear()
        self._seen = self.monitor.events_seen

    def collect(self, timeout: float) -> None:
        events = self.monitor.poll(timeout)
        if self.event_filter is not None:
            events = [e for e in events if self.event_filter.match(e)]
        self.model.add(events)

    def _sample(self) -> None:
        live: dict[int, dict[str, int]] = {}
        for source in (self._files.live_io if self._files else None, self._net.live_bytes if self._net else None):
            if source is not None:
                for pid, values in source().items():
                    live.setdefault(pid, {}).update(values)
        self.model.set_live(live)
        if self.monitor.count_syscalls:
            per_pid: dict[int, list[int]] = {}
            for r in self.monitor.syscall_counts():
                acc = per_pid.setdefault(r["pid"], [0, 0])
                acc[0] += r["count"]
                acc[1] += r["errors"]
            self.model.set_syscalls({pid: (c, e) for pid, (c, e) in per_pid.items()})

    def refresh(self) -> Snapshot:
        self._sample()
        dt = self.model.refresh(self.accept if self.proc_filter is not None else None)
        seen, self._seen = self.monitor.events_seen - self._seen, self.monitor.events_seen
        return self.model.snapshot(dt, seen / dt, self.monitor.lost_total, self.filter_text)

    # -- drawing -------------------------------------------------------------------------

    def row(self, key: Any) -> Row | None:
        return self.model.rows.get(key)

    def describe(self, row: Row) -> dict[str, Any]:
        """Who a row is: the title and lines above its events in the drill-down."""
        known = {p.pid: (p.comm, p.ppid) for p in self.monitor.cache.processes()}
        known.update({pid: (st.comm, st.ppid) for pid, st in self.model.pids.items() if st.exited_at is None})

        def name(pid: int) -> str:
            return f"{known[pid][0]}({pid})" if pid in known else f"?({pid})"

        if self.model.group == "process":
            pid = row.key
            st = self.model.pids.get(pid)
            chain, cur = [], pid
            for _ in range(64):  # a loop in stale data must not hang the screen
                parent = known.get(cur, ("", 0))[1]
                if not parent or parent == cur:
                    break
                chain.append(parent)
                cur = parent
            children = sorted(p for p, (_, pp) in known.items() if pp == pid and p != pid)
            lines = ["parents: " + (" > ".join(name(p) for p in reversed(chain)) or "-") + f" > {name(pid)}",
                     "children: " + (", ".join(name(p) for p in children[:12])
                                     + (f" +{len(children) - 12}" if len(children) > 12 else "") or "-")]
            exe = st.exe if st else None
            title = f"PID {pid}  {row.comm}  user {row.user or '?'}" + (f"  exe {exe}" if exe else "")
            return {"title": title, "lines": lines}
        what = "COMMAND" if self.model.group == "command" else "CGROUP"
        pids = sorted(row.pids)
        return {"title": f"{what} {row.label}: {len(pids)} process{'es' if len(pids) != 1 else ''} active",
                "lines": ["processes: " + ", ".join(name(p) for p in pids[:16])
                          + (f" +{len(pids) - 16}" if len(pids) > 16 else "")]}

    def render(self, width: int, height: int) -> Group:
        snap = self.snap
        state = self.state
        lines: list[Text] = []
        if snap is None:
            return Group(Text("bpfwatch top: starting…"))
        lines.append(header_line(snap, state, width))
        if state.detail is not None:
            row = self.row(state.detail)
            body = detail_lines(row, self.describe(row) if row else {},
                                self.model.recent_events(row) if row else [], state, width, height - 3)
            help_text = KEYS_HELP_DETAIL
        else:
            body = table_lines(snap, state, width, height - 3)
            help_text = KEYS_HELP
        status = Text()
        if state.prompt is not None:
            status.append("filter: ", style="bold")
            status.append(state.prompt + "▏")
        elif state.message:
            status.append(fit(state.message, width), style="bold red")
        elif snap.filter_text:
            status.append(fit(f"filter: {snap.filter_text}   (/ to change)", width), style="yellow")
        else:
            status.append(fit(f"every {self.interval:g}s · rates per second over the last interval", width),
                          style="dim")
        lines.append(status)
        lines.extend(body[: max(height - 3, 1)])
        lines.extend(Text("") for _ in range(max(height - 1 - len(lines), 0)))
        lines.append(Text(fit(help_text, width), style="dim"))
        return Group(*lines[:height])

    # -- keys ----------------------------------------------------------------------------

    def sortable(self, width: int) -> list[str]:
        snap = self.snap
        cols = layout(self.model.group, width, snap.syscalls_on if snap else False).columns
        return ["key"] + (["comm"] if self.model.group != "command" else []) + cols

    def handle(self, key: str, width: int) -> None:
        state = self.state
        if state.prompt is not None:
            if key == "enter":
                try:
                    self.set_filter(state.prompt)
                    state.prompt, state.message = None, ""
                    self.model.rows.clear()
                    state.selected = 0
                except UsageError as e:
                    state.message = f"filter: {e}"
            elif key == "esc":
                state.prompt, state.message = None, ""
            elif key == "backspace":
                state.prompt = state.prompt[:-1]
            elif len(key) == 1:
                state.prompt += key
            return
        state.message = ""
        if key in ("q", "Q", "eof"):
            self.stopping = True
        elif state.detail is not None:
            if key in ("esc", "backspace", "left", "enter"):
                state.detail, state.detail_scroll = None, 0
            elif key in ("up", "pgup"):
                state.detail_scroll += 1 if key == "up" else 10
            elif key in ("down", "pgdn"):
                state.detail_scroll = max(state.detail_scroll - (1 if key == "down" else 10), 0)
        elif key in ("up", "down", "pgup", "pgdn", "home", "end"):
            step = {"up": -1, "down": 1, "pgup": -10, "pgdn": 10, "home": -10**9, "end": 10**9}[key]
            state.selected = min(max(state.selected + step, 0), max(len(state.order) - 1, 0))
        elif key == "enter" and state.order:
            state.detail = state.order[min(state.selected, len(state.order) - 1)]
        elif key in ("<", ">", "left", "right"):
            cols = self.sortable(width)
            i = cols.index(state.sort) if state.sort in cols else 0
            state.sort = cols[(i + (1 if key in (">", "right") else -1)) % len(cols)]
        elif key == "r":
            state.reverse = not state.reverse
        elif key == "g":
            self.model.regroup(GROUPS[(GROUPS.index(self.model.group) + 1) % len(GROUPS)])
            state.selected = 0
            if self.snap is not None:
                self.snap = self.model.snapshot(self.snap.interval, self.snap.events_per_s, self.snap.lost,
                                                self.filter_text)
        elif key == "/":
            state.prompt = self.filter_text
        elif key in ("p", " "):
            state.paused = not state.paused

    # -- the two ways to run -------------------------------------------------------------

    def interactive(self, console: Console) -> int:
        from rich.live import Live

        fd = sys.stdin.fileno()
        redraw = [False]

        def on_stop(_signum: int, _frame: Any) -> None:
            self.stopping = True
            self.monitor.wake()

        def on_resize(_signum: int, _frame: Any) -> None:
            redraw[0] = True
            self.monitor.wake()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGHUP, on_stop)
        signal.signal(signal.SIGWINCH, on_resize)
        self.start()
        reader = KeyReader(fd, self.monitor.wake)
        try:
            with cbreak(fd), Live(console=console, screen=True, auto_refresh=False, redirect_stdout=False,
                                  redirect_stderr=False) as live:
                reader.start()
                due = time.monotonic() + self.interval
                self.snap = self.model.snapshot(0.0, 0.0, self.monitor.lost_total, self.filter_text)
                live.update(self.render(*console.size), refresh=True)
                while not self.stopping:
                    now = time.monotonic()
                    self.collect(max(0.0, min(due - now, 0.25)))
                    changed = redraw[0]
                    redraw[0] = False
                    for key in reader.pending():
                        self.handle(key, console.size.width)
                        changed = True
                    if time.monotonic() >= due:
                        due += self.interval * max(1, int((time.monotonic() - due) / self.interval) + 1)
                        snap = self.refresh()
                        if not self.state.paused:
                            self.snap = snap
                            changed = True
                    if changed and not self.stopping:
                        live.update(self.render(*console.size), refresh=True)
        except KeyboardInterrupt:
            pass
        finally:
            reader.close()
        return 0

    def once(self, out: Callable[[str], None], as_json: bool, limit: int, width: int) -> int:
        self.start()
        end = time.monotonic() + self.interval
        while (left := end - time.monotonic()) > 0 and not self.stopping:
            self.collect(min(left, 0.25))
        self.collect(0)
        snap = self.snap = self.refresh()
        rows = sort_rows(snap.rows, self.state.sort, self.state.reverse)[:limit]
        if as_json:
            from bpfwatch.events.text import dumps

            key_name = {"process": "pid", "command": "comm", "cgroup": "cgroup_id"}[snap.group]
            doc = {
                "time": iso8601(time.time_ns()), "interval_s": round(snap.interval, 3), "group": snap.group,
                "events_per_s": round(snap.events_per_s, 1), "lost": snap.lost,
                "syscalls_counted": snap.syscalls_on, "filter": snap.filter_text or None,
                "rows": [{key_name: r.key, **({"cgroup": r.label} if snap.group == "cgroup" else {}),
                          "comm": r.comm, "user": r.user or None, "pids": sorted(r.pids),
                          **{JSON_NAMES[k]: round(r.rates.get(k, 0.0), 2) for k in RATE_KEYS
                             if k != "syscalls" or snap.syscalls_on}} for r in rows],
            }
            out(dumps(doc, option=0).decode() + "\n")
            return 0
        self.state.selected = -1  # no row highlighted in print
        snap.rows = rows
        lines = [header_line(snap, self.state, width), *table_lines(snap, self.state, width, len(rows) + 2)]
        console = Console(width=width, highlight=False)
        for line in lines:
            console.print(line, no_wrap=True, overflow="crop")
        return 0


def check_sort(name: str) -> str:
    key = SORT_NAMES.get(name.lower())
    if key is None:
        raise UsageError(f"--sort {name}: not a column (one of {', '.join(SORT_NAMES)})")
    return key


def terminal_ok() -> None:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("top draws a full screen and needs a terminal on stdin and stdout; "
                         "for scripts use 'bpfwatch top --once --json'")

