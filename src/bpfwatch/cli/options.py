"""Parsing of option values shared by sub-commands."""

from __future__ import annotations

import argparse
import re
from typing import Any

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """'16MB', '16M', '16MiB', '4096' -> bytes (binary units)."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size (e.g. 16MB, 256K, 4096)")
    unit = (m.group(2) or "").lower()[:1]
    return int(m.group(1)) * _UNITS[unit]


def parse_pid(text: str) -> int:
    try:
        pid = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a process id") from None
    if pid <= 0:
        raise argparse.ArgumentTypeError(f"{pid} is not a valid process id")
    return pid


def parse_seconds(text: str) -> float:
    try:
        v = float(text.rstrip("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive, not {text}")
    return v


def table_console() -> Any:
    """A rich console for wide tables: the terminal's width, or 200 columns
    when piped (rich would otherwise fold every cell to fit 80)."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)
