"""`bpfwatch run -- CMD`: exact syscall and resource profile of a process tree."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from typing import IO, Any

import orjson

from bpfwatch.cli.options import int_in, parse_pid, parse_seconds
from bpfwatch.cli.status import StatusLine, count_text
from bpfwatch.errors import BpfwatchError, UsageError
from bpfwatch.profiler.runner import Profiler, RunOptions


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run", help="profile a command and everything it starts",
        usage="bpfwatch run [OPTIONS] -- CMD [ARGS...]\n       bpfwatch run [OPTIONS] --attach PID",
        description="Run CMD and count every syscall of it and its descendants in the kernel (calls, errors, "
        "time, latency histogram), with on/off-CPU time, resources over time and a behaviour verdict. "
        "The report goes to stderr; CMD's exit status is bpfwatch's.")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD", help="the command and its arguments")
    p.add_argument("--attach", type=parse_pid, metavar="PID",
                   help="profile a running process (and the children it starts) until it exits or Ctrl-C")
    p.add_argument("-d", "--duration", type=parse_seconds, metavar="SECONDS",
                   help="stop after this long; CMD then gets SIGTERM, and SIGKILL if it lingers")
    p.add_argument("--kill-after", type=parse_seconds, metavar="SECONDS",
                   help="after the SIGTERM that ends --duration, SIGKILL this much later (default 2)")
    p.add_argument("--keep-running", action="store_true",
                   help="leave CMD running when --duration ends the profile")
    p.add_argument("--json", dest="json_path", metavar="FILE", help="write the summary document to FILE")
    p.add_argument("--timeline", metavar="FILE",
                   help="write resource samples and process lifecycle as JSON lines to FILE")
    p.add_argument("-o", "--output", metavar="FILE", help="write the text report to FILE instead of stderr")
    p.add_argument("-q", "--quiet", action="store_true", help="no text report")
    p.add_argument("--count-only", action="store_true",
                   help="count calls and errors only, without syscall times (lowest overhead)")
    p.add_argument("--top", type=int_in(1, 1_000_000), metavar="N", help="syscall rows in the table (default: all)")
    p.add_argument("--interval", type=parse_seconds, metavar="SECONDS",
                   help="fixed sampling interval (default: adaptive, 50 ms at first, 1 s after two minutes)")
    p.add_argument("--max-procs", type=int_in(1, 1 << 20), metavar="N",
                   help="processes profiled apart at one time (default: by memory; beyond, counted together)")
    p.add_argument("--no-process-samples", action="store_true",
                   help="timeline: tree samples only, no per-process lines")
    p.set_defaults(func=run)


def _open(path: str | None, mode: str) -> IO[Any] | None:
    if path is None:
        return None
    try:
        return open(path, mode)
    except OSError as e:
        raise BpfwatchError(f"cannot write {path}: {e.strerror}") from None


def run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if args.attach and command:
        raise UsageError("give either a command or --attach PID, not both")
    if not args.attach and not command:
        raise UsageError("no command given: bpfwatch run [OPTIONS] -- CMD [ARGS...]")
    if (args.keep_running or args.kill_after is not None) and (args.attach or args.duration is None):
        raise UsageError("--keep-running and --kill-after go with a command and --duration")
    if args.top is not None and args.top <= 0:
        raise UsageError("--top must be positive")
    opts = RunOptions(latency=not args.count_only, max_procs=args.max_procs, interval=args.interval,
                      duration=args.duration, keep_running=args.keep_running,
                      kill_after=2.0 if args.kill_after is None else args.kill_after,
                      timeline_path=args.timeline,
                      process_samples=not args.no_process_samples)
    json_out = _open(args.json_path, "wb")  # opened first: a bad path fails before CMD runs
    text_out = _open(args.output, "w")
    status = StatusLine(sys.stderr) if not args.quiet else None
    if status is not None and status.active:
        what = shlex.join(command) if command else f"pid {args.attach}"
        opts.on_start = lambda: status.start(f"bpfwatch run: ready, profiling {what}")
        opts.on_tick = run_status(status, "Ctrl-C ends the command and reports" if command else
                                  "Ctrl-C stops profiling and reports")
    try:
        profiler = Profiler(opts)
        doc = profiler.attach(args.attach) if args.attach else profiler.run_command(command)
        if json_out is not None:
            json_out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        if not args.quiet:
            from bpfwatch.profiler.render import render  # rich: only when there is a report to draw

            out = text_out or sys.stderr
            render(doc, out, top=args.top, color=None if text_out is None else False)
    finally:
        if status is not None:
            status.close()
        for f in (json_out, text_out):
            if f is not None:
                f.close()
    return 0 if args.attach else profiler_status(doc)


def run_status(status: StatusLine, how_to_stop: str) -> Callable[[Any], None]:
    """The profiler's per-turn callback that redraws the status line: elapsed
    time, processes, and system calls per second over the last redraw."""
    t0 = time.monotonic()
    last = [t0, 0]

    def tick(c: Any) -> None:
        if not status.due():
            return
        now = time.monotonic()
        calls = c.syscalls_so_far()
        rate = max(calls - last[1], 0) / max(now - last[0], 1e-3)
        last[0], last[1] = now, calls
        running = len(c.live())
        status.show(f"bpfwatch run  {now - t0:6.1f}s  {running} running, {len(c.procs)} processes  "
                    f"{count_text(rate)} syscalls/s  ({how_to_stop})")

    return tick


def profiler_status(doc: dict[str, Any]) -> int:
    """CMD's fate as bpfwatch's exit status: its code, or 128 + signal."""
    if doc["signal"]:
        return 128 + doc["signal"]
    if doc["exit_code"] is not None:
        return int(doc["exit_code"])
    return 0

