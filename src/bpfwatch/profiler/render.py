"""The profile in the terminal: a syscall table laid out like `strace -c`,
then categories, time accounting, resources and the verdict."""

from __future__ import annotations

from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.table import Table


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}" if whole else "0.0"


def _usecs(us: float) -> str:
    return f"{us:.2f}" if us < 10 else f"{us:.0f}"


def syscall_table(doc: dict[str, Any], top: int | None) -> Table:
    latency = doc["latency_measured"]
    rows = doc["syscalls"]["table"]
    shown = rows if top is None else rows[:top]
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title_justify="left")
    if latency:
        t.add_column("% time", justify="right")
        t.add_column("seconds", justify="right")
        t.add_column("usecs/call", justify="right")
    else:
        t.add_column("% calls", justify="right")
    t.add_column("calls", justify="right")
    t.add_column("errors", justify="right")
    t.add_column("syscall")
    t.add_column("category")
    for r in shown:
        lead = ([f"{r['pct_time']:.2f}", f"{r['time_s']:.6f}", _usecs(r["avg_us"])] if latency
                else [f"{r['pct_calls']:.2f}"])
        t.add_row(*lead, str(r["calls"]), str(r["errors"] or ""), r["name"], r["category"])
    s = doc["syscalls"]
    if len(shown) < len(rows):
        rest = rows[len(shown):]
        t.add_row(*([""] * (3 if latency else 1)), str(sum(r["calls"] for r in rest)),
                  str(sum(r["errors"] for r in rest) or ""), f"({len(rest)} more)", "")
    total = ([f"{100:.2f}", f"{s['time_s']:.6f}", _usecs(1e6 * s["time_s"] / max(s["total"], 1))] if latency
             else ["100.00"])
    t.add_section()
    t.add_row(*total, str(s["total"]), str(s["errors"] or ""), "total", "")
    return t


def category_table(doc: dict[str, Any]) -> Table:
    latency = doc["latency_measured"]
    cats = doc["syscalls"]["by_category"]
    total = doc["syscalls"]["total"]
    ttime = doc["syscalls"].get("time_s", 0.0)
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in ("category", "calls", "% calls", "errors") + (("seconds", "% time") if latency else ()):
        t.add_column(name, justify="left" if name == "category" else "right")
    for name, d in sorted(cats.items(), key=lambda kv: (-kv[1].get("time_s", 0), -kv[1]["calls"])):
        if not d["calls"]:
            continue
        row = [name, str(d["calls"]), _pct(d["calls"], total), str(d["errors"] or "")]
        if latency:
            row += [f"{d['time_s']:.6f}", _pct(d["time_s"], ttime)]
        t.add_row(*row)
    return t


def render(doc: dict[str, Any], out: TextIO, top: int | None = None, color: bool | None = None) -> None:
    con = Console(file=out, highlight=False, color_system="auto" if color is None or color else None,
                  force_terminal=color)
    if not con.is_terminal:
        con.soft_wrap = True  # files and pipes: whole lines, never folded at 80 columns
    who = " ".join(doc["command"]) if doc["command"] else f"process {doc['attach_pid']}"
    if doc["signal"]:
        how = f"killed by signal {doc['signal']}"
        if doc.get("signals_sent"):
            how += f" ({' then '.join(doc['signals_sent'])} at the end of --duration)"
    elif doc["exit_code"] is not None:
        how = f"exited {doc['exit_code']}"
        if doc.get("signals_sent"):
            how += f" after {' then '.join(doc['signals_sent'])} at the end of --duration"
    else:
        how = f"stopped ({doc['stopped_by'] or 'still running'})"
    con.print(f"[bold]bpfwatch run[/]: {who} (pid {doc['pid']}) {how} after {doc['duration_s']:.3f} s")
    con.print(syscall_table(doc, top))
    con.print(category_table(doc))
    tm, rs, b, s_all = doc["time"], doc["resources"], doc["behavior"], doc["syscalls"]
    off = tm["off_cpu_s"]
    child_wait = s_all.get("child_wait_s", 0.0)
    wait_note = f" ({child_wait:.3f} s of it waiting for children)" if child_wait else ""
    inten = ", ".join(f"{k.removesuffix('_intensity')} {v:.0%}" for k, v in b["intensities"].items())
    facts = [
        ("time", f"wall {tm['wall_s']:.3f} s, on-CPU {tm['on_cpu_s']:.3f} s "
                 f"(user {tm['user_s']:.3f}, sys {tm['system_s']:.3f})"),
        ("off-CPU", f"runnable {off['runnable']:.3f} s, I/O wait {off['io_wait']:.3f} s, "
                    f"sleeping {off['sleep']:.3f} s{wait_note}"),
        ("memory", f"peak RSS {human_bytes(rs['peak_rss_bytes'])}, page faults "
                   f"{rs['minor_faults']} minor, {rs['major_faults']} major"),
        ("tasks", f"{rs['processes']} processes, {rs['threads_created']} threads created"),
        ("I/O", f"read {human_bytes(rs['read_chars'])} (disk {human_bytes(rs['read_bytes'])}), "
                f"written {human_bytes(rs['write_chars'])} (disk {human_bytes(rs['write_bytes'])})"),
        ("network", f"sent {human_bytes(rs['net_tx_bytes'])}, received {human_bytes(rs['net_rx_bytes'])}"),
    ]
    if child_wait:
        facts.append(("children", f"waited {child_wait:.3f} s for children in wait4/waitid "
                                  "(their time, not the tree's own blocking)"))
    facts.append(("verdict", f"{b['classification']}: {b['reason']} ({inten})"))
    if con.is_terminal:
        # a terminal gets the facts wrapped under their text, not under the labels
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True, min_width=10)
        grid.add_column(overflow="fold")
        for label, text in facts:
            grid.add_row(label, text)
        con.print(grid)
    else:
        for label, text in facts:
            con.print(f"[bold]{label:<10}[/] {text}")
    s = doc["syscalls"]
    notes = [f"{s['total']} syscalls, {s['rate_per_s']:.0f}/s"]
    if doc["lost_events"]:
        notes.append(f"[red]{doc['lost_events']} lifecycle records lost[/]")
    if doc["overflow_processes"]:
        notes.append(f"{doc['overflow_processes']} processes beyond --max-procs counted together")
    if doc["still_running"]:
        notes.append(f"still running: {', '.join(map(str, doc['still_running'][:10]))}")
    con.print("[dim]" + "; ".join(notes) + "[/]")
