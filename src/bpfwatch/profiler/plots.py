"""`bpfwatch report`: a profile as pictures. Timelines (CPU, memory, I/O,
network) and the syscall and category breakdowns, as PNG or SVG, or a
self-contained HTML page with the figure inline and the tables beside it."""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

import orjson

from bpfwatch.errors import BpfwatchError, UsageError
from bpfwatch.profiler.render import human_bytes
from bpfwatch.syscalls import CHILD_WAIT
from bpfwatch.textfile import read_small

FORMATS = (".html", ".png", ".svg")
MIB = 1 << 20


def load(path: str) -> dict[str, Any]:
    """A summary document (`run --json`) or a timeline (`run --timeline`,
    whose last line is the summary) as one document with its samples."""
    try:
        raw = read_small(path, "profile", limit=1 << 30)
    except UsageError as e:
        raise BpfwatchError(str(e)) from None
    try:
        doc = orjson.loads(raw)
        if isinstance(doc, dict) and doc.get("kind") == "profile":
            return doc
    except orjson.JSONDecodeError:
        pass
    samples, summary = [], None
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise BpfwatchError(f"{path}:{n}: not JSON: neither a summary nor a timeline of 'bpfwatch run'") from None
        if rec.get("kind") == "sample" and rec.get("scope") == "tree":
            samples.append(rec)
        elif rec.get("kind") == "summary":
            summary = rec
    if summary is None:
        raise BpfwatchError(f"{path}: no profile summary in it (write one with 'bpfwatch run --json FILE')")
    summary["timeline"] = samples
    return summary


def _title(doc: dict[str, Any]) -> str:
    who = " ".join(doc["command"]) if doc.get("command") else f"pid {doc.get('attach_pid')}"
    if len(who) > 90:
        who = who[:87] + "..."
    b = doc["behavior"]["classification"]
    return f"{who}  —  {doc['duration_s']:.2f} s, {doc['syscalls']['total']:,} syscalls, {b}"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot

    return pyplot


def _legend(ax: Any, handles: list[Any] | None = None) -> None:
    """The legend under the panel, outside the data: it can hide nothing."""
    kw = {"handles": handles} if handles else {}
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=4, frameon=False, fontsize=8, **kw)


def time_split(doc: dict[str, Any]) -> dict[str, float]:
    """Where the tree's task time went, with the time its tasks spent waiting
    for their children (wait4/waitid) apart from their own blocking."""
    tm = doc["time"]
    off = tm["off_cpu_s"]
    waited = doc["syscalls"].get("child_wait_s", 0.0) if doc.get("latency_measured") else 0.0
    return {"user": tm["user_s"], "system": tm["system_s"], "runnable (waiting for a CPU)": off.get("runnable", 0.0),
            "I/O wait": off.get("io_wait", 0.0),
            "own blocking (sleep, locks, network)": max(off.get("sleep", 0.0) - waited, 0.0),
            "waiting for children": waited}


