"""Runs CMD with empty BPF programs attached, the floor a tracer's cost is
measured against: `python bench/floor.py exit -- CMD` (sys_exit only, as
`run --count-only` hooks) or `enter,exit` (as `run` with syscall times).

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

OBJ = ROOT / "build" / "testbpf" / "floor.bpf.o"


@contextlib.contextmanager
def attached(which: str) -> Iterator[None]:
    """The empty programs named by `which` ("exit" or "enter,exit"), attached
    for the duration of the block."""
    wanted = {f"bw_floor_{w}" for w in which.split(",")}
    with L.BpfObject(str(OBJ)) as obj:
        for p in obj.programs():
            p.autoload = p.name in wanted
        obj.load()
        obj.attach_all()
        yield


def main() -> int:
    which, sep, *cmd = sys.argv[1:]
    if sep != "--" or not cmd:
        sys.stderr.write("usage: floor.py enter,exit|exit -- CMD...\n")
        return 2
    with attached(which):
        return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
