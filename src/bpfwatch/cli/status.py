"""A live status line on the terminal's bottom row, as apt draws its progress:
the rows above are made a scroll region, so whatever else writes to the
terminal (the profiled command, the trace) scrolls above it untouched. Only
on a terminal; never in pipes or files."""

from __future__ import annotations

import os
import signal
import time
from typing import Any, TextIO

from bpfwatch.events.text import display


class StatusLine:
    def __init__(self, stream: TextIO, every: float = 0.5) -> None:
        self.stream = stream
        self.every = every
        self.active = _is_terminal(stream)
        self._rows = 0
        self._cols = 80
        self._drawn_at = 0.0
        self._last = ""
        self._old_winch: Any = None

    def _size(self) -> None:
        try:
            size = os.get_terminal_size(self.stream.fileno())
            self._rows, self._cols = size.lines, size.columns
        except OSError:
            self._rows = 0

    def _region(self) -> None:
        # a row for the status: scroll once, then keep the bottom row out of the scroll region
        self._size()
        if self._rows < 3:
            return
        self._write(f"\n\x1b7\x1b[1;{self._rows - 1}r\x1b8\x1b[1A")

    def start(self, text: str) -> StatusLine:
        if not self.active:
            return self
        self._region()
        try:
            self._old_winch = signal.signal(signal.SIGWINCH, self._on_resize)
        except ValueError:  # not the main thread: no resize handling
            self._old_winch = None
        self.show(text, force=True)
        return self

    def _on_resize(self, _signum: int, _frame: Any) -> None:
        self._size()
        if self._rows >= 3:
            self._write(f"\x1b7\x1b[1;{self._rows - 1}r\x1b8")
            self.show(self._last, force=True)

    def due(self) -> bool:
        return self.active and time.monotonic() - self._drawn_at >= self.every

    def show(self, text: str, force: bool = False) -> None:
        if not self.active or not (force or self.due()):
            return
        self._last = text
        self._drawn_at = time.monotonic()
        line = display(text)[: max(self._cols - 1, 1)]
        if self._rows >= 3:
            # save the cursor, draw on the bottom row in reverse video, put the cursor back
            self._write(f"\x1b7\x1b[{self._rows};1H\x1b[2K\x1b[7m{line}\x1b[0m\x1b8")
        else:
            self._write(f"\r\x1b[2K{line}\r")

    def close(self) -> None:
        """The terminal as it was: the whole screen scrolls again, the status row is blank."""
        if not self.active:
            return
        self.active = False
        if self._old_winch is not None:
            signal.signal(signal.SIGWINCH, self._old_winch)
        if self._rows >= 3:
            self._write(f"\x1b7\x1b[{self._rows};1H\x1b[2K\x1b[r\x1b8")
        else:
            self._write("\r\x1b[2K")

    def _write(self, s: str) -> None:
        try:
            self.stream.write(s)
            self.stream.flush()
        except OSError:
            self.active = False  # the terminal went away: nothing more to draw


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def count_text(n: float) -> str:
    if n < 1000:
        return f"{n:.0f}"
    for unit in ("k", "M", "G"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f}{unit}"
    return f"{n:.0f}G"
