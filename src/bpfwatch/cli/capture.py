"""`bpfwatch capture read|verify|info DIR`: what an agent captured."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
from typing import Any

from bpfwatch.capture import reader
from bpfwatch.capture.manifest import Manifest
from bpfwatch.cli.options import parse_pid
from bpfwatch.errors import UsageError
from bpfwatch.events.types import expand_types
from bpfwatch.filters import Filter, parse_assignments
from bpfwatch.pipeline.sink import JsonLinesSink, TableSink

_AGO = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_EPOCH_S = 253402300799.0  # 9999-12-31T23:59:59Z


def parse_time(text: str) -> int:
    """'2026-11-22T10:00:00Z', '2026-11-22 10:00', epoch seconds, or '10m' (ago) -> epoch ns."""
    m = _AGO.match(text.strip())
    if m:
        ago = float(m.group(1)) * _UNIT[m.group(2)]
        if not ago <= _MAX_EPOCH_S:
            raise argparse.ArgumentTypeError(f"'{text}' is too long ago")
        return time.time_ns() - int(ago * 1e9)
    try:
        epoch = float(text)
    except ValueError:
        pass
    else:
        if not 0 <= epoch <= _MAX_EPOCH_S:  # also false for nan
            raise argparse.ArgumentTypeError(f"'{text}' is not a time: epoch seconds from 0 to {_MAX_EPOCH_S:.0f}")
        return int(epoch * 1e9)
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a time (ISO 8601 such as 2026-11-22T10:00:00Z, epoch seconds, or 10m for ago)"
        ) from None
    if t.tzinfo is None:
        try:
            t = t.astimezone()  # local time, as typed
        except (OverflowError, OSError, ValueError):
            raise argparse.ArgumentTypeError(f"'{text}' is out of range") from None
    return int(t.timestamp() * 1e9)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("capture", help="read back or verify an agent's capture directory",
                       description="Capture directories hold JSON lines segments and an index.json manifest.")
    csub = p.add_subparsers(dest="capture_command", metavar="ACTION", required=True)
    r = csub.add_parser("read", help="stream events from a capture (across segments, compressed or not)")
    r.add_argument("directory", metavar="DIR", help="the capture directory (the agent's outputs.capture.directory)")
    r.add_argument("--since", type=parse_time, metavar="TIME", help="from this time (ISO 8601, epoch s, or 10m)")
    r.add_argument("--until", type=parse_time, metavar="TIME", help="up to this time")
    r.add_argument("-t", "--type", action="append", default=[], metavar="TYPE",
                   help="event types or globs, comma-separated; repeatable")
    r.add_argument("-p", "--pid", type=parse_pid, action="append", metavar="PID", help="only these processes")
    r.add_argument("-c", "--comm", action="append", metavar="NAME", help="process name: exact, glob or re:regex")
    r.add_argument("-u", "--uid", action="append", metavar="UID", help="user id or name")
    r.add_argument("--allow", action="append", default=[], metavar="KEY=VALUE[,VALUE]",
                   help="allow only events matching (keys in docs/filters.md)")
    r.add_argument("--deny", action="append", default=[], metavar="KEY=VALUE[,VALUE]", help="drop events matching")
    r.add_argument("--format", choices=["json", "table"], help="json lines (default when piped) or a table")
    r.set_defaults(func=run_read)
    v = csub.add_parser("verify", help="check every segment against its sha256 and record count")
    v.add_argument("directory", metavar="DIR", help="the capture directory to verify")
    v.set_defaults(func=run_verify)
    i = csub.add_parser("info", help="summarise a capture: segments, events, time span, size")
    i.add_argument("directory", metavar="DIR", help="the capture directory to describe")
    i.set_defaults(func=run_info)


def run_read(args: argparse.Namespace) -> int:
    allow = parse_assignments(args.allow, "allow")
    for key, values in (("pid", args.pid), ("comm", args.comm), ("uid", args.uid)):
        if values:
            allow.setdefault(key, []).extend(str(v) for v in values)
    flt = Filter(allow, parse_assignments(args.deny, "deny"))
    types = expand_types(args.type) if args.type else None
    if args.since is not None and args.until is not None and args.since > args.until:
        raise UsageError("--since is after --until")
    fmt = args.format or ("table" if sys.stdout.isatty() else "json")
    sink = JsonLinesSink(sys.stdout.buffer) if fmt == "json" else TableSink(sys.stdout)
    problems: list[reader.Problem] = []
    batch: list[dict[str, Any]] = []
    n = 0
    for ev in reader.read(args.directory, args.since, args.until, types, flt, problems):
        batch.append(ev)
        if len(batch) >= 4096:
            sink.write(batch)
            n += len(batch)
            batch = []
    sink.write(batch)
    n += len(batch)
    sink.close()
    for p in problems:
        sys.stderr.write(f"bpfwatch: {p.segment}: {p.message}\n")
    if fmt == "table" or problems:
        sys.stderr.write(f"bpfwatch: {n} events\n")
    return 1 if problems else 0


def run_verify(args: argparse.Namespace) -> int:
    total, problems = reader.verify(args.directory)
    for p in problems:
        sys.stderr.write(f"bpfwatch: {p.segment}: {p.message}\n")
    sys.stdout.write(f"{args.directory}: {total - len(problems)} of {total} segments intact\n")
    return 1 if problems else 0


def run_info(args: argparse.Namespace) -> int:
    segs = reader.segments(args.directory)
    m = Manifest.load(args.directory)
    records = sum(s.records for s in segs)
    firsts = [s.first_ts for s in segs if s.first_ts]
    lasts = [s.last_ts for s in segs if s.last_ts]

    def iso(ns: int) -> str:
        return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    sys.stdout.write(f"directory   {args.directory}\n"
                     f"segments    {len(segs)} ({sum(1 for s in segs if s.name.endswith('.open'))} open)\n"
                     f"events      {records} in closed segments\n"
                     f"on disk     {sum(s.bytes for s in segs)} bytes ({sum(s.raw_bytes for s in segs)} "
                     f"uncompressed)\n"
                     f"time span   {iso(min(firsts)) + ' to ' + iso(max(lasts)) if firsts else '-'}\n"
                     f"dropped     {m.dropped_events if m else 0} events (hold buffer overflow)\n")
    return 0
