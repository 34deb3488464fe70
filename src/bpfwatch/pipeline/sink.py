"""Sinks: JSON lines (machines) and an aligned, coloured table (people)."""

from __future__ import annotations

import os
import shlex
import sys
import time
from typing import Any, BinaryIO, TextIO

import orjson

_JSON_OPTS = orjson.OPT_APPEND_NEWLINE


class JsonLinesSink:
    """One JSON object per line; written in batches, flushed per batch."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.count = 0

    def write(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        # each line goes straight into the buffered stream and is freed at once:
        # holding a batch of fresh bytes objects costs 10x more in allocation
        dumps, write = orjson.dumps, self.stream.write
        for e in events:
            write(dumps(e, option=_JSON_OPTS))
        self.stream.flush()
        self.count += len(events)

    def close(self) -> None:
        self.stream.flush()


_COLORS = {
    "process.exec": "\x1b[32m",
    "process.fork": "\x1b[36m",
    "process.exit": "\x1b[33m",
}
_RED = "\x1b[31m"
_DIM = "\x1b[2m"
_BOLD = "\x1b[1m"
_RESET = "\x1b[0m"
_LABEL = {"process.exec": "EXEC", "process.fork": "FORK", "process.exit": "EXIT"}


def use_color(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.1f}ms" if ns < 10_000_000_000 else f"{ns / 1e9:.1f}s"


def details(ev: dict[str, Any]) -> str:
    t = ev["type"]
    if t == "process.exec":
        argv = " ".join(shlex.quote(a) for a in ev["argv"]) or (ev["exe"] or "")
        if ev["argv_truncated"]:
            argv += f" …(+{ev['argv_omitted_args']} args, {ev['argv_omitted_bytes']} bytes)"
        return f"{ev['exe'] or '?'}  {argv}"
    if t == "process.fork":
        kind = "thread" if ev["thread"] else "child"
        return f"{kind} {ev['child_pid'] if not ev['thread'] else ev['child_tid']}"
    if t == "process.exit":
        how = (f"signal {ev['signal_name']}" + (" (core dumped)" if ev["core_dumped"] else "")
               if ev["signal"] else f"code {ev['exit_code']}")
        return f"{how}  after {_ms(ev['duration_ns'])}"
    return ""


class TableSink:
    HEADER = f"{'TIME':<15} {'EVENT':<5} {'PID':>7} {'PPID':>7} {'USER':<10} {'COMM':<16} DETAILS"

    def __init__(self, stream: TextIO, color: bool | None = None) -> None:
        self.stream = stream
        self.color = use_color(stream) if color is None else color
        self.count = 0
        self._header_done = False

    def write(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        out = []
        if not self._header_done:
            out.append((_BOLD + self.HEADER + _RESET) if self.color else self.HEADER)
            self._header_done = True
        for ev in events:
            sec, ns = divmod(ev["ts"], 1_000_000_000)
            clock = time.strftime("%H:%M:%S", time.localtime(sec)) + f".{ns // 1000:06d}"
            label = _LABEL.get(ev["type"], ev["type"])
            user = ev["user"] or str(ev["uid"])
            line = (f"{clock:<15} {label:<5} {ev['pid']:>7} {ev['ppid']:>7} {user[:10]:<10} "
                    f"{ev['comm'][:16]:<16} {details(ev)}")
            if self.color:
                color = _COLORS.get(ev["type"], "")
                if ev["type"] == "process.exit" and (ev["signal"] or ev["exit_code"]):
                    color = _RED
                line = f"{_DIM}{clock}{_RESET} {color}{line[16:]}{_RESET}"
            out.append(line)
        self.stream.write("\n".join(out) + "\n")
        self.stream.flush()
        self.count += len(events)

    def close(self) -> None:
        self.stream.flush()


def open_output(path: str | None) -> BinaryIO:
    if path is None or path == "-":
        return sys.stdout.buffer
    return open(path, "ab")
