"""`bpfwatch mcp`: serve the Model Context Protocol over stdio."""

from __future__ import annotations

import argparse
from typing import Any

from bpfwatch.cli.options import int_in


def add_parser(sub: Any) -> None:
    p = sub.add_parser("mcp", help="serve the Model Context Protocol over stdio (for AI agents)",
                       description="An MCP server over stdin/stdout with the tools capabilities, doctor, trace, "
                                   "profile_command and diagnose. Point an MCP client at 'bpfwatch mcp'.")
    p.add_argument("--state-dir", metavar="DIR", help="where diagnostic sessions are kept")
    p.add_argument("--max-duration", type=int_in(1, 86400), default=300, metavar="SECONDS",
                   help="longest trace a tool call may ask for (default 300)")
    p.add_argument("--no-commands", action="store_true",
                   help="the diagnose tool refuses requests with shell commands (they run as this user)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bpfwatch.mcp_server import serve

    serve(args.state_dir or "", args.max_duration, allow_commands=not args.no_commands)
    return 0
