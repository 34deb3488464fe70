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


def figure(doc: dict[str, Any]) -> Any:
    plt = _pyplot()
    tl = doc.get("timeline") or []
    t = [s["t"] for s in tl]
    fig, axes = plt.subplots(3, 2, figsize=(14, 11), constrained_layout=True)
    fig.suptitle(_title(doc), fontsize=12)
    ax = axes[0][0]
    ax.plot(t, [s["cpu_pct"] for s in tl], color="tab:red")
    ax.set_title("CPU (% of one core)")
    ax.set_xlabel("seconds")
    ax = axes[0][1]
    ax.plot(t, [s["rss_bytes"] / MIB for s in tl], color="tab:blue", label="RSS (MiB)")
    ax.set_title("memory")
    ax.set_ylabel("MiB")
    ax.set_xlabel("seconds")
    ax2 = ax.twinx()
    ax2.step(t, [s["processes"] for s in tl], where="post", color="tab:gray", alpha=0.6, label="processes")
    ax2.step(t, [s["threads"] for s in tl], where="post", color="tab:olive", alpha=0.6, label="threads")
    ax2.set_ylabel("count")
    ax.legend(loc="upper left")
    ax2.legend(loc="upper right")
    ax = axes[1][0]
    for key, label in (("read_bps", "read"), ("write_bps", "write"), ("disk_read_bps", "disk read"),
                       ("disk_write_bps", "disk write")):
        ax.plot(t, [s[key] / MIB for s in tl], label=label)
    ax.set_title("I/O (MiB/s)")
    ax.set_xlabel("seconds")
    ax.legend(loc="upper right")
    ax = axes[1][1]
    ax.plot(t, [s["net_tx_bps"] / MIB for s in tl], label="sent")
    ax.plot(t, [s["net_rx_bps"] / MIB for s in tl], label="received")
    ax.set_title("network (MiB/s, from the kernel)")
    ax.set_xlabel("seconds")
    ax.legend(loc="upper right")

    latency = doc.get("latency_measured", False)
    # time in wait4/waitid is the children's, not the tree's: drawn apart
    waited = doc["syscalls"].get("child_wait_s", 0.0) if latency else 0.0
    apart = f"\n(not shown: {waited:.3f} s waiting for children in wait4/waitid)" if waited else ""
    rows = [r for r in doc["syscalls"]["table"] if not (latency and r["name"] in CHILD_WAIT)][:15]
    ax = axes[2][0]
    names = [r["name"] for r in rows][::-1]
    values = [(r["time_s"] if latency else r["calls"]) for r in rows][::-1]
    ax.barh(names, values, color="tab:purple")
    ax.set_title("top syscalls by " + ("time (s)" if latency else "calls") + apart)
    for i, r in enumerate(rows[::-1]):
        ax.annotate(f"{r['calls']:,}", (values[i], i), xytext=(3, 0), textcoords="offset points",
                    va="center", fontsize=8)
    ax = axes[2][1]
    key = "time_s" if latency else "calls"
    cats = {k: dict(v) for k, v in doc["syscalls"]["by_category"].items() if v["calls"]}
    if waited:
        for r in doc["syscalls"]["table"]:
            if r["name"] in CHILD_WAIT:
                cats[r["category"]]["time_s"] -= r["time_s"]
    order = sorted(cats, key=lambda k: -cats[k][key])
    ax.bar(order, [max(cats[k][key], 0.0) for k in order], color="tab:green")
    ax.set_title("syscall categories by " + ("time (s)" if latency else "calls") + apart)
    ax.tick_params(axis="x", rotation=30)
    return fig


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = buf.getvalue()
    return text[text.index("<svg"):]


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
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>bpfwatch profile: {e(_title(doc))}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{padding:2px 10px;text-align:left;border-bottom:1px solid #ddd}}td:nth-child(n+3){{text-align:right}}
svg{{max-width:100%;height:auto}}</style></head><body>
<h1>bpfwatch profile</h1><p>{e(_title(doc))}</p>
<table>{fact_rows}</table>
{svg}
<h2>syscalls</h2><table><tr>{"".join(f"<th>{e(h)}</th>" for h in head)}</tr>{"".join(rows)}</table>
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
