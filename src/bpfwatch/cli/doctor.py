"""`bpfwatch doctor`: can bpfwatch run here, and what can it trace."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson


def add_parser(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check what this host can trace",
                       description="Probe the kernel and report each finding with its remedy. "
                                   "Exit status 0 when bpfwatch can run, 1 otherwise.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-probe", action="store_true", help="skip loading probe programs")
    p.add_argument("--sensors", action="store_true",
                   help="load every sensor for real: whether it loads here, its load time and verified "
                        "instructions (always on with --json)")
    p.set_defaults(func=run)


_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "info": "dim"}


def run(args: argparse.Namespace) -> int:
    from bpfwatch.doctor.report import can_run, run_checks

    checks = run_checks(probe_features=not args.no_probe, sensors=args.sensors or args.json)
    ok = can_run(checks)
    if args.json:
        doc = {"can_run": ok, "checks": [c.as_dict() for c in checks]}
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
        return 0 if ok else 1
    from rich.console import Console
    from rich.table import Table

    table = Table(title="bpfwatch doctor", show_lines=False)
    for col in ("check", "status", "detail", "remedy"):
        table.add_column(col, overflow="fold")
    for c in checks:
        table.add_row(c.name, f"[{_STYLE[c.status]}]{c.status}[/]", c.detail, c.remedy)
    console = Console()
    console.print(table)
    console.print("[green]bpfwatch can run here.[/]" if ok else
                  "[bold red]bpfwatch cannot run here: fix the failures marked essential above.[/]")
    return 0 if ok else 1
