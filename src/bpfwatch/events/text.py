"""Kernel strings as Python text, losslessly, and JSON that carries them.

Paths, argv and names are bytes in the kernel. Valid UTF-8 is kept as it
is; any other byte becomes a lone surrogate (U+DC80-U+DCFF, Python's
"surrogateescape"), so `os.fsencode(s)` gives back the exact bytes and the
byte 0xff can never be confused with the text "\\xff". In JSON such a string
is written with \\udcXX escapes (docs/events.md); `loads` here reads them back.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_ORJSON_NEWLINE = orjson.OPT_APPEND_NEWLINE


def text(raw: bytes) -> str:
    """Bytes from the kernel as a lossless str."""
    return raw.decode("utf-8", "surrogateescape")


def display(s: str) -> str:
    """The same string for a terminal: raw bytes shown as \\xHH."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def dumps(obj: Any, option: int = 0, default: Any = None) -> bytes:
    """orjson's bytes; objects holding raw bytes (surrogates) go through the
    standard library, which writes them as \\udcXX escapes."""
    try:
        return orjson.dumps(obj, option=option, default=default)
    except TypeError as e:
        if "surrogates" not in str(e):
            raise
    indent = 2 if option & orjson.OPT_INDENT_2 else None
    out = json.dumps(obj, ensure_ascii=True, indent=indent, default=default,
                     separators=None if indent else (",", ":")).encode()
    return out + b"\n" if option & _ORJSON_NEWLINE else out


def dumps_lines(events: list[Any]) -> tuple[bytearray, list[int]]:
    """Events as JSON lines in one buffer, and where each line ends. One
    buffer, not a bytes object per line: each of orjson's results carries
    ~4 KiB of allocation, and holding thousands of them fragments the heap."""
    buf, ends = bytearray(), []
    fast, opt = orjson.dumps, _ORJSON_NEWLINE
    for e in events:
        try:
            buf += fast(e, option=opt)
        except TypeError:  # raw bytes (surrogates) in a string
            buf += dumps(e, option=opt)
        ends.append(len(buf))
    return buf, ends


def loads(raw: bytes | str) -> Any:
    """orjson's parse, or the standard library's for \\udcXX escapes."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        if "surrogate" not in str(e):
            raise
        return json.loads(raw)
