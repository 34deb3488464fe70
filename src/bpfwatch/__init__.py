"""bpfwatch: what processes really do, seen from the kernel with eBPF."""

from __future__ import annotations

from typing import Any

from bpfwatch.errors import BpfwatchError

__version__ = "0.1.0"
__all__ = ["BpfwatchError", "Monitor", "__version__"]


def __getattr__(name: str) -> Any:
    # Monitor pulls in numpy and every sensor: only load it when asked, so
    # commands that do not trace (prog, map, config, capture) start fast
    if name == "Monitor":
        from bpfwatch.monitor import Monitor

        return Monitor
    raise AttributeError(f"module 'bpfwatch' has no attribute {name!r}")
