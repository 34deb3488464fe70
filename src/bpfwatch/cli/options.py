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
