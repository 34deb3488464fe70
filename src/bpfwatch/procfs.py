"""Reading processes from /proc: the start-up snapshot and single look-ups."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from bpfwatch.events.text import text
from bpfwatch.mounts import cgroup2_root

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(slots=True)
class ProcSnapshot:
    pid: int
    ppid: int
    comm: str
    exe: str | None
    argv: list[str]
    cwd: str | None
    uid: int
    gid: int
    euid: int
    egid: int
    loginuid: int
    start_boot_ns: int
    cgroup_id: int
    tty: str | None


def stat_fields(pid: int) -> list[bytes]:
    """/proc/PID/stat after the comm: [0] is the state, [1] the ppid, ...
    (proc(5) numbering minus 3). Raises OSError if the process is gone."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    return raw[raw.rindex(b")") + 2:].split()


def start_boot_ns(pid: int) -> int:
    """Process start time in boot-time ns (clock-tick precision)."""
    return int(stat_fields(pid)[19]) * 1_000_000_000 // CLK_TCK


def ppid(pid: int) -> int:
    try:
        return int(stat_fields(pid)[1])
    except (OSError, ValueError):
        return 0


def comm_argv(pid: int) -> tuple[str, list[str]]:
    """The comm and argv of a process ('?' and [] if it is gone)."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [text(a) for a in f.read().split(b"\0") if a]
    except OSError:
        return "?", []
    return comm, argv


def cgroup_id(pid: int) -> int:
    """cgroup v2 id of a process: the inode of its cgroup directory."""
    root = cgroup2_root()
    if root is None:
        return 0
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return os.stat(root + line[3:].strip()).st_ino
    except OSError:
        pass
    return 0


def _loginuid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/loginuid") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0xFFFFFFFF


_ATTRS = ["pid", "ppid", "name", "exe", "cmdline", "cwd", "uids", "gids", "terminal"]


def _row(info: dict) -> ProcSnapshot | None:
    try:
        start = start_boot_ns(info["pid"])
    except (OSError, ValueError):
        return None  # exited meanwhile
    uids, gids = info["uids"], info["gids"]
    return ProcSnapshot(
        pid=info["pid"], ppid=info["ppid"] or 0, comm=info["name"] or "",
        exe=info["exe"] or None, argv=info["cmdline"] or [], cwd=info["cwd"],
        uid=uids.real if uids else 0, gid=gids.real if gids else 0,
        euid=uids.effective if uids else 0, egid=gids.effective if gids else 0,
        loginuid=_loginuid(info["pid"]), start_boot_ns=start,
        cgroup_id=cgroup_id(info["pid"]), tty=info["terminal"],
    )


def snapshot() -> Iterator[ProcSnapshot]:
    """Every process now running (kernel threads included), parents first."""
    import psutil  # imported where it is used: 11 ms off the imports before a tracer attaches

    rows = [r for r in (_row(p.info) for p in psutil.process_iter(_ATTRS)) if r is not None]
    rows.sort(key=lambda r: r.start_boot_ns)
    yield from rows


def snapshot_pid(pid: int) -> ProcSnapshot | None:
    """One process, or None if it is gone."""
    import psutil

    try:
        info = psutil.Process(pid).as_dict(_ATTRS)
    except psutil.Error:
        return None
    return _row(info)


def descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def exists(pid: int) -> bool:
    import psutil

    return psutil.pid_exists(pid)


def running(pid: int) -> bool:
    """pid is a process that has not exited: a zombie (exited, not yet
    reaped by its parent) has a /proc entry but is not running."""
    try:
        return stat_fields(pid)[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False
