"""`bpfwatch trace`: live events in the terminal, or JSON lines."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import os
import signal
import sys
import time
from typing import Any

from bpfwatch.cli.options import parse_pid, parse_port, parse_seconds, parse_size
from bpfwatch.cli.status import StatusLine, count_text
from bpfwatch.errors import BpfwatchError
from bpfwatch.events.types import EVENT_TYPES
from bpfwatch.filters import parse_assignments
from bpfwatch.monitor import Monitor
from bpfwatch.pipeline.gc_tuning import tune_for_streaming
from bpfwatch.pipeline.sink import JsonLinesSink, TableSink, discard_stdout, open_file, open_output
from bpfwatch.security.rules import load_rules
from bpfwatch.sensors.base import DEFAULT_RING_SIZE


def add_parser(sub: Any) -> None:
    p = sub.add_parser("trace", help="stream live events",
                       description="Stream events from the kernel. Event types: "
                       + ", ".join(EVENT_TYPES) + " (globs such as 'process.*' work).")
    p.add_argument("types", nargs="*", metavar="TYPE", help="event types to show (default: all)")
    p.add_argument("-t", "--type", dest="type_opt", action="append", default=[], metavar="TYPE",
                   help="event types, comma-separated; repeatable")
    p.add_argument("-p", "--pid", type=parse_pid, action="append", metavar="PID",
                   help="only these processes (repeatable)")
    p.add_argument("-f", "--follow", type=parse_pid, action="append", metavar="PID",
                   help="these processes and all their descendants (tracked in the kernel); tracing ends when "
                   "they have all exited")
    p.add_argument("-c", "--comm", action="append", metavar="NAME",
                   help="process name: exact, glob ('py*') or regex ('re:^py')")
    p.add_argument("-u", "--uid", action="append", metavar="UID",
                   help="user id or name (repeatable)")
    p.add_argument("--allow", action="append", default=[], metavar="KEY=VALUE[,VALUE]",
                   help="allow only events matching (repeatable; keys in docs/filters.md)")
    p.add_argument("--deny", action="append", default=[], metavar="KEY=VALUE[,VALUE]",
                   help="drop events matching (repeatable; deny wins over allow)")
    p.add_argument("--dns-port", type=parse_port, default=53, metavar="PORT", help="the DNS server port (default 53)")
    p.add_argument("--udp-idle", type=parse_seconds, default=30.0, metavar="SECONDS",
                   help="a UDP flow ends after this long without a datagram (default 30)")
    p.add_argument("--path", action="append", metavar="PREFIX",
                   help="file events only under this absolute path prefix (repeatable, in the kernel)")
    p.add_argument("--failed-only", action="store_true", help="file events only for calls that failed")
    p.add_argument("--rules", metavar="FILE", help="security rules (TOML, docs/security.md) for security.* events")
    p.add_argument("-d", "--duration", type=parse_seconds, metavar="SECONDS", help="stop after this long")
    p.add_argument("--format", choices=["table", "json"],
                   help="table (default on a terminal) or json lines (default otherwise)")
    p.add_argument("-o", "--output", metavar="FILE", help="write events to FILE (appends)")
    p.add_argument("-w", "--wide", action="store_true",
                   help="table: every column and all of DETAILS, however wide the terminal (a terminal's "
                   "table otherwise fits its width, cutting DETAILS with an ellipsis)")
    p.add_argument("--threads", action="store_true", help="also report thread creation and exit")
    p.add_argument("--redact", action="store_true",
                   help="replace secrets in argv (passwords, tokens, credentials in URLs) as the agent does")
    p.add_argument("--exit-with-parent", action="store_true",
                   help="stop (cleanly) when the process that started bpfwatch dies")
    p.add_argument("--snapshot", action="store_true",
                   help="first report the processes already running (source: procfs)")
    p.add_argument("--ring-size", type=parse_size, default=DEFAULT_RING_SIZE, metavar="SIZE",
                   help="ring buffer size, a power of two (default 16MB)")
    p.add_argument("--wakeup-bytes", type=parse_size, default=0, metavar="SIZE",
                   help="wake the reader once per this much queued, not per record (lower CPU)")
    p.add_argument("--max-delay", type=parse_seconds, default=0.05, metavar="SECONDS",
                   help="events wait this long to leave in timestamp order; also the longest an event "
                   "waits in the ring with --wakeup-bytes (default 0.05)")
    p.set_defaults(func=run)


PR_SET_PDEATHSIG = 1


def exit_with_parent(monitor: Monitor) -> None:
    """SIGTERM (our clean stop) when the parent dies; checks for a parent
    that died before the request was in place."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise BpfwatchError(f"prctl(PR_SET_PDEATHSIG): {os.strerror(ctypes.get_errno())}")
    if os.getppid() != parent or parent == 1:
        monitor.stop()


