"""Errors that reach the user as one clear line."""

from __future__ import annotations


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
