"""`bpfwatch prog`: check, load, attach, pin and inspect any BPF program."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from datetime import datetime
from typing import Any

import orjson

from bpfwatch.cli.options import int_in, parse_seconds, print_table
from bpfwatch.pipeline.sink import open_file


def add_parser(sub: Any) -> None:
    p = sub.add_parser("prog", help="load, attach, pin and inspect BPF programs",
                       description="Bring your own BPF object: validate, load, attach, pin; list and "
                                   "inspect every program on the host.")
    ps = p.add_subparsers(dest="prog_command", metavar="ACTION", parser_class=type(p))
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    c = ps.add_parser("check", help="validate an object without loading it")
    c.add_argument("object", help="a compiled BPF object (.bpf.o)")
    c.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    c.set_defaults(func=cmd_check)

    ld = ps.add_parser("load", help="validate, load and attach an object",
                       description="Without --pin the programs stay loaded until Ctrl-C, SIGTERM or "
                                   "--duration, then everything is released. With --pin they are pinned "
                                   "under DIR and outlive bpfwatch.")
    ld.add_argument("object", help="a compiled BPF object (.bpf.o)")
    ld.add_argument("--attach", action="append", default=[], metavar="SPEC",
                    help="[PROG=]xdp:IF[:mode] | tc:IF[:ingress|egress] | tracepoint:CAT:NAME | "
                         "raw_tracepoint:NAME | tp_btf:NAME | fentry:FN | fexit:FN | kprobe:FN | "
                         "kretprobe:FN | uprobe:BIN:FN | uretprobe:BIN:FN | lsm:HOOK | cgroup:PATH | "
                         "socket:IF | section (repeatable)")
    ld.add_argument("--pin", metavar="DIR", help="pin programs, maps and links under DIR (on bpffs)")
    ld.add_argument("--duration", type=parse_seconds, help="unload after this long (default: until Ctrl-C)")
    ld.add_argument("--verifier-log", metavar="FILE", help="write the full verifier log here on rejection")
    ld.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    ld.set_defaults(func=cmd_load)

    ls = ps.add_parser("list", help="every BPF program on the host")
    ls.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    ls.add_argument("--owned", action="store_true", help="only programs bpfwatch owns")
    ls.add_argument("-w", "--wide", action="store_true", help="every column, however narrow the terminal")
    ls.set_defaults(func=cmd_list)

    sh = ps.add_parser("show", help="one program in detail")
    sh.add_argument("prog", help="id, id:N, name:NAME or pin path")
    sh.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    sh.set_defaults(func=cmd_show)

    un = ps.add_parser("unload", help="detach, unpin and unload a program (or a --pin directory)")
    un.add_argument("prog", help="id, name:NAME, pin path, or a directory made by load --pin")
    un.add_argument("--force", action="store_true", help="also programs bpfwatch did not load")
    un.set_defaults(func=cmd_unload)

    pn = ps.add_parser("pin", help="pin a program in bpffs")
    pn.add_argument("prog", help="id, id:N, name:NAME or pin path")
    pn.add_argument("path", help="where to pin it, under the BPF filesystem (/sys/fs/bpf)")
    pn.set_defaults(func=cmd_pin)

    up = ps.add_parser("unpin", help="remove a pin (or a directory of pins)")
    up.add_argument("path", help="a pin under the BPF filesystem")
    up.set_defaults(func=cmd_unpin)

    st = ps.add_parser("stats", help="run count and run time of a program")
    st.add_argument("prog", help="id, id:N, name:NAME or pin path")
    st.add_argument("--watch", action="store_true", help="sample every --interval until Ctrl-C")
    st.add_argument("--interval", type=parse_seconds, default=1.0, metavar="SECONDS",
                    help="seconds between rows with --watch (default 1)")
    st.add_argument("--count", type=int_in(0, 1 << 30), default=0, help="stop after this many samples")
    st.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    st.set_defaults(func=cmd_stats)


def _out(doc: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE))
    sys.stdout.flush()


def _err(msg: str) -> None:
    sys.stderr.write(f"bpfwatch: {msg}\n")


def cmd_check(args: argparse.Namespace) -> int:
    from bpfwatch.programs import validate

    rep = validate(args.object)
    if args.json:
        _out({"object": args.object, "ok": rep.ok, "license": rep.license, "btf": rep.btf,
              "problems": [{"level": p.level, "message": p.message} for p in rep.problems],
              "programs": [{"name": p.name, "section": p.section, "type": p.type, "insns": p.insns}
                           for p in rep.programs],
              "maps": [{"name": m.name, "type": m.type, "key_size": m.key_size, "value_size": m.value_size,
                        "max_entries": m.max_entries} for m in rep.maps]})
        return 0 if rep.ok else 2
    name = os.path.basename(args.object)
    for p in rep.problems:
        sys.stderr.write(f"{name}: {p}\n")
    for p in rep.programs:
        print(f"program {p.name}: {p.type}, section {p.section}, {p.insns} instructions")
    for m in rep.maps:
        print(f"map {m.name}: {m.type}, key {m.key_size} B, value {m.value_size} B, {m.max_entries} entries")
    if rep.ok:
        print(f"{name}: ok (license {rep.license or 'none'}, BTF {'yes' if rep.btf else 'no'})")
    return 0 if rep.ok else 2


class _Stop:
    """Set by SIGINT/SIGTERM so the main loop can release everything."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, lambda *_: self.event.set())
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def cmd_load(args: argparse.Namespace) -> int:
    from bpfwatch.programs import ValidationError, VerifierError, load

    try:
        obj = load(args.object, args.attach, pin=args.pin)
    except ValidationError as e:
        name = os.path.basename(args.object)
        for p in e.problems:
            sys.stderr.write(f"{name}: {p}\n")
        return 2
    except VerifierError as e:
        _err(str(e))
        for line in e.trimmed:
            sys.stderr.write(f"  | {line}\n")
        if args.verifier_log:
            with open_file(args.verifier_log, "w") as f:
                f.write(e.log)
            sys.stderr.write(f"  full verifier log: {args.verifier_log}\n")
        return 2
    with obj:
        ids = obj.program_ids()
        doc = {"object": args.object, "programs": ids,
               "attachments": [{"program": a.program, "spec": str(a.spec), "target": a.description,
                                "link_id": a.link_id()} for a in obj.attachments],
               "pinned": obj.pin_dir or None}
        if args.json:
            _out(doc)
        else:
            for name, pid in ids.items():
                print(f"loaded {name} (id {pid})")
            for a in doc["attachments"]:
                print(f"attached {a['program']} to {a['target']}" + (f" (link {a['link_id']})" if a["link_id"]
                                                                       else ""))
        if args.pin:
            if not args.json:
                print(f"pinned under {obj.pin_dir}: they stay loaded after bpfwatch exits "
                      f"('bpfwatch prog unload {obj.pin_dir}' removes them)")
            return 0
        if not args.json:
            print("loaded until Ctrl-C" + (f" or {args.duration:g} s" if args.duration else ""), flush=True)
        with _Stop() as stop:
            stop.event.wait(args.duration if args.duration else None)
    if not args.json:
        print("detached and unloaded")
    return 0


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _runs(rec: Any) -> str:
    if rec.run_cnt is None:
        return "-"
    avg = rec.run_time_ns / rec.run_cnt if rec.run_cnt else 0
    return f"{rec.run_cnt} / {rec.run_time_ns / 1e6:.1f} ms ({avg:.0f} ns)"


