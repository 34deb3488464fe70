"""The ranges outside values must fall in, checked in one place for the CLI,
the agent's config and the Python API: a value out of range is a one-line
error naming it, never an OverflowError deep in a conversion."""

from __future__ import annotations

import math

from bpfwatch.errors import UsageError

MAX_PID = 4_194_304          # PID_MAX_LIMIT on 64-bit kernels
MAX_ID = 2**32 - 2           # uid/gid; 2**32 - 1 is "no id"
MAX_SECONDS = 10 * 365 * 86400.0
MAX_BYTES = 1 << 40


def decimal(text: str) -> bool:
    """Whether text is ASCII digits only. str.isdigit() also takes digits
    int() refuses ('²') and digits of other scripts."""
    return text.isascii() and text.isdigit()


def seconds(name: str, value: float, low: float = 0.0, high: float = MAX_SECONDS, *,
            zero: bool = False) -> float:
    """A finite number of seconds in (low, high], or [low, high] with zero."""
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{name}: '{value}' is not a number of seconds") from None
    if not math.isfinite(v):
        raise UsageError(f"{name}: '{value}' is not a finite number of seconds")
    if low == 0 and not zero and v <= 0:
        raise UsageError(f"{name}: must be positive, not {value}")
    if v < low or (v == low and not zero) or v > high:
        bound = f"at least {low:g}" if zero else f"more than {low:g}"
        raise UsageError(f"{name}: {v:g} s is out of range ({bound} and at most {high:g})")
    return v


def integer(name: str, value: object, low: int, high: int, what: str = "a number") -> int:
    if isinstance(value, bool):
        raise UsageError(f"{name}: {value!r} is not {what}")
    try:
        v = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{name}: '{value}' is not {what}") from None
    if isinstance(value, float) and value != v:
        raise UsageError(f"{name}: '{value}' is not {what}")
    if not low <= v <= high:
        raise UsageError(f"{name}: {v} is out of range ({low} to {high})")
    return v


def pid(name: str, value: object) -> int:
    return integer(name, value, 1, MAX_PID, "a process id")


def ident(name: str, value: object) -> int:
    """A user or group id."""
    return integer(name, value, 0, MAX_ID, "a user or group id")


def port(name: str, value: object) -> int:
    return integer(name, value, 1, 65535, "a port")


def byte_count(name: str, value: object, low: int = 0, high: int = MAX_BYTES) -> int:
    return integer(name, value, low, high, "a size in bytes")
