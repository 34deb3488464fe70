"""The man page, bpfwatch(1), generated from the parser:

    python -m bpfwatch.cli.manpage > docs/bpfwatch.1     (make man)
    man -l docs/bpfwatch.1
"""

from __future__ import annotations

import sys

from bpfwatch import __version__
from bpfwatch.cli.parser_walk import Command, Option, every, walk


def esc(text: str) -> str:
    """Text safe in roff: backslashes and hyphens escaped, no line starting with a control character."""
    out = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in out.splitlines())


def _option(o: Option) -> list[str]:
    flags = ", ".join(f"\\fB{esc(f)}\\fR" for f in o.flags) if o.flags else f"\\fI{esc(o.metavar)}\\fR"
    if o.flags and o.takes_value:
        flags += f" \\fI{esc(o.metavar or 'VALUE')}\\fR"
    text = o.help + (f" One of: {', '.join(o.choices)}." if o.choices and o.flags else "")
    return [".TP", flags, esc(text)]


def manpage(root: Command) -> str:
    lines = [
        f'.TH BPFWATCH 1 "" "bpfwatch {__version__}" "User Commands"',
        ".SH NAME",
        "bpfwatch \\- what processes really do, seen from the kernel (eBPF)",
        ".SH SYNOPSIS",
        "\\fBbpfwatch\\fR [\\fB\\-\\-version\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        esc("bpfwatch traces execs, exits and forks, network connections and flows, file activity, DNS "
            "queries, security-relevant events and per-process syscall profiles with eBPF programs "
            "(CO-RE, loaded through libbpf). It runs as a one-shot trace, a live view (top), a profiler "
            "around a command (run), and a long-running agent. Every failure is one line on stderr "
            "with a non-zero exit status."),
        ".SH COMMANDS",
    ]
    for cmd in every(root)[1:]:
        if cmd.subcommands and not cmd.options[1:] and not cmd.positionals:
            lines += [".SS " + esc("bpfwatch " + " ".join(cmd.path)), esc(cmd.description or cmd.help)]
            continue
        lines += [".SS " + esc("bpfwatch " + " ".join(cmd.path)), esc(cmd.description or cmd.help), ".PP",
                  "Usage: " + esc(" ".join(cmd.usage.split()))]
        for o in cmd.positionals + cmd.options:
            lines += _option(o)
    lines += [
        ".SH ENVIRONMENT",
        ".TP", "\\fBNO_COLOR\\fR", esc("when set, no colours in tables, top and reports."),
        ".TP", "\\fBBPFWATCH_DEBUG\\fR", esc("when set, an internal error shows its traceback."),
        ".SH EXIT STATUS",
        esc("0 on success; 1 for a failure (said in one line on stderr); 2 for a usage error; "
            "bpfwatch run exits with the command's status (128 + signal when a signal ended it)."),
        ".SH SEE ALSO",
        esc("The documentation in docs/: cli.md, events.md, filters.md, config.md, troubleshooting.md. "
            "Shell completion: bpfwatch completion bash|zsh."),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    from bpfwatch.cli.main import build_parser

    sys.stdout.write(manpage(walk(build_parser())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
