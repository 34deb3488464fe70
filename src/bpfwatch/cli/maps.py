"""`bpfwatch map`: list, show, dump, get and set any BPF map."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import orjson

from bpfwatch.cli.options import int_in, print_table


def add_parser(sub: Any) -> None:
    p = sub.add_parser("map", help="list, show, dump, get and set BPF maps",
                       description="Maps by id, id:N, name:NAME or pin path. Keys and values are "
                                   "decoded with the map's BTF (structs, arrays, per-CPU values per CPU "
                                   "and summed), raw hex otherwise. KEY/VALUE: JSON shaped like the dump, "
                                   "an integer, or hex:01 00 ...")
    ms = p.add_subparsers(dest="map_command", metavar="ACTION", parser_class=type(p))
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    ls = ms.add_parser("list", help="every BPF map on the host")
    ls.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    ls.add_argument("--owned", action="store_true", help="only maps bpfwatch owns")
    ls.add_argument("-w", "--wide", action="store_true", help="every column, however narrow the terminal")
    ls.set_defaults(func=cmd_list)
    sh = ms.add_parser("show", help="one map's metadata")
    sh.add_argument("map", help="id, id:N, name:NAME or pin path")
    sh.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    sh.set_defaults(func=cmd_show)
    du = ms.add_parser("dump", help="every entry")
    du.add_argument("map", help="id, id:N, name:NAME or pin path")
    du.add_argument("--limit", type=int_in(0, 1 << 30), default=0, help="decode at most N entries")
    du.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    du.set_defaults(func=cmd_dump)
    g = ms.add_parser("get", help="one entry")
    g.add_argument("map", help="id, id:N, name:NAME or pin path")
    g.add_argument("key", help="the key: JSON, an integer, or hex:01 00 00 00")
    g.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    g.set_defaults(func=cmd_get)
    s = ms.add_parser("set", help="create or update an entry (per-CPU maps: every CPU gets VALUE)")
    s.add_argument("map", help="id, id:N, name:NAME or pin path")
    s.add_argument("key", help="the key: JSON, an integer, or hex:01 00 00 00")
    s.add_argument("value", help="the value: JSON, an integer, or hex:01 00 00 00")
    s.add_argument("--flags", choices=("any", "noexist", "exist"), default="any",
                   help="any (default), noexist (only a new key) or exist (only an existing key)")
    s.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    s.set_defaults(func=cmd_set)


def _out(doc: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE))
    else:
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    sys.stdout.flush()


def _open(ref: str) -> Any:
    from bpfwatch.programs.inventory import resolve
    from bpfwatch.programs.maps import MapHandle

    return MapHandle(resolve("map", ref))


def cmd_list(args: argparse.Namespace) -> int:
    from bpfwatch.programs import inventory

    recs = inventory.maps()
    if args.owned:
        recs = [r for r in recs if r.owned]
    if args.json:
        _out({"maps": [r.as_dict() for r in recs]}, True)
        return 0
    columns = [("id", "fixed"), ("type", "fixed"), ("name", "fixed"), ("key", "extra"), ("value", "extra"),
               ("entries", "fixed"), ("memlock", "fixed"), ("btf", "extra"), ("programs", "extra"), ("owner", "flex")]
    rows = []
    for r in recs:
        who = ", ".join(f"{c}[{p}]" for p, c in r.pids[:2]) or ("pinned" if r.pins else "")
        rows.append([str(r.id), r.type, r.name, f"{r.key_size} B", f"{r.value_size} B", str(r.max_entries),
                     f"{r.memlock // 1024} KiB", str(r.btf_id or "-"), ",".join(map(str, r.prog_ids)) or "-",
                     " ".join(x for x in ("bpfwatch" if r.owned else "", who) if x)])
    print_table(f"BPF maps ({len(recs)})", columns, rows, args.wide)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from bpfwatch.programs import inventory

    fd = inventory.resolve("map", args.map)
    try:
        rec = inventory.map_record(fd, inventory.Holders.scan())
    finally:
        os.close(fd)
    rec.prog_ids = inventory.map_users().get(rec.id, [])  # as `map list` shows them
    doc = rec.as_dict()
    if args.json:
        _out(doc, True)
        return 0
    width = max(len(k) for k in doc)
    for key, value in doc.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        print(f"{key:<{width}}  {'-' if shown in ('', None, []) else shown}")
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    with _open(args.map) as m:
        entries, total = m.dump(args.limit)
        if args.json:
            _out({"id": m.info.id, "name": m.name, "btf": m.btf is not None, "count": total,
                  "shown": len(entries), "entries": entries}, True)
            return 0
        for e in entries:
            print(f"{_fmt(e['key'])}: {_fmt(e['value'])}")
        more = f", {total - len(entries)} not shown" if total > len(entries) else ""
        print(f"{total} entries{more}" + ("" if m.btf else " (no BTF: raw hex)"))
    return 0


def _fmt(v: Any) -> str:
    """Decoded keys and values: strings (hex without BTF) as they are, the rest as JSON."""
    return v if isinstance(v, str) else orjson.dumps(v).decode()


def cmd_get(args: argparse.Namespace) -> int:
    with _open(args.map) as m:
        _out(m.get(args.key), args.json)
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    with _open(args.map) as m:
        _out(m.set(args.key, args.value, args.flags), args.json)
    return 0
