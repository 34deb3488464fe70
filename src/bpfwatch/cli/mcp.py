"""`bpfwatch mcp`: serve the Model Context Protocol over stdio."""

from __future__ import annotations

import argparse
from typing import Any

from bpfwatch.cli.options import int_in


def add_parser(sub: Any) -> None:
    p = sub.add_parser("mcp", help="serve the Model Context Protocol over stdio (for AI agents)",
                       description="An MCP server over stdin/stdout with the tools capabilities, doctor, trace, "
                                   "profile_command and diagnose (and fleet_hosts, fleet_diagnose with --fleet). "
                                   "Point an MCP client at 'bpfwatch mcp'.")
    p.add_argument("--state-dir", metavar="DIR", help="where diagnostic sessions are kept")
    p.add_argument("--max-duration", type=int_in(1, 86400), default=300, metavar="SECONDS",
                   help="longest trace a tool call may ask for (default 300)")
    p.add_argument("--no-commands", action="store_true",
                   help="the diagnose tool refuses requests with shell commands (they run as this user)")
    p.add_argument("--fleet", action="append", metavar="URL",
                   help="a NATS server of a bpfwatch fleet (repeatable; or $BPFWATCH_NATS_URL): adds the tools "
                        "fleet_hosts and fleet_diagnose")
    p.add_argument("--fleet-creds", default="", metavar="FILE", help="a .creds file for the fleet's NATS")
    p.add_argument("--fleet-prefix", default="bpfwatch", metavar="PREFIX", help="the fleet's subject prefix")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import signal
    import sys

    from bpfwatch.mcp_server import serve

    if sys.stdin.isatty():
        sys.stderr.write("bpfwatch mcp: waiting for an MCP client on stdin (JSON-RPC over stdio). An MCP client "
                         "starts 'bpfwatch mcp' itself; Ctrl-C quits.\n")
        sys.stderr.flush()

    def on_interrupt(_signum: int, _frame: Any) -> None:
        # the stdio transport blocks in a thread reading stdin, which no exception
        # reaches: leave at once (the kernel frees every BPF object with the process)
        sys.stderr.write("\nbpfwatch mcp: stopped\n")
        sys.stderr.flush()
        os._exit(130)

    signal.signal(signal.SIGINT, on_interrupt)

    fleet = None
    servers = args.fleet or ([os.environ["BPFWATCH_NATS_URL"]] if os.environ.get("BPFWATCH_NATS_URL") else None)
    if servers:
        from bpfwatch.fleet.connect import NatsAuth, check_prefix

        fleet = NatsAuth(servers=servers, creds=os.path.abspath(args.fleet_creds) if args.fleet_creds else "",
                         name="bpfwatch-mcp")
        fleet.validate()
        check_prefix(args.fleet_prefix)
    serve(args.state_dir or "", args.max_duration, allow_commands=not args.no_commands, fleet=fleet,
          fleet_prefix=args.fleet_prefix)
    return 0
