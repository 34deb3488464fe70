"""A cgroup per diagnose command, so that everything the command starts can
be killed: a child that calls setsid() or double-forks leaves the process
group, but never its cgroup. cgroup v2 when it is mounted (cgroup.kill), else
the v1 `pids` hierarchy (fork stopped with pids.max, then SIGKILL until empty)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

V2_ROOT = Path("/sys/fs/cgroup")
V1_PIDS = Path("/sys/fs/cgroup/pids")


def _own_path(controller: str) -> str | None:
    """This process's cgroup in a hierarchy ("" for v2's unified line)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for ln in lines:
        hid, ctrls, path = ln.split(":", 2)
        if (controller == "" and hid == "0" and ctrls == "") or controller in ctrls.split(","):
            return path
    return None


def _base() -> tuple[Path, str] | None:
    """(directory to make command cgroups in, "v2" or "v1"), or None."""
    if (V2_ROOT / "cgroup.controllers").exists():
        own = _own_path("")
        if own is not None:
            return V2_ROOT / own.lstrip("/"), "v2"
    if (V1_PIDS / "cgroup.procs").exists():
        own = _own_path("pids")
        if own is not None:
            return V1_PIDS / own.lstrip("/"), "v1"
    return None


class CommandGroup:
    """One cgroup; `enter_path` is the file a child writes its pid to before exec."""

    def __init__(self, name: str) -> None:
        base = _base()
        if base is None:
            raise OSError("no cgroup hierarchy to put commands in")
        root, self.kind = base
        self.path = root / name
        self.path.mkdir(mode=0o700)
        self.enter_path = str(self.path / "cgroup.procs")

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def kill(self, timeout: float = 5.0) -> None:
        """Kills every process in the group, and those they fork meanwhile."""
        if self.kind == "v2" and (self.path / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (self.path / "cgroup.kill").write_text("1")
        else:
            with contextlib.suppress(OSError):
                (self.path / "pids.max").write_text("0")  # no new processes while we kill
        deadline = time.monotonic() + timeout
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        self.kill()
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)  # the killed are not reaped yet
