"""`bpfwatch diagnose` (time-limited traces + commands, as JSON) and
`bpfwatch capabilities` (what this host can trace, for people and prompts)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

import orjson

from bpfwatch.cli.options import int_in, parse_seconds
from bpfwatch.events.text import dumps


def add_parser(sub: Any) -> None:
    p = sub.add_parser("diagnose", help="run a diagnostic request (traces + commands) and answer in JSON",
                       description="Runs the traces a JSON request asks for, in parallel with its commands, "
                                   "and prints one JSON result. Sessions are kept under the state directory "
                                   "and removed after --retention. See docs/diagnose.md.")
    p.add_argument("--request", metavar="FILE", help="the request (JSON; '-' reads stdin)")
    _common(p)
    p.add_argument("--max-duration", type=int_in(1, 86400), default=300, metavar="SECONDS",
                   help="longest trace a request may ask for (default 300)")
    p.add_argument("--indent", action="store_true", help="indented JSON")
    p.add_argument("--no-commands", action="store_true", help="refuse requests that run shell commands")
    p.add_argument("--no-redact", action="store_true",
                   help="keep secrets in argv and command output (redacted by default: results go to models)")
    p.set_defaults(func=run_request)
    ds = p.add_subparsers(dest="diagnose_command", metavar="ACTION", parser_class=type(p))
    ls = ds.add_parser("list", help="stored sessions")
    _common(ls)
    ls.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    ls.set_defaults(func=run_list)
    sh = ds.add_parser("show", help="a stored session's result")
    sh.add_argument("session", help="a session id from 'diagnose list'")
    _common(sh)
    sh.set_defaults(func=run_show)
    cl = ds.add_parser("clean", help="remove expired sessions (--all: every session)")
    cl.add_argument("--all", action="store_true", help="remove every session, not only finished ones")
    _common(cl)
    cl.set_defaults(func=run_clean)

    c = sub.add_parser("capabilities", help="what this host can trace now (for people and model prompts)")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="machine-readable")
    g.add_argument("--prompt", action="store_true", help="a concise text block for a model's prompt")
    c.add_argument("--max-duration", type=int_in(1, 86400), default=300, metavar="SECONDS",
                   help="the longest a diagnosis may run (default 300)")
    c.set_defaults(func=run_capabilities)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", metavar="DIR", help="where sessions are kept (default /var/lib/bpfwatch/diagnose "
                                                      "as root, ~/.local/state/bpfwatch/diagnose otherwise)")
    p.add_argument("--retention", type=parse_seconds, default=3600.0, metavar="SECONDS",
                   help="remove sessions older than this (default 1h)")


def _settings(args: argparse.Namespace) -> Any:
    from bpfwatch.diagnose import Settings

    return Settings(args.state_dir or "", args.retention, getattr(args, "max_duration", 300),
                    not getattr(args, "no_commands", False), not getattr(args, "no_redact", False))


def _print(doc: Any, indent: bool = False) -> None:
    opt = orjson.OPT_APPEND_NEWLINE | (orjson.OPT_INDENT_2 if indent else 0)
    sys.stdout.buffer.write(dumps(doc, option=opt, default=str))
    sys.stdout.flush()


def run_request(args: argparse.Namespace) -> int:
    from bpfwatch.diagnose import RequestError, parse_text, run
    from bpfwatch.diagnose.request import MAX_REQUEST_BYTES

    if not args.request:
        sys.stderr.write("bpfwatch: diagnose needs --request FILE (or an action: list, show, clean)\n")
        return 2
    try:
        if args.request == "-":
            text = sys.stdin.buffer.read(MAX_REQUEST_BYTES + 1)
        else:
            with open(args.request, "rb") as f:
                text = f.read(MAX_REQUEST_BYTES + 1)
    except OSError as e:
        _print({"error": {"field": "--request", "message": f"cannot read {args.request}: {e.strerror}"}})
        return 2
    try:
        req = parse_text(text, args.max_duration)
        result = run(req, _settings(args))
    except RequestError as e:
        _print(e.as_json())
        return 2
    except OSError as e:  # the state directory cannot be made or written
        where = e.filename or args.state_dir or "state directory"
        _print({"error": {"field": "--state-dir", "message": f"{where}: {e.strerror or e}"}})
        return 1
    _print(result, args.indent)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from bpfwatch.diagnose import sessions

    found = sessions(_settings(args))
    if args.json:
        _print({"sessions": found})
        return 0
    for s in found:
        when = datetime.fromtimestamp(s["created_at"]).strftime("%Y-%m-%d %H:%M:%S")
        caps = ",".join(s.get("capabilities") or []) or "-"
        state = "" if s["complete"] else "  (incomplete)"
        print(f"{s['session']}  {when}  {caps}  {s.get('commands', 0)} commands{state}")
    if not found:
        print("no sessions")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from bpfwatch.diagnose import show

    _print(show(args.session, _settings(args)), True)
    return 0


def run_clean(args: argparse.Namespace) -> int:
    from bpfwatch.diagnose import clean

    removed = clean(_settings(args), everything=args.all)
    print(f"removed {len(removed)} session(s)")
    return 0


def run_capabilities(args: argparse.Namespace) -> int:
    from bpfwatch.diagnose.capabilities import probe, prompt_text

    status = probe()
    if args.json:
        _print({"capabilities": status, "max_duration_seconds": args.max_duration}, True)
    elif args.prompt:
        print(prompt_text(status, args.max_duration))
    else:
        for name, st in status.items():
            mark = "yes" if st["available"] else "no "
            print(f"{mark}  {name:15s} {st['description'] if st['available'] else st['reason']}")
    return 0
