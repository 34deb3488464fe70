"""What the kernel must have for eBPF tracing, each with the Linux version that
brought it, and a one-line reason when it is missing (docs/kernels.md).

Two checks are cheap and made before any sensor loads: kernel BTF (a file) and
the BPF ring buffer (one map created and closed). The rest are found by loading
probe programs, only once a sensor has failed to load, to say why. Where one is
missing, `trace` and `run` stop with that reason and the agent polls /proc
instead (monitor.ebpf.fallback_to_polling).

BPFWATCH_PRETEND_MISSING=ringbuf,tp_btf (names below) makes these checks report
the named features missing, to see what an older kernel would get.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from bpfwatch.errors import BpfError, BpfwatchError


@dataclass(frozen=True)
class Requirement:
    name: str
    what: str
    since: str      # what brought it: a Linux version (and a config option)


REQUIREMENTS = {
    "btf": Requirement("btf", "kernel BTF (/sys/kernel/btf/vmlinux, what CO-RE objects are relocated against)",
                       "Linux >= 5.4 built with CONFIG_DEBUG_INFO_BTF=y, as every major distribution's is"),
    "ringbuf": Requirement("ringbuf", "the BPF ring buffer", "Linux >= 5.8"),
    "tp_btf": Requirement("tp_btf", "BTF tracepoints (tp_btf programs)", "Linux >= 5.5"),
    "bpf_loop": Requirement("bpf_loop", "the bpf_loop helper (walks of paths and argv)", "Linux >= 5.17"),
}


def pretended() -> set[str]:
    return {x.strip() for x in os.environ.get("BPFWATCH_PRETEND_MISSING", "").split(",") if x.strip()}


def has(name: str) -> bool:
    """Whether this kernel has the feature (probe programs for tp_btf and bpf_loop)."""
    if name in pretended():
        return False
    if name == "btf":
        return os.path.exists("/sys/kernel/btf/vmlinux")
    if name == "ringbuf":
        return ringbuf_error() == 0
    from bpfwatch.doctor import features  # probe programs: only once something failed

    if name == "tp_btf":
        return features.probe("tp_btf").ok
    if name == "bpf_loop":
        from bpfwatch import libbpf

        return libbpf.helper_available("bpf_loop")
    raise KeyError(name)


def ringbuf_error() -> int:
    """0 when a BPF ring buffer map can be created here, else the errno."""
    from bpfwatch import libbpf

    try:
        fd = libbpf.map_create(libbpf.MAP_TYPE_RINGBUF, 0, 0, 4096, "bw_probe_rb")
    except BpfError as e:
        return e.errno or 1
    os.close(fd)
    return 0


class KernelTooOld(BpfwatchError):
    """A feature bpfwatch's sensors need is missing from this kernel."""

    def __init__(self, req: Requirement) -> None:
        release = os.uname().release
        super().__init__(f"this kernel (Linux {release}) lacks {req.what}, which eBPF tracing needs "
                         f"({req.since}); 'bpfwatch doctor' lists what works here, and the agent polls /proc "
                         "instead (monitor.ebpf.fallback_to_polling)")
        self.requirement = req


def check_cheap() -> None:
    """Before loading: kernel BTF and the ring buffer (a stat and one map)."""
    for name in ("btf", "ringbuf"):
        if not has(name):
            raise KernelTooOld(REQUIREMENTS[name])


def explain() -> KernelTooOld | None:
    """After a sensor failed to load: the first missing requirement, if any."""
    for name, req in REQUIREMENTS.items():
        if not has(name):
            return KernelTooOld(req)
    return None