def run(args: argparse.Namespace) -> int:
    types = list(args.types) + list(args.type_opt)
    monitor = Monitor(
        types=types or None, pid=args.pid, follow=args.follow, comm=args.comm, uid=args.uid,
        threads=args.threads, snapshot=args.snapshot, ring_size=args.ring_size,
        wakeup_bytes=args.wakeup_bytes, max_delay=args.max_delay, duration=args.duration,
        paths=args.path, failed_only=args.failed_only, dns_port=args.dns_port, udp_idle=args.udp_idle,
        allow=parse_assignments(args.allow, "allow"), deny=parse_assignments(args.deny, "deny"),
        include_self=False, rules=load_rules(args.rules) if args.rules else None,
    )
    if args.rules and not any(t.startswith("security.") for t in monitor.types):
        sys.stderr.write(f"bpfwatch: warning: --rules {args.rules} has no effect: its rules make security.* "
                         "events, which this trace does not include (add -t security)\n")
    fmt = args.format or ("table" if args.output is None and sys.stdout.isatty() else "json")
    to_file = args.output not in (None, "-")
    if fmt == "json":
        sink: JsonLinesSink | TableSink = JsonLinesSink(open_output(args.output))
    else:
        sink = TableSink(open_file(args.output, "a")) if to_file else TableSink.for_stream(sys.stdout, args.wide)
    writing, signalled, nonblocking = [False], [False], [False]

    def blocking_again() -> None:
        if nonblocking[0]:
            nonblocking[0] = False
            with contextlib.suppress(OSError):
                os.set_blocking(sys.stdout.fileno(), True)

    def on_signal(signum: int, _frame: Any) -> None:
        monitor.stop()
        signalled[0] = True
        if writing[0]:
            # blocked writing to a reader that stopped reading: give up the write
            raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    if args.exit_with_parent:
        exit_with_parent(monitor)
    monitor.start()
    tune_for_streaming()
    sys.stderr.write(f"bpfwatch: ready, tracing {', '.join(sorted(s.name for s in monitor.sensors))}\n")
    sys.stderr.flush()
    status = 0

    redactor = None
    if args.redact:
        from bpfwatch.agent.redact import Redactor  # only when asked: it brings the agent's config schema

        redactor = Redactor()

    def emit(events: list[dict[str, Any]]) -> None:
        if redactor is not None:
            redactor(events)
        writing[0] = True
        try:
            sink.write(events)
        finally:
            writing[0] = False

    status_line = StatusLine(sys.stderr) if to_file else None
    if status_line is not None:
        status_line.start(f"bpfwatch trace: ready, writing {args.output}")
    t0, last = time.monotonic(), [time.monotonic(), 0]

    def show_status() -> None:
        if status_line is None or not status_line.due():
            return
        now = time.monotonic()
        rate = (sink.count - last[1]) / max(now - last[0], 1e-3)
        last[0], last[1] = now, sink.count
        lost = monitor.lost_total
        status_line.show(f"bpfwatch trace  {now - t0:6.1f}s  {sink.count} events written  {count_text(rate)}/s  "
                         f"{lost} lost  (Ctrl-C stops)  to {args.output}")

    try:
        while not monitor.finished:
            emit(monitor.poll())
            show_status()
        if signalled[0] and not to_file:
            # stopped by a signal: the last events go out if the reader takes
            # them, but a reader that stopped reading must not hold the exit
            # (the flag is put back before exit: the pipe may be shared)
            os.set_blocking(sys.stdout.fileno(), False)
            nonblocking[0] = True
        emit(monitor.poll(0))
    except KeyboardInterrupt:
        status = 130
        if not to_file:
            discard_stdout()
    except OSError as e:
        if to_file or e.errno not in (errno.EPIPE, errno.EAGAIN):
            raise BpfwatchError(f"cannot write {args.output if to_file else 'to stdout'}: {e.strerror}; "
                                f"stopped after {sink.count} events") from None
        discard_stdout()  # the reader went away (`| head`), or stopped reading after our stop
    finally:
        if status_line is not None:
            status_line.close()
        monitor.close()
        try:
            sink.close()
            if to_file:
                sink.stream.close()
        except BlockingIOError:  # the reader stopped reading: what is left is dropped
            discard_stdout()
        except OSError:
            pass  # said above; the events written so far are in place
        blocking_again()
        lost, late = monitor.lost_total, monitor.late_events
        sys.stderr.write(("bpfwatch: the followed processes have all exited\n" if monitor.tree_gone else "")
                         + f"bpfwatch: {monitor.events_seen} events, {lost} lost"
                         + (" (raise --ring-size or narrow the filters)" if lost else "")
                         + (f", {late} out of order (later than --max-delay)" if late else "") + "\n")
    return status
