"""Drawing `bpfwatch top`: the process table and the drill-down, as lines of
rich Text cut to the terminal's size. Fixed columns, drawn by hand rather than
with rich's Table, so 80x24 is laid out exactly and nothing wraps."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text

from bpfwatch.events.text import display
from bpfwatch.pipeline.sink import _LABEL, details, failed
from bpfwatch.top.model import BYTE_KEYS, RATE_COLUMNS, Row, Snapshot, sort_rows

NUM_W = 6
HEADERS = {"execs": "EXEC/s", "opens": "OPEN/s", "read": "RD/s", "write": "WR/s", "net_rx": "RX/s",
           "net_tx": "TX/s", "conns": "CONN/s", "fails": "FAIL/s", "syscalls": "SYSC/s", "dns": "DNS/s"}
FAMILY_STYLE = {"process": "green", "file": "blue", "network": "cyan", "dns": "magenta", "security": "red"}
KEYS_HELP = "q quit  ↑↓ select  enter details  <> sort  r reverse  g group  / filter  p pause"
KEYS_HELP_DETAIL = "esc back  ↑↓ scroll  q quit"


def rate_text(v: float, is_bytes: bool) -> str:
    """A rate in at most 6 characters: 0, 7.5, 123, 1.2k/12k, 1.2M (bytes: K/M/G, binary)."""
    if v <= 0:
        return "0"
    step, units = (1024.0, "KMGT") if is_bytes else (1000.0, "kMGT")
    if v < 10 and not is_bytes:
        return f"{v:.1f}"
    if v < step:
        return f"{v:.0f}"
    for u in units:
        v /= step
        if v < 10:
            return f"{v:.1f}{u}"
        if v < step or u == units[-1]:
            return f"{v:.0f}{u}"
    return "?"


def fit(s: str, width: int) -> str:
    """s cut to width with an ellipsis, padded to width."""
    s = display(s)
    return (s[: width - 1] + "…") if len(s) > width else s.ljust(width)


def fit_middle(s: str, width: int) -> str:
    """s cut in the middle to width: the start and the end (a path's file
    name, a call's result) both stay in sight."""
    s = display(s)
    if len(s) <= width:
        return s.ljust(width)
    head = max(width // 3, 1)
    return s[:head] + "…" + s[len(s) - (width - head - 1):]


def fit_left(s: str, width: int) -> str:
    """s cut at its start to width (the end of a chain of parents matters most)."""
    s = display(s)
    return ("…" + s[len(s) - width + 1:]) if len(s) > width else s.ljust(width)


@dataclass
class Layout:
    key_title: str
    key_w: int
    user_w: int          # 0: not shown
    comm_w: int          # 0: not shown (command grouping: the key is the command)
    columns: list[str]   # rate keys shown
    width: int


def layout(group: str, width: int, syscalls_on: bool) -> Layout:
    """Which columns fit in `width`, and how wide the text columns are: the
    rates first (DNS/s is dropped first, then SYSC/s), USER only when there is
    room, and the command name takes what is left."""
    cols = [k for k, _, _ in RATE_COLUMNS if k != "syscalls" or syscalls_on]
    key_title, key_w = {"process": ("PID", 7), "command": ("COMMAND", 15), "cgroup": ("CGROUP", 16)}[group]
    name_min = 9 if group == "process" else 0   # COMM and its separator

    def fixed(n_cols: int, user_w: int) -> int:
        return key_w + (user_w + 1 if user_w else 0) + n_cols * (NUM_W + 1)

    for optional in ("dns", "syscalls"):
        if fixed(len(cols), 0) + name_min > width and optional in cols:
            cols.remove(optional)
    user_w = 9 if fixed(len(cols), 9) + name_min + 8 <= width else 0
    rest = max(width - fixed(len(cols), user_w), 0)   # what the name columns may have
    comm_w = 0
    if group == "command":
        key_w += min(rest, 17)
    elif group == "cgroup":
        comm_w = min(16, rest - 1) if rest > 5 else 0
        key_w += rest - (comm_w + 1 if comm_w else 0)
    else:
        comm_w = max(rest - 1, 4)
    return Layout(key_title, key_w, user_w, comm_w, cols, width)


@dataclass
class ViewState:
    sort: str = "opens"
    reverse: bool = True
    selected: int = 0
    paused: bool = False
    detail: Any = None          # the key of the row being looked into
    detail_scroll: int = 0
    prompt: str | None = None   # the filter being typed
    message: str = ""
    order: list[Any] = field(default_factory=list)  # row keys as last drawn


def header_line(snap: Snapshot, state: ViewState, width: int) -> Text:
    sort_name = HEADERS.get(state.sort, {"key": "key", "comm": "COMM"}.get(state.sort, state.sort))
    parts = [("bpfwatch top", "bold"), (f"  {time.strftime('%H:%M:%S', time.localtime(snap.at))}", ""),
             (f"  by {snap.group}", ""), (f"  sort {sort_name}{'▼' if state.reverse else '▲'}", ""),
             (f"  {rate_text(snap.events_per_s, False)} ev/s", ""),
             (f"  lost {snap.lost}", "bold red" if snap.lost else "")]
    if state.paused:
        parts.append(("  PAUSED", "bold yellow"))
    t = Text()
    for s, style in parts:
        if len(t) + len(s) > width:
            break
        t.append(s, style=style)
    return t


def table_lines(snap: Snapshot, state: ViewState, width: int, height: int) -> list[Text]:
    lay = layout(snap.group, width, snap.syscalls_on)
    rows = sort_rows(snap.rows, state.sort, state.reverse)
    state.order = [r.key for r in rows]
    if state.selected >= len(rows):
        state.selected = max(len(rows) - 1, 0)
    head = Text(style="reverse")
    head.append(fit(lay.key_title, lay.key_w) if snap.group != "process" else lay.key_title.rjust(lay.key_w))
    if lay.user_w:
        head.append(" " + fit("USER", lay.user_w))
    if lay.comm_w:
        head.append(" " + fit("COMM  EXE" if snap.group == "process" and lay.comm_w >= 30 else "COMM", lay.comm_w))
    for k in lay.columns:
        head.append(" " + HEADERS[k].rjust(NUM_W), style="reverse bold" if k == state.sort else "reverse")
    head.append(" " * max(width - len(head), 0))
    out = [head]
    first = max(0, state.selected - height + 2)
    for i, row in enumerate(rows[first: first + height - 1], start=first):
        out.append(row_line(row, lay, snap.group, selected=i == state.selected))
    if not rows:
        out.append(Text("  (no activity yet)", style="dim"))
    return out


def row_line(row: Row, lay: Layout, group: str, selected: bool) -> Text:
    t = Text(style="reverse" if selected else "")
    t.append(row.label.rjust(lay.key_w) if group == "process" else fit(row.label, lay.key_w))
    if lay.user_w:
        t.append(" " + fit(row.user, lay.user_w), style="dim" if not selected else "")
    if lay.comm_w:
        comm = row.comm + (f" ({len(row.pids)})" if group == "cgroup" and len(row.pids) > 1 else "")
        if group == "process" and lay.comm_w >= 30 and row.exe:
            name = fit(comm, 16)
            t.append(" " + name, style="bold" if not selected else "")
            t.append(" " + fit(row.exe, lay.comm_w - 17), style="dim" if not selected else "")
        else:
            t.append(" " + fit(comm, lay.comm_w), style="bold" if not selected else "")
    for k in lay.columns:
        v = row.rates.get(k, 0.0)
        style = "" if v else "dim"
        if k == "fails" and v and not selected:
            style = "red"
        t.append(" " + rate_text(v, k in BYTE_KEYS).rjust(NUM_W), style=style)
    return t


def detail_lines(row: Row | None, info: dict[str, Any], events: list[dict[str, Any]], state: ViewState,
                 width: int, height: int) -> list[Text]:
    """One row looked into: who it is, its family, its rates, its recent events."""
    out: list[Text] = []
    if row is None:
        return [Text("  (this row has gone: esc to go back)", style="dim")]
    out.append(Text(fit(info.get("title", ""), width), style="bold"))
    for line in info.get("lines", []):
        label, sep, chain = line.partition(": ")
        if label == "parents" and sep:  # the nearest parents matter most: cut the chain at its start
            out.append(Text(label + sep + fit_left(chain, max(width - len(label) - 2, 8))))
        else:
            out.append(Text(fit(line, width)))
    rates = Text()
    for k, _, _ in RATE_COLUMNS:
        v = row.rates.get(k, 0.0)
        piece = f"{HEADERS[k]} {rate_text(v, k in BYTE_KEYS)}  "
        if len(rates) + len(piece) > width:
            break
        rates.append(piece, style="" if v else "dim")
    out.append(rates)
    title = Text(fit(f"{'TIME':<12} {'EVENT':<8} {'PID':>7} DETAILS (latest last)", width), style="reverse")
    out.append(title)
    room = max(height - len(out), 1)
    end = len(events) - state.detail_scroll
    shown = events[max(end - room, 0): max(end, 0)]
    for ev in shown:
        sec, ns = divmod(ev["ts"], 1_000_000_000)
        clock = time.strftime("%H:%M:%S", time.localtime(sec)) + f".{ns // 1_000_000:03d}"
        label = _LABEL.get(ev["type"]) or ev["type"].split(".", 1)[1].upper()
        style = "red" if failed(ev) else FAMILY_STYLE.get(ev["type"].split(".", 1)[0], "")
        out.append(Text(f"{clock:<12} {label:<8} {ev['pid']:>7} " + fit_middle(details(ev), max(width - 30, 8)),
                        style=style))
    if not events:
        out.append(Text("  (no events of these processes since top started)", style="dim"))
    return out
