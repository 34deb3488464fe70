"""`bpfwatch top`: a live, full-screen view of what each process does."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from bpfwatch.cli.options import int_in, parse_pid, parse_seconds
from bpfwatch.filters import parse_assignments
from bpfwatch.top.model import GROUPS, RATE_COLUMNS

SORT_HELP = ", ".join(["pid", "comm", "execs", "opens", "read", "write", "rx", "tx", "conns", "fails", "syscalls",
                       "dns"])


def add_parser(sub: Any) -> None:
    columns = "; ".join(f"{h}: {what}" for _, h, what in RATE_COLUMNS)
    p = sub.add_parser(
        "top", help="live view of what each process does (execs, opens, I/O, network, failures)",
        description="A live, full-screen view of the host from the kernel, one row per process, command or "
        f"cgroup, with rates per second over each refresh. Columns: {columns}. Keys: q quit, up/down select, "
        "enter details (the process tree and its recent events), < > sort column, r reverse, g group by "
        "process/command/cgroup, / filter (the filter language of trace: comm=py* path=/etc !user=root), "
        "p pause. Colours follow NO_COLOR.")
    p.add_argument("-i", "--interval", type=parse_seconds, default=1.0, metavar="SECONDS",
                   help="refresh every SECONDS; rates cover the last interval (default 1)")
    p.add_argument("-g", "--group", choices=GROUPS, default="process",
                   help="one row per process (default), per command name or per cgroup")
    p.add_argument("-s", "--sort", default="opens", metavar="COLUMN",
                   help=f"sort by this column, busiest first (default opens): {SORT_HELP}")
    p.add_argument("--filter", default="", metavar="TEXT",
                   help="filter as typed after / (e.g. 'comm=python* !user=root'); applied in top")
    p.add_argument("-p", "--pid", type=parse_pid, action="append", metavar="PID",
                   help="only these processes (repeatable; in the kernel)")
    p.add_argument("-f", "--follow", type=parse_pid, action="append", metavar="PID",
                   help="these processes and all their descendants (in the kernel)")
    p.add_argument("-c", "--comm", action="append", metavar="NAME",
                   help="process name: exact, glob ('py*') or regex ('re:^py')")
    p.add_argument("-u", "--uid", action="append", metavar="UID", help="user id or name (repeatable)")
    p.add_argument("--allow", action="append", default=[], metavar="KEY=VALUE[,VALUE]",
                   help="allow only events matching (keys in docs/filters.md)")
    p.add_argument("--deny", action="append", default=[], metavar="KEY=VALUE[,VALUE]",
                   help="drop events matching (deny wins over allow)")
    p.add_argument("--syscalls", action="store_true",
                   help="count every system call per process (SYSC/s, and FAIL/s of every call); costs "
                   "about 70 ns per syscall host-wide while top runs")
    p.add_argument("--once", action="store_true",
                   help="print one snapshot after one interval and exit (no full screen)")
    p.add_argument("--json", action="store_true", help="with --once: the snapshot as one JSON object")
    p.add_argument("-n", "--limit", type=int_in(1, 100000), default=25, metavar="N",
                   help="with --once: at most N rows (default 25)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bpfwatch.errors import UsageError
    from bpfwatch.monitor import Monitor
    from bpfwatch.top.app import TYPES, Top, check_sort, parse_filter, terminal_ok

    if args.json and not args.once:
        raise UsageError("--json needs --once (the live view is for a terminal)")
    sort = check_sort(args.sort)
    parse_filter(args.filter)  # a bad filter fails before anything loads
    if not args.once:
        terminal_ok()
    monitor = Monitor(types=TYPES, pid=args.pid, follow=args.follow, comm=args.comm, uid=args.uid,
                      allow=parse_assignments(args.allow, "allow"), deny=parse_assignments(args.deny, "deny"),
                      include_self=False, syscall_counts=args.syscalls, wakeup_bytes=64 << 10, max_delay=0.1)
    top = Top(monitor, interval=args.interval, group=args.group, sort=sort, filter_text=args.filter)

    def on_stop(_signum: int, _frame: Any) -> None:
        top.stopping = True
        monitor.wake()

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_stop)
    with monitor:
        if args.once:
            import shutil

            width = shutil.get_terminal_size((200, 50)).columns if sys.stdout.isatty() else 200
            return top.once(sys.stdout.write, args.json, args.limit, width)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C leaves the screen at once
        from rich.console import Console

        return top.interactive(Console())
