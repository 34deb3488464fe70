"""Runs CMD with empty BPF programs attached, the floor a tracer's cost is
measured against: `python bench/floor.py exit -- CMD` (sys_exit only, as
`run --count-only` hooks) or `enter,exit` (as `run` with syscall times).
`exit_count` also counts each call in a per-CPU cell (the least a syscall
counter does). `records` attaches the floor of a tracer that reports file
operations: one record per open, fchown, fchmod and close, made as the
sensors make theirs, and nothing else.

    python bench/floor.py enter,exit -- dd if=/dev/zero of=/dev/null bs=1 count=100000
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from bpfwatch import libbpf as L  # noqa: E402
from bpfwatch import syscalls  # noqa: E402

OBJ = ROOT / "build" / "testbpf" / "floor.bpf.o"
RECORDS_OBJ = ROOT / "build" / "testbpf" / "floor_records.bpf.o"


@contextlib.contextmanager
def attached(which: str) -> Iterator[L.BpfObject]:
    """The programs named by `which` ("exit", "enter,exit", "exit_count" or
    "records"), attached for the duration of the block (their object: its
    maps hold what they counted or recorded)."""
    if which == "records":
        with L.BpfObject(str(RECORDS_OBJ)) as obj:
            nrs = syscalls.table()
            obj.set_rodata(**{f"nr_{n}": nrs.get(n, -1) for n in ("open", "openat", "close", "fchown", "fchmod")})
            obj.load()
            obj.attach_all()
            yield obj
        return
    wanted = {f"bw_floor_{w}" for w in which.split(",")}
    with L.BpfObject(str(OBJ)) as obj:
        for p in obj.programs():
            p.autoload = p.name in wanted
        obj.load()
        obj.attach_all()
        yield obj


def main() -> int:
    which, sep, *cmd = sys.argv[1:]
    if sep != "--" or not cmd:
        sys.stderr.write("usage: floor.py enter,exit|exit|records -- CMD...\n")
        return 2
    with attached(which):
        return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
