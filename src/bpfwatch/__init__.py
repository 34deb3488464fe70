"""bpfwatch: what processes really do, seen from the kernel with eBPF."""

from bpfwatch.errors import BpfwatchError
from bpfwatch.monitor import Monitor

__version__ = "0.1.0"
__all__ = ["BpfwatchError", "Monitor", "__version__"]
