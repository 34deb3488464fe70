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
    p.add_argument("-v", "--verbose", action="store_true",
                   help="every check, not only the problems and a summary")
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

    console = Console(highlight=False)
    print_report(console, checks, ok, args.verbose)
    return 0 if ok else 1


_MARK = {"ok": "✓", "warn": "!", "fail": "✗", "info": "·"}


def _line(console: Any, c: Any) -> None:
    from rich.padding import Padding
    from rich.text import Text

    t = Text()
    t.append(f"{_MARK[c.status]} ", style=_STYLE[c.status])
    t.append(c.name, style="bold" if c.status in ("warn", "fail") else "")
    t.append(f": {c.detail}" if c.detail else "")
    console.print(Padding(t, (0, 0, 0, 2)))
    if c.remedy:
        console.print(Padding(Text(f"→ {c.remedy}", style="cyan"), (0, 0, 0, 6)))


def _merged(checks: list[Any]) -> list[Any]:
    """Checks that say the same of different program kinds ('the kernel
    refuses fentry programs', '... fexit programs') as one line naming them all."""
    from dataclasses import replace

    groups: dict[tuple[str, str, str], list[Any]] = {}
    for c in checks:
        prefix, _, kind = c.name.partition(" ")
        key = (prefix, c.detail.replace(f" {kind} ", " \0 ") if kind else c.detail, c.remedy)
        groups.setdefault(key if prefix == "program" else (c.name, c.detail, c.remedy), []).append(c)
    out = []
    for (_, detail, _), same in groups.items():
        if len(same) == 1:
            out.append(same[0])
            continue
        kinds = [c.name.partition(" ")[2] for c in same]
        out.append(replace(same[0], name="programs " + ", ".join(kinds), detail=detail.replace("\0", "/".join(kinds))))
    return out


def print_report(console: Any, checks: list[Any], ok: bool, verbose: bool) -> None:
    """A summary and the problems (each with its remedy); with verbose, every check."""
    by = {s: [c for c in checks if c.status == s] for s in _STYLE}
    kinds = {c.name.split(" ", 1)[1]: c.status == "ok" for c in checks if c.name.startswith("program ")}
    facts = [c.detail for c in checks if c.name in ("kernel", "libbpf") and c.status == "ok"]
    verdict = "[green]bpfwatch can run here[/]" if ok else "[bold red]bpfwatch cannot run here[/]"
    console.print(f"bpfwatch doctor: {verdict}" + (f" ({', '.join(facts)})" if facts else ""))
    console.print(f"  {len(checks)} checks: {len(by['ok'])} ok, {len(by['warn'])} warnings, "
                  f"{len(by['fail'])} failures" + ("" if verbose else " (--verbose lists every check)"))
    if kinds:
        usable = " ".join(k for k, v in kinds.items() if v) or "none"
        unusable = " ".join(k for k, v in kinds.items() if not v)
        console.print(f"  programs that load here: {usable}" + (f"; not: {unusable}" if unusable else ""))
    sensors = [c for c in checks if c.name.startswith("sensor ")]
    if sensors:
        good = [c.name.split(" ", 1)[1] for c in sensors if c.status == "ok"]
        console.print(f"  sensors that load here: {' '.join(good) or 'none'}")
    if verbose:
        for c in checks:
            _line(console, c)
    else:
        for status, title in (("fail", "failures"), ("warn", "warnings")):
            if by[status]:
                console.print(f"[{_STYLE[status]}]{title}[/]")
                for c in _merged(by[status]):
                    _line(console, c)
    if not ok:
        console.print("[bold red]fix the failures above: bpfwatch needs them[/]")
