"""A self-pipe: `wake()` (safe from a signal handler or another thread) makes
a wait on `fd` return; `clear()` after the wait re-arms it."""

from __future__ import annotations

import contextlib
import os


class Wakeup:
    def __init__(self) -> None:
        self.fd, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._woken = False

    def wake(self) -> None:
        self._woken = True
        if self._w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._w, b"x")

    @property
    def woken(self) -> bool:
        return self._woken

    def clear(self) -> None:
        if self._woken:
            self._woken = False
            with contextlib.suppress(OSError):
                os.read(self.fd, 64)

    def close(self) -> None:
        for fd in (self.fd, self._w):
            if fd >= 0:
                os.close(fd)
        self.fd = self._w = -1