def cmd_list(args: argparse.Namespace) -> int:
    from bpfwatch import libbpf as L
    from bpfwatch.programs import inventory

    recs = inventory.programs()
    if args.owned:
        recs = [r for r in recs if r.owned]
    if args.json:
        _out({"bpf_stats": L.stats_enabled(), "programs": [r.as_dict() for r in recs]})
        return 0
    stats = L.stats_enabled()
    columns = [("id", "fixed"), ("type", "fixed"), ("name", "fixed"), ("tag", "extra"), ("loaded", "extra"),
               ("memlock", "fixed"), ("runs / time (avg)", "fixed" if stats else "extra"), ("attached to", "flex"),
               ("owner", "flex")]
    rows = []
    for r in recs:
        owner = "bpfwatch" if r.owned else ""
        who = ", ".join(f"{c}[{p}]" for p, c in r.pids[:2]) or ("pinned" if r.pins else "")
        rows.append([str(r.id), r.type, r.name, r.tag, _when(r.loaded_at), f"{r.memlock // 1024} KiB",
                     _runs(r), "\n".join(r.attached) or "-", " ".join(x for x in (owner, who) if x)])
    print_table(f"BPF programs ({len(recs)}; run stats {'on' if stats else 'off'})", columns, rows, args.wide)
    if not L.stats_enabled():
        print("run counts need BPF statistics: sysctl -w kernel.bpf_stats_enabled=1\n"
              "  (or 'bpfwatch prog stats ID --watch', which turns them on while it watches)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from bpfwatch import libbpf as L
    from bpfwatch.errors import BpfError
    from bpfwatch.programs import inventory

    prog_id = inventory.resolve_id("prog", args.prog)
    holders = inventory.Holders.scan()
    rec = inventory.prog_record(prog_id, holders, inventory.links(holders), inventory.netlink_xdp())
    maps = []
    for mid in rec.map_ids:
        try:
            mfd = L.fd_by_id("map", mid)
        except BpfError:  # gone meanwhile
            continue
        try:
            m = inventory.map_record(mfd)
        finally:
            os.close(mfd)
        maps.append({"id": m.id, "name": m.name, "type": m.type})
    doc = rec.as_dict() | {"maps": maps, "loaded_at_iso": _when(rec.loaded_at)}
    if args.json:
        _out(doc)
        return 0
    print(f"{rec.id}: {rec.type}  name {rec.name}  tag {rec.tag}  gpl {'yes' if rec.gpl else 'no'}")
    print(f"  loaded at {_when(rec.loaded_at)} by uid {rec.uid}, memlock {rec.memlock} B")
    print(f"  xlated {rec.xlated_bytes} B, jited {rec.jited_bytes} B, verified insns {rec.verified_insns}, "
          f"btf id {rec.btf_id or '-'}")
    print(f"  runs: {_runs(rec)}")
    print(f"  attached to: {', '.join(rec.attached) or 'nothing'}")
    map_text = ", ".join(f"{m['id']} {m['name']} ({m['type']})" for m in maps) or "none"
    print(f"  maps: {map_text}")
    print(f"  held by: {', '.join(f'{c}[{p}]' for p, c in rec.pids) or 'no process'}; "
          f"pinned at: {', '.join(rec.pins) or 'nowhere'}")
    print(f"  owner: {'bpfwatch' if rec.owned else 'not bpfwatch'}")
    return 0


def cmd_unload(args: argparse.Namespace) -> int:
    from bpfwatch.programs import manage

    for line in manage.unload(args.prog, force=args.force):
        print(line)
    return 0


def cmd_pin(args: argparse.Namespace) -> int:
    from bpfwatch.programs import manage

    print(f"pinned at {manage.pin(args.prog, args.path)}")
    return 0


def cmd_unpin(args: argparse.Namespace) -> int:
    from bpfwatch.programs import manage

    for path in manage.unpin(args.path):
        print(f"unpinned {path}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from bpfwatch import libbpf as L
    from bpfwatch.programs import inventory, manage

    fd = inventory.resolve("prog", args.prog)
    try:
        info = L.prog_info_full(fd, False)[0]
    finally:
        os.close(fd)
    prog_id, name = info.id, info.name.decode(errors="replace")
    if not args.watch:
        cnt, ns = manage.run_stats(prog_id)
        on = L.stats_enabled()
        doc = {"id": prog_id, "name": name, "bpf_stats": on, "run_cnt": cnt, "run_time_ns": ns,
               "avg_ns": round(ns / cnt, 1) if cnt else None}
        if args.json:
            _out(doc)
        else:
            print(f"{prog_id} {name}: {cnt} runs, {ns / 1e6:.3f} ms"
                  + (f", {ns / cnt:.0f} ns/run" if cnt else ""))
            if not on:
                print("run statistics are off (kernel.bpf_stats_enabled=0): counts do not move; "
                      "use --watch to turn them on while watching")
        return 0
    stats_fd = -1
    if not L.stats_enabled():
        stats_fd = L.enable_stats()
        sys.stderr.write("bpfwatch: kernel BPF run statistics are on while this watches\n")
    try:
        prev = (time.monotonic(), *manage.run_stats(prog_id))
        n = 0
        with _Stop() as stop:
            while not stop.event.wait(args.interval):
                now = (time.monotonic(), *manage.run_stats(prog_id))
                dt, dc, dn = now[0] - prev[0], now[1] - prev[1], now[2] - prev[2]
                doc = {"ts": time.time(), "id": prog_id, "name": name, "runs_per_s": round(dc / dt, 1),
                       "avg_ns": round(dn / dc, 1) if dc else None, "cpu_pct": round(100 * dn / 1e9 / dt, 3),
                       "run_cnt": now[1], "run_time_ns": now[2]}
                if args.json:
                    _out(doc)
                else:
                    avg = f"{dn / dc:.0f} ns/run" if dc else "-"
                    print(f"{_when(doc['ts'])}  {prog_id} {name}: {dc / dt:,.0f} runs/s  {avg}  "
                          f"{doc['cpu_pct']:.3f}% CPU  (total {now[1]} runs)", flush=True)
                prev = now
                n += 1
                if args.count and n >= args.count:
                    break
    finally:
        if stats_fd >= 0:
            os.close(stats_fd)
    return 0
