"""The command line as data, read from the argparse parser itself: every
sub-command, its options and what their values may be. Shell completion and
the man page are generated from it, so neither can drift from the parser."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field


@dataclass
class Option:
    flags: list[str]           # ['-o', '--output']; empty for a positional
    metavar: str
    help: str
    takes_value: bool
    choices: list[str] = field(default_factory=list)
    files: bool = False        # its value is a path


@dataclass
class Command:
    path: list[str]            # ['prog', 'list']
    help: str
    description: str
    usage: str
    options: list[Option] = field(default_factory=list)
    positionals: list[Option] = field(default_factory=list)
    subcommands: list[Command] = field(default_factory=list)


PATH_WORDS = ("FILE", "DIR", "PATH", "OBJECT", "CONFIG")


def _option(a: argparse.Action) -> Option:
    metavar = a.metavar if isinstance(a.metavar, str) else (a.dest.upper() if a.nargs != 0 else "")
    takes = a.nargs != 0
    choices = [str(c) for c in a.choices] if a.choices and not isinstance(a, argparse._SubParsersAction) else []
    files = takes and (any(w in (metavar or "").upper() for w in PATH_WORDS)
                       or a.dest in ("output", "file", "directory", "object", "path", "config", "json_path",
                                     "timeline", "rules"))
    return Option(list(a.option_strings), metavar or "", (a.help or "") % {"default": a.default}
                  if a.help and "%(" in a.help else (a.help or ""), takes, choices, files)


def walk(parser: argparse.ArgumentParser, path: list[str] | None = None, help_text: str = "") -> Command:
    path = path or []
    cmd = Command(path, help_text, parser.description or "", parser.format_usage().strip().removeprefix("usage: "))
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            helps = {c.dest: c.help or "" for c in a._choices_actions}
            for name, sub in a.choices.items():
                cmd.subcommands.append(walk(sub, [*path, name], helps.get(name, "")))
        elif isinstance(a, argparse._HelpAction):
            cmd.options.append(Option(list(a.option_strings), "", "show this help and exit", False))
        elif a.option_strings:
            cmd.options.append(_option(a))
        elif a.help != argparse.SUPPRESS:
            cmd.positionals.append(_option(a))
    return cmd


def every(cmd: Command) -> list[Command]:
    """The command and all below it, depth first."""
    out = [cmd]
    for sub in cmd.subcommands:
        out.extend(every(sub))
    return out
