"""Parsing of option values shared by sub-commands."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

from bpfwatch import limits
from bpfwatch.errors import UsageError

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """'16MB', '16M', '16MiB', '4096' -> bytes (binary units)."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size (e.g. 16MB, 256K, 4096)")
    unit = (m.group(2) or "").lower()[:1]
    if len(m.group(1)) > 20:
        raise argparse.ArgumentTypeError(f"'{text}' is too large a size")
    return _arg(limits.byte_count, "size", int(m.group(1)) * _UNITS[unit])


def _arg(check: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """A limits check as an argparse type error (argparse names the option)."""
    try:
        return check(*args, **kw)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None


def parse_pid(text: str) -> int:
    return _arg(limits.pid, "pid", text.strip())


def parse_port(text: str) -> int:
    return _arg(limits.port, "port", text.strip())


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]."""
    def parse(text: str) -> int:
        return _arg(limits.integer, "value", text.strip(), low, high)
    return parse


def parse_seconds(text: str) -> float:
    """A positive, finite number of seconds ('2', '0.5', '2s')."""
    return _arg(limits.seconds, "seconds", text.strip().removesuffix("s"))


def table_console() -> Any:
    """A rich console for wide tables: the terminal's width, or 200 columns
    when piped (rich would otherwise fold every cell to fit 80)."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


NARROW_BELOW = 120  # columns: a terminal narrower than this gets the compact tables


def print_table(title: str, columns: list[tuple[str, str]], rows: list[list[str]], wide: bool = False) -> None:
    """A table on stdout that fits the terminal. Each column is 'fixed' (ids,
    numbers: shown whole), 'flex' (text: cut with an ellipsis when narrow) or
    'extra' (left out when narrow). Below NARROW_BELOW columns, without
    `wide`, rows are one line each and there are no vertical rules; pipes and
    `wide` get every column, folded, never cut."""
    import sys

    from rich import box
    from rich.table import Table

    console = table_console()
    narrow = sys.stdout.isatty() and not wide and console.width < NARROW_BELOW
    keep = [i for i, (_, kind) in enumerate(columns) if kind != "extra" or not narrow]
    if narrow:
        rows = [[c.replace("\n", ", ") for c in r] for r in rows]
        widths = {i: max([len(columns[i][0])] + [len(r[i]) for r in rows]) for i in keep}
        flex = [i for i in keep if columns[i][1] == "flex"]
        room = console.width - 2 * len(keep) + 1 - sum(w for i, w in widths.items() if i not in flex)  # padding
        want = sum(widths[i] for i in flex)
        if flex and want > room:
            # each text column gets a share of the room in proportion to what it wants
            for i in flex:
                widths[i] = max(len(columns[i][0]), room * widths[i] // want)
            rows = [[(c[: widths[i] - 1] + "…") if i in widths and len(c) > widths[i] else c
                     for i, c in enumerate(r)] for r in rows]
    table = Table(title=title, box=None if narrow else box.HEAVY_HEAD, pad_edge=not narrow,
                  header_style="bold underline" if narrow else "table.header")
    for i in keep:
        if narrow:
            table.add_column(columns[i][0], no_wrap=True, width=widths[i])
        else:
            table.add_column(columns[i][0], overflow="fold")
    for row in rows:
        table.add_row(*[row[i] for i in keep])
    console.print(table)
    if narrow and len(keep) < len(columns):
        hidden = ", ".join(columns[i][0] for i in range(len(columns)) if i not in keep)
        console.print(f"[dim]({hidden} hidden at this width: --wide shows every column)[/dim]")
