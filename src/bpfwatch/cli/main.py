"""`bpfwatch` entry point: sub-commands, and one-line errors for every failure."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from bpfwatch import __version__
from bpfwatch.errors import BpfwatchError, one_line


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"bpfwatch: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


# sub-command -> the cli module that defines it, in help order
COMMANDS = {"trace": "trace", "top": "top", "run": "run", "report": "report", "doctor": "doctor", "agent": "agent",
            "config": "agent", "capture": "capture", "prog": "prog", "map": "maps", "xdp-stats": "xdp",
            "diagnose": "diagnose", "capabilities": "diagnose", "fleet": "fleet", "mcp": "mcp",
            "completion": "completion"}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """All sub-commands, or only the one being run: each cli module imports
    what its command needs (numpy, matplotlib, ...), which costs start-up time."""
    parser = _Parser(prog="bpfwatch", description="What processes really do, seen from the kernel (eBPF).")
    parser.add_argument("--version", action="version", version=f"bpfwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    modules = [COMMANDS[only]] if only in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for name in modules:
        importlib.import_module(f"bpfwatch.cli.{name}").add_parser(sub)
    return parser


_LOADING = frozenset(("trace", "run", "agent", "top"))  # commands whose sensors read the kernel's BTF first


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in args_list if not a.startswith("-")), None)
    if first in _LOADING:
        from bpfwatch import libbpf

        libbpf.prefetch_vmlinux_btf()  # on the other CPU while the sensors' modules import
    parser = build_parser(first)
    args = parser.parse_args(args_list)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BpfwatchError as e:
        sys.stderr.write(f"bpfwatch: {one_line(str(e))}\n")
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as e:
        # a file or device failed us (full disk, permissions): say which, in one line
        where = f"{e.filename}: " if e.filename else ""
        sys.stderr.write(f"bpfwatch: {where}{e.strerror or e}\n")
        return 1
    except (RecursionError, MemoryError) as e:
        sys.stderr.write(f"bpfwatch: input too large or too deeply nested ({type(e).__name__})\n")
        return 1
    except Exception as e:  # the last line of defence: a bug, said in one line
        if os.environ.get("BPFWATCH_DEBUG"):
            raise
        sys.stderr.write(f"bpfwatch: internal error (a bug, please report it): {type(e).__name__}: {e} "
                         "(BPFWATCH_DEBUG=1 shows the traceback)\n")
        return 70


if __name__ == "__main__":
    sys.exit(main())
