"""`bpfwatch` entry point: sub-commands, and one-line errors for every failure."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from bpfwatch import __version__
from bpfwatch.errors import BpfwatchError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"bpfwatch: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from bpfwatch.cli import agent, capture, doctor, report, run, trace

    parser = _Parser(prog="bpfwatch", description="What processes really do, seen from the kernel (eBPF).")
    parser.add_argument("--version", action="version", version=f"bpfwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    trace.add_parser(sub)
    run.add_parser(sub)
    report.add_parser(sub)
    doctor.add_parser(sub)
    agent.add_parser(sub)
    capture.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BpfwatchError as e:
        sys.stderr.write(f"bpfwatch: {e}\n")
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
