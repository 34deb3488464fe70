"""Where a key is in a TOML text: tomllib gives values, not positions, and a
config error should name the line. A light scan of table headers and keys
(quoted and dotted keys included) is enough for that: it is never used to
parse values."""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=")
_PART = re.compile(r"[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'")


def _parts(dotted: str) -> tuple[str, ...]:
    return tuple(p.strip("\"'") for p in _PART.findall(dotted))


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """{key path: 1-based line} for every table header and key assignment
    (the first occurrence wins; lines inside multi-line strings are skipped)."""
    out: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    in_string: str | None = None
    for n, line in enumerate(text.splitlines(), 1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        h = _HEADER.match(line)
        if h and "=" not in line.split("]", 1)[0]:
            table = _parts(h.group(2))
            out.setdefault(table, n)
            continue
        k = _KEY.match(line)
        if k:
            path = table + _parts(k.group(1))
            for i in range(len(table) + 1, len(path) + 1):
                out.setdefault(path[:i], n)
            rest = line[k.end():]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_string = quote
    return out


def line_of(lines: dict[tuple[str, ...], int], path: tuple[str, ...]) -> int | None:
    """The line of `path`, or of its nearest enclosing key or table."""
    for i in range(len(path), 0, -1):
        if path[:i] in lines:
            return lines[path[:i]]
    return None