def _panels(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    """(name, draw(ax)) of each panel worth drawing: a panel whose numbers are
    all zero is left out (and named in the figure's footnote)."""
    tl = doc.get("timeline") or []
    t = [s["t"] for s in tl]
    latency = doc.get("latency_measured", False)
    panels: list[tuple[str, Any]] = []

    def series(key: str, scale: float = 1.0) -> list[float]:
        return [s.get(key, 0) / scale for s in tl]

    def cpu(ax: Any) -> None:
        ax.plot(t, series("cpu_pct"), color="tab:red")
        ax.set_title("CPU (% of one core)")

    def memory(ax: Any) -> None:
        rss = ax.plot(t, series("rss_bytes", MIB), color="tab:blue", label="RSS (MiB)")
        ax.set_ylabel("MiB")
        ax.set_title("memory, processes and threads")
        ax2 = ax.twinx()
        # threads as a filled area, processes as a bold dashed line over it: equal
        # counts (single-threaded processes) still show both
        thr = ax2.fill_between(t, series("threads"), step="post", color="tab:olive", alpha=0.25, label="threads")
        procs = ax2.step(t, series("processes"), where="post", color="black", linestyle="--", linewidth=1.6,
                         label="processes")
        ax2.set_ylabel("count")
        ax2.set_ylim(bottom=0)
        _legend(ax, [rss[0], procs[0], thr])

    def io(ax: Any) -> None:
        for key, label, style in (("read_bps", "read", "-"), ("write_bps", "written", "-"),
                                  ("disk_read_bps", "disk read", "--"), ("disk_write_bps", "disk written", "--")):
            if any(series(key)):
                ax.plot(t, series(key, MIB), label=label, linestyle=style, linewidth=1.6 if style == "--" else 1.2)
        ax.set_title("I/O (MiB/s)")
        _legend(ax)

    def network(ax: Any) -> None:
        ax.plot(t, series("net_tx_bps", MIB), label="sent")
        ax.plot(t, series("net_rx_bps", MIB), label="received", linestyle="--")
        ax.set_title("network (MiB/s, from the kernel)")
        _legend(ax)

    def where_time_went(ax: Any) -> None:
        split = {k: v for k, v in time_split(doc).items() if v > 0}
        colors = {"user": "tab:red", "system": "tab:orange", "runnable (waiting for a CPU)": "tab:pink",
                  "I/O wait": "tab:brown", "own blocking (sleep, locks, network)": "tab:blue",
                  "waiting for children": "tab:gray"}
        names = list(split)[::-1]
        ax.barh(names, [split[n] for n in names], color=[colors[n] for n in names])
        for i, n in enumerate(names):
            ax.annotate(f"{split[n]:.3f} s", (split[n], i), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=8)
        ax.set_title("where the tasks' time went (s, summed over tasks)")

    waited = doc["syscalls"].get("child_wait_s", 0.0) if latency else 0.0
    apart = f"\n(not shown: {waited:.3f} s waiting for children in wait4/waitid)" if waited else ""
    rows = [r for r in doc["syscalls"]["table"] if not (latency and r["name"] in CHILD_WAIT)][:15]

    def top_syscalls(ax: Any) -> None:
        names = [r["name"] for r in rows][::-1]
        values = [(r["time_s"] if latency else r["calls"]) for r in rows][::-1]
        ax.barh(names, values, color="tab:purple")
        ax.set_title("top syscalls by " + ("time (s)" if latency else "calls") + apart)
        for i, r in enumerate(rows[::-1]):
            ax.annotate(f"{r['calls']:,}", (values[i], i), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=8)

    key = "time_s" if latency else "calls"
    cats = {k: dict(v) for k, v in doc["syscalls"]["by_category"].items() if v["calls"]}
    if waited:
        for r in doc["syscalls"]["table"]:
            if r["name"] in CHILD_WAIT and r["category"] in cats:
                cats[r["category"]]["time_s"] -= r["time_s"]

    def categories(ax: Any) -> None:
        order = sorted(cats, key=lambda k: -cats[k][key])
        ax.bar(order, [max(cats[k][key], 0.0) for k in order], color="tab:green")
        ax.set_title("syscall categories by " + ("time (s)" if latency else "calls") + apart)
        ax.tick_params(axis="x", rotation=30)

    for name, draw, data in (
        ("CPU", cpu, series("cpu_pct")),
        ("memory", memory, series("rss_bytes") + series("processes")),
        ("I/O", io, series("read_bps") + series("write_bps") + series("disk_read_bps") + series("disk_write_bps")),
        ("network", network, series("net_tx_bps") + series("net_rx_bps")),
        ("time", where_time_went, list(time_split(doc).values())),
        ("syscalls", top_syscalls, [r["calls"] for r in rows]),
        ("categories", categories, [max(cats[k][key], 0.0) for k in cats]),
    ):
        panels.append((name, draw if any(v > 0 for v in data) else None))
    return panels


def figure(doc: dict[str, Any]) -> Any:
    plt = _pyplot()
    panels = _panels(doc)
    drawn = [(n, d) for n, d in panels if d is not None]
    skipped = [n for n, d in panels if d is None]
    cols = 2
    nrows = max((len(drawn) + cols - 1) // cols, 1)
    fig, axes = plt.subplots(nrows, cols, figsize=(14, 3.9 * nrows + 0.6), constrained_layout=True, squeeze=False)
    fig.suptitle(_title(doc), fontsize=12)
    flat = [ax for row in axes for ax in row]
    for ax, (name, draw) in zip(flat, drawn, strict=False):
        draw(ax)
        if name in ("CPU", "memory", "I/O", "network"):
            ax.set_xlabel("seconds")
            ax.set_ylim(bottom=0)
    for ax in flat[len(drawn):]:
        ax.set_visible(False)
    if skipped:
        fig.text(0.01, 0.002, "not drawn, all zero: " + ", ".join(skipped), fontsize=8, color="gray")
    return fig


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _process_tables(doc: dict[str, Any], top: int = 10) -> str:
    """The busiest processes of the tree three ways: by CPU, by syscalls, by I/O."""
    e = html.escape
    procs = [p for p in doc.get("processes") or [] if p.get("pid")]
    if not procs:
        return ""
    ways = (("on-CPU time", lambda p: p["on_cpu_s"], lambda v: f"{v:.3f} s"),
            ("system calls", lambda p: p["syscalls"], lambda v: f"{v:,}"),
            ("bytes read and written", lambda p: p["read_chars"] + p["write_chars"], human_bytes))
    out = ["<h2>processes</h2>"]
    omitted = doc.get("processes_omitted", 0)
    if omitted:
        out.append(f"<p>{omitted} short-lived processes are counted in the totals but not listed.</p>")
    for title, key, fmt in ways:
        ranked = sorted(procs, key=key, reverse=True)[:top]
        if not ranked or not key(ranked[0]):
            continue
        rows = "".join(
            f"<tr><td>{p['pid']}</td><td>{e(p['comm'])}</td><td>{e(fmt(key(p)))}</td>"
            f"<td>{e(' '.join(p.get('argv') or [])[:120])}</td></tr>" for p in ranked if key(p))
        out.append(f"<h3>by {e(title)}</h3><table><tr><th>pid</th><th>command</th><th>{e(title)}</th>"
                   f"<th>argv</th></tr>{rows}</table>")
    return "\n".join(out)


def _html(doc: dict[str, Any], svg: str) -> str:
    e = html.escape
    latency = doc.get("latency_measured", False)
    head = ["syscall", "category", "calls", "errors"] + (["seconds", "usecs/call", "% time"] if latency else [])
    rows = []
    for r in doc["syscalls"]["table"][:40]:
        cells = [r["name"], r["category"], f"{r['calls']:,}", str(r["errors"] or "")]
        if latency:
            cells += [f"{r['time_s']:.6f}", f"{r['avg_us']:.2f}", f"{r['pct_time']:.2f}"]
        rows.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    tm, rs, b = doc["time"], doc["resources"], doc["behavior"]
    facts = [
        ("verdict", f"{b['classification']}: {b['reason']}"),
        ("wall time", f"{tm['wall_s']:.3f} s"),
        ("on-CPU", f"{tm['on_cpu_s']:.3f} s (user {tm['user_s']:.3f}, sys {tm['system_s']:.3f})"),
        ("off-CPU", ", ".join(f"{k} {v:.3f} s" for k, v in tm["off_cpu_s"].items())),
        ("of the time asleep", f"{time_split(doc)['own blocking (sleep, locks, network)']:.3f} s the tree's own "
                               f"blocking, {time_split(doc)['waiting for children']:.3f} s waiting for children"),
        ("peak RSS", human_bytes(rs["peak_rss_bytes"])),
        ("processes / threads", f"{rs['processes']} / {rs['threads_created']}"),
        ("read / written", f"{human_bytes(rs['read_chars'])} / {human_bytes(rs['write_chars'])}"),
        ("network sent / received", f"{human_bytes(rs['net_tx_bytes'])} / {human_bytes(rs['net_rx_bytes'])}"),
        ("syscalls", f"{doc['syscalls']['total']:,} ({doc['syscalls']['rate_per_s']:,.0f}/s), "
                     f"{doc['syscalls']['errors']:,} errors"),
        ("waiting for children", f"{doc['syscalls'].get('child_wait_s', 0.0):.3f} s in wait4/waitid "
                                 "(the children's time, left out of the charts by time)"),
        ("lost records", str(doc.get("lost_events", 0))),
    ]
    fact_rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts)
    procs = _process_tables(doc)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>bpfwatch profile: {e(_title(doc))}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{padding:2px 10px;text-align:left;border-bottom:1px solid #ddd}}td:nth-child(n+3){{text-align:right}}
svg{{max-width:100%;height:auto}}</style></head><body>
<h1>bpfwatch profile</h1><p>{e(_title(doc))}</p>
<table>{fact_rows}</table>
{svg}
<h2>syscalls</h2><table><tr>{"".join(f"<th>{e(h)}</th>" for h in head)}</tr>{"".join(rows)}</table>
{procs}
</body></html>
"""


def write_report(doc: dict[str, Any], out: str) -> None:
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"cannot write '{out}': the report is .html, .png or .svg")
    fig = figure(doc)
    try:
        if suffix == ".html":
            data = _html(doc, _svg(fig)).encode()
            Path(out).write_bytes(data)
        else:
            fig.savefig(out, format=suffix[1:], dpi=110)
    except OSError as e:
        raise BpfwatchError(f"cannot write {out}: {e.strerror}") from None
    finally:
        _pyplot().close(fig)
