"""`bpfwatch xdp-stats`: packets and bytes per second on an interface (XDP)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from bpfwatch.cli.options import parse_seconds


def add_parser(sub: Any) -> None:
    p = sub.add_parser("xdp-stats", help="count packets and bytes on an interface with XDP",
                       description="Attaches a counter that never drops a packet (XDP_PASS) and shows "
                                   "packets and bytes per second by IPv4/IPv6/ARP/other and by TCP/UDP/"
                                   "ICMP/other, counted per CPU and summed. Detaches on exit.")
    p.add_argument("--iface", required=True, help="network interface")
    p.add_argument("--interval", type=parse_seconds, default=1.0, help="seconds between rows (default 1)")
    p.add_argument("--mode", choices=("auto", "native", "generic"), default="auto",
                   help="XDP mode (auto: native where the driver has it)")
    p.add_argument("--duration", type=parse_seconds, help="stop after this long")
    p.add_argument("--netns", help="network namespace to enter first (name under /run/netns, or a path)")
    p.add_argument("--json", action="store_true", help="one JSON object per interval")
    p.set_defaults(func=run)


def _rate(pps: float) -> str:
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if pps >= div:
            return f"{pps / div:.2f}{unit}"
    return f"{pps:.0f}"


def _table(rep: dict[str, Any], desc: str) -> Any:
    from rich.table import Table

    tot = rep["total"]
    t = Table(title=f"xdp-stats {desc}: {_rate(rep['pps'])} pkt/s, {_rate(rep['bps'])}bit/s",
              caption=f"pkt/s and bit/s: over the last {rep['interval_s']:g} s; packets and bytes: totals "
                      f"since attach ({tot['seconds']:.0f} s)")
    for col in ("class", "pkt/s", "bit/s", "packets (total)", "bytes (total)"):
        t.add_column(col, justify="right" if col != "class" else "left")
    rows = [(n, v, tot["l3"][n]) for n, v in rep["l3"].items()]
    rows += [("  " + n, v, tot["l4"][n]) for n, v in rep["l4"].items()]
    for name, v, total in rows:
        t.add_row(name, _rate(v["pps"]), _rate(v["bps"]), str(total["packets"]), str(total["bytes"]))
    t.add_row("all", _rate(rep["pps"]), _rate(rep["bps"]), str(tot["packets"]), str(tot["bytes"]), style="bold")
    return t


def run(args: argparse.Namespace) -> int:
    from bpfwatch.cli.prog import _Stop
    from bpfwatch.xdp_stats import XdpCounter, enter_netns, report

    if args.netns:
        enter_netns(args.netns)
    with XdpCounter(args.iface, args.mode) as counter, _Stop() as stop:
        start = prev = counter.read()
        deadline = time.monotonic() + args.duration if args.duration else None
        live = None
        if not args.json:
            from rich.console import Console
            from rich.live import Live

            live = Live(console=Console(), auto_refresh=False)
            live.start()
        else:
            sys.stderr.write(f"bpfwatch: counting on {counter.description}\n")
        rep = None
        try:
            while True:
                wait = args.interval
                if deadline is not None:
                    wait = min(wait, max(deadline - time.monotonic(), 0))
                stopped = stop.event.wait(wait)
                cur = counter.read()
                rep = report(args.iface, prev, cur, start)
                if args.json:
                    sys.stdout.buffer.write(orjson.dumps(rep, option=orjson.OPT_APPEND_NEWLINE))
                    sys.stdout.flush()
                elif live is not None:
                    live.update(_table(rep, counter.description), refresh=True)
                prev = cur
                if stopped or (deadline is not None and time.monotonic() >= deadline):
                    break
        finally:
            if live is not None:
                live.stop()
    if rep is not None and not args.json:
        print(f"detached from {args.iface}: {rep['total']['packets']} packets, {rep['total']['bytes']} bytes")
    return 0
