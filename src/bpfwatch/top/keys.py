"""Keys from the terminal for `bpfwatch top`: the terminal in cbreak mode (keys
arrive as typed, not echoed; Ctrl-C still sends SIGINT) and put back as it
was on every way out, and a reader thread that hands over keys by name."""

from __future__ import annotations

import contextlib
import os
import queue
import select
import termios
import threading
import tty
from collections.abc import Callable, Iterator

# escape sequences of the keys top uses (xterm, tmux, the Linux console)
SEQUENCES = {
    b"\x1b[A": "up", b"\x1bOA": "up", b"\x1b[B": "down", b"\x1bOB": "down",
    b"\x1b[C": "right", b"\x1bOC": "right", b"\x1b[D": "left", b"\x1bOD": "left",
    b"\x1b[5~": "pgup", b"\x1b[6~": "pgdn", b"\x1b[H": "home", b"\x1b[F": "end",
    b"\x1b[1~": "home", b"\x1b[4~": "end", b"\x1bOH": "home", b"\x1bOF": "end",
}
SINGLE = {b"\r": "enter", b"\n": "enter", b"\x7f": "backspace", b"\x08": "backspace", b"\x1b": "esc",
          b"\t": "tab"}


def split_keys(data: bytes) -> list[str]:
    """Bytes read from the terminal as key names: printable characters as
    themselves, known sequences by name, anything else dropped."""
    out: list[str] = []
    i = 0
    while i < len(data):
        if data[i:i + 1] == b"\x1b" and i + 1 < len(data):
            name = next((n for seq, n in SEQUENCES.items() if data.startswith(seq, i)), None)
            if name is not None:
                out.append(name)
                i += next(len(seq) for seq, n in SEQUENCES.items() if data.startswith(seq, i))
                continue
            if data[i + 1:i + 2] in (b"[", b"O"):  # a sequence top does not use: skip to its final byte
                i += 2
                while i < len(data) and not 0x40 <= data[i] <= 0x7E:
                    i += 1
                i += 1
                continue
            out.append("esc")
            i += 1
            continue
        ch = data[i:i + 1]
        if ch in SINGLE:
            out.append(SINGLE[ch])
        elif 0x20 <= ch[0] < 0x7F:
            out.append(ch.decode())
        i += 1
    return out


@contextlib.contextmanager
def cbreak(fd: int) -> Iterator[None]:
    """The terminal at fd in cbreak mode, restored exactly on the way out."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


class KeyReader:
    """Reads keys on a thread; `wake` is called after each batch, so a loop
    asleep in another wait (the ring buffer's) reacts at once."""

    def __init__(self, fd: int, wake: Callable[[], None]) -> None:
        self.fd = fd
        self.wake = wake
        self.keys: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="bpfwatch-top-keys", daemon=True)

    def start(self) -> KeyReader:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self.fd, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                data = os.read(self.fd, 256)
            except OSError:
                return
            if not data:  # the terminal went away
                self.keys.put("eof")
                self.wake()
                return
            for k in split_keys(data):
                self.keys.put(k)
            self.wake()

    def pending(self) -> list[str]:
        out = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self.keys.get_nowait())
        return out

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=1)
        os.close(self._stop_r)
        os.close(self._stop_w)
