"""`bpfwatch report FILE -o out.html|png|svg`: a profile as plots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bpfwatch.errors import UsageError
from bpfwatch.profiler.plots import FORMATS, load, write_report


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="plot a profile from 'bpfwatch run'",
                       description="Plot the timelines (CPU, memory, I/O, network) and the syscall and category "
                       "breakdowns of a profile written by 'bpfwatch run --json FILE' or '--timeline FILE'.")
    p.add_argument("file", metavar="FILE", help="summary (--json) or timeline (--timeline) of 'bpfwatch run'")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="OUT.html (page with tables), OUT.png or OUT.svg")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if Path(args.output).suffix.lower() not in FORMATS:
        raise UsageError(f"cannot write '{args.output}': the report is .html, .png or .svg")
    write_report(load(args.file), args.output)
    sys.stderr.write(f"bpfwatch: wrote {args.output}\n")
    return 0
