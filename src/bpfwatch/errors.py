"""Errors that reach the user as one clear line."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
SEPARATOR = "\nbpfwatch: "  # between the problems of one error (a config's, one per line)


def one_line(message: str) -> str:
    """A message as the user sees it: control characters that came with their
    input (a newline in a value) escaped, so each problem stays one line."""
    return SEPARATOR.join(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", part)
                          for part in message.split(SEPARATOR))


class BpfwatchError(Exception):
    """Reported as `bpfwatch: <message>` with exit status `exit_code`."""

    exit_code = 1


class UsageError(BpfwatchError):
    exit_code = 2


class PermissionProblem(BpfwatchError):
    exit_code = 2


class LibbpfError(BpfwatchError):
    """libbpf is missing or too old."""

    exit_code = 2


class BpfError(BpfwatchError):
    """A libbpf/kernel call failed; errno and the full libbpf log are kept."""

    def __init__(self, message: str, errno: int = 0, log: str = "") -> None:
        super().__init__(message)
        self.errno = errno
        self.log = log
