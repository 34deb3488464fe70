"""`bpfwatch completion bash|zsh`: a shell completion script generated from
the parser (sub-commands, options, option values, event types).

    source <(bpfwatch completion bash)      # or put it in ~/.bashrc
    source <(bpfwatch completion zsh)       # zsh, through bashcompinit
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from bpfwatch.cli.parser_walk import Command, every, walk


def add_parser(sub: Any) -> None:
    p = sub.add_parser("completion", help="print a shell completion script (bash or zsh)",
                       description="Print a completion script for bash or zsh, generated from bpfwatch's own "
                       "parser. Load it with: source <(bpfwatch completion bash), or add that line to your "
                       "shell's start-up file.")
    p.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete in")
    p.set_defaults(func=run)


def _words(words: list[str]) -> str:
    return shlex.quote(" ".join(words))


def bash_script(root: Command) -> str:
    from bpfwatch.events.types import EVENT_TYPES

    cmds = every(root)
    paths = "|" + "|".join(" ".join(c.path) for c in cmds[1:]) + "|"
    value_opts = "|" + "|".join(f"{' '.join(c.path)} {f}" for c in cmds for o in c.options if o.takes_value
                                for f in o.flags) + "|"
    values, words = [], []
    types = [*sorted(EVENT_TYPES), "process", "file", "network", "dns", "security", "all"]
    for c in cmds:
        key = " ".join(c.path)
        for o in c.options:
            if not o.takes_value:
                continue
            pattern = "|".join(f'"{key}|{f}"' for f in o.flags)
            if o.choices:
                values.append(f"        {pattern}) COMPREPLY=($(compgen -W {_words(o.choices)} -- \"$cur\")); return;;")
            elif o.files:
                values.append(f'        {pattern}) COMPREPLY=($(compgen -f -- "$cur")); return;;')
            elif "TYPE" in o.metavar:
                values.append(f"        {pattern}) COMPREPLY=($(compgen -W {_words(types)} -- \"$cur\")); return;;")
            else:
                values.append(f"        {pattern}) COMPREPLY=(); return;;")
        offered = [s.path[-1] for s in c.subcommands] + [f for o in c.options for f in o.flags]
        for pos in c.positionals:
            offered += pos.choices or (types if "TYPE" in pos.metavar else [])
        files = any(p.files for p in c.positionals) or (c.path == ["run"])
        words.append(f'        "{key}") words={_words(offered)}; files={int(files)};;')
    return f"""# bpfwatch completion for bash, generated from its parser ('bpfwatch completion bash')
_bpfwatch() {{
    local cur prev path word i words files skip
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    path="" skip=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        if [[ $word == -- ]]; then  # run -- CMD: the command's own words
            COMPREPLY=($(compgen -c -- "$cur")); [[ $((i + 1)) -lt $COMP_CWORD ]] && COMPREPLY=($(compgen -f -- "$cur"))
            return
        fi
        if ((skip)); then skip=0; continue; fi
        if [[ {paths!r} == *"|${{path:+$path }}$word|"* ]]; then
            path="${{path:+$path }}$word"
        elif [[ {value_opts!r} == *"|$path $word|"* ]]; then
            skip=1
        fi
    done
    case "$path|$prev" in
{chr(10).join(values)}
    esac
    words="" files=0
    case "$path" in
{chr(10).join(words)}
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
    if ((files)) && [[ $cur != -* ]]; then COMPREPLY+=($(compgen -f -- "$cur")); fi
}}
complete -o filenames -F _bpfwatch bpfwatch
"""


def zsh_script(root: Command) -> str:
    return ("#compdef bpfwatch\n# bpfwatch completion for zsh ('bpfwatch completion zsh'), through bashcompinit\n"
            "autoload -U +X bashcompinit && bashcompinit\n" + bash_script(root))


def run(args: argparse.Namespace) -> int:
    from bpfwatch.cli.main import build_parser

    root = walk(build_parser())
    sys.stdout.write(bash_script(root) if args.shell == "bash" else zsh_script(root))
    return 0
