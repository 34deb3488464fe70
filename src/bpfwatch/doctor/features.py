"""Which program and map types work here, found by loading and attaching tiny
probe programs (bpf/probes.bpf.c), each alone, and releasing them at once."""

from __future__ import annotations

import ctypes.util
import errno
import os
import socket
from dataclasses import dataclass

from bpfwatch import libbpf as L
from bpfwatch.bpf import object_path
from bpfwatch.doctor import kernel
from bpfwatch.errors import BpfError, BpfwatchError
from bpfwatch.mounts import cgroup2_root

BPF_TCX_INGRESS = 46  # enum bpf_attach_type


@dataclass(slots=True)
class Feature:
    name: str
    ok: bool
    detail: str
    remedy: str = ""


# feature -> (probe program, what it is used for)
PROBES: dict[str, tuple[str, str]] = {
    "tp_btf": ("bw_probe_tp_btf", "BTF tracepoints (the process sensor)"),
    "raw_tp": ("bw_probe_raw_tp", "raw tracepoints"),
    "tp": ("bw_probe_tp", "tracefs tracepoints"),
    "fentry": ("bw_probe_fentry", "function entry (BPF trampolines)"),
    "fexit": ("bw_probe_fexit", "function exit (BPF trampolines)"),
    "kprobe": ("bw_probe_kprobe", "kernel probes"),
    "uprobe": ("bw_probe_uprobe", "user-space probes"),
    "lsm": ("bw_probe_lsm", "BPF LSM hooks"),
    "xdp": ("bw_probe_xdp", "XDP (attached to lo, generic mode)"),
    "tc": ("bw_probe_tc", "tc classifier (tcx on lo)"),
    "cgroup_skb": ("bw_probe_cgroup_skb", "cgroup socket buffers (root cgroup)"),
}


def _explain(feature: str, stage: str, err: int) -> tuple[str, str]:
    """(plain reason, remedy) for a probe that failed."""
    if feature == "kprobe" and kernel.config_value("CONFIG_KPROBES") == "n":
        return ("kprobes are compiled out of this kernel (CONFIG_KPROBES is not set)",
                "use tracepoints (tp_btf, raw_tp) instead")
    if feature == "tp" and err == errno.ENOENT and kernel.tracefs_path() is None:
        return ("tracefs is not mounted, so tracepoint ids cannot be read",
                "mount -t tracefs nodev /sys/kernel/tracing (or use tp_btf/raw_tp, which need no tracefs)")
    if feature in ("fentry", "fexit", "lsm") and err == errno.EPERM and stage == "load":
        held = "root" if os.geteuid() == 0 else "the needed capabilities"
        mode = kernel.lockdown()
        why = f"the kernel refuses {feature} programs at load (EPERM) although bpfwatch runs as {held}"
        if mode == "confidentiality":
            why += "; kernel lockdown is 'confidentiality'"
        elif mode:
            why += f"; lockdown is '{mode}', which does not explain it: a kernel policy blocks BPF trampolines"
        if feature == "lsm" and kernel.config_value("CONFIG_BPF_LSM") == "n":
            why = "the BPF LSM is not built in (CONFIG_BPF_LSM is not set)"
        return why, "use tp_btf or raw tracepoints; 'ulimit -l' plays no part (memory is cgroup-accounted)"
    if feature == "cgroup_skb" and cgroup2_root() is None:
        return ("no cgroup v2 hierarchy is mounted", "mount -t cgroup2 none /sys/fs/cgroup/unified")
    if err == errno.EPERM:
        return (f"{stage} refused (EPERM)", "run as root or with CAP_BPF, CAP_PERFMON (+CAP_NET_ADMIN for xdp/tc)")
    return f"{stage} failed: {L.strerror(err)}", ""


def _attach(feature: str, prog: L.Program) -> str | None:
    """Attaches a probe; returns what it used when that is not what PROBES says."""
    if feature == "uprobe":
        libc = ctypes.util.find_library("c") or "libc.so.6"
        path = next((p for p in (f"/lib/x86_64-linux-gnu/{libc}", f"/usr/lib/{libc}", f"/lib/{libc}",
                                 f"/lib/aarch64-linux-gnu/{libc}") if os.path.exists(p)), libc)
        prog.attach_uprobe(path, 0)  # offset 0 of the ELF: attach only, never hit
    elif feature == "xdp":
        prog.attach_xdp(socket.if_nametoindex("lo"))
    elif feature == "tc":
        lo = socket.if_nametoindex("lo")
        try:
            os.close(L.link_create(prog.fd, lo, BPF_TCX_INGRESS))
        except BpfError as e:
            if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            # before Linux 6.6 (no tcx): a filter in a clsact qdisc, removed at once
            L.tc_clsact_detach(*L.tc_clsact_attach(lo, False, prog.fd))
            return "tc classifier (clsact on lo; tcx needs Linux >= 6.6)"
    elif feature == "cgroup_skb":
        root = cgroup2_root()
        if root is None:
            raise BpfError("no cgroup v2 hierarchy is mounted", errno.ENOENT)
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            prog.attach_cgroup(fd)
        finally:
            os.close(fd)
    else:
        prog.attach()
    return None


def _pretended(feature: str) -> Feature | None:
    from bpfwatch.kernel_support import pretended

    if feature in pretended():
        return Feature(feature, False, "missing (pretended: BPFWATCH_PRETEND_MISSING)",
                       "unset BPFWATCH_PRETEND_MISSING")
    return None


def probe(feature: str) -> Feature:
    if (fake := _pretended(feature)) is not None:
        return fake
    prog_name, what = PROBES[feature]
    try:
        obj = L.BpfObject(str(object_path("probes")))
    except BpfwatchError as e:
        return Feature(feature, False, str(e), "make bpf")
    with obj:
        for p in obj.programs():
            p.autoload = p.name == prog_name
        try:
            obj.load()
        except BpfError as e:
            reason, remedy = _explain(feature, "load", e.errno)
            return Feature(feature, False, reason, remedy)
        try:
            used = _attach(feature, obj.program(prog_name))
        except BpfError as e:
            reason, remedy = _explain(feature, "attach", e.errno)
            return Feature(feature, False, reason, remedy)
    return Feature(feature, True, f"loads and attaches: {used or what}")


def probe_ringbuf() -> Feature:
    if (fake := _pretended("ringbuf")) is not None:
        return fake
    from bpfwatch.kernel_support import ringbuf_error

    if err := ringbuf_error():
        return Feature("ringbuf", False, f"cannot create a ring buffer map: {L.strerror(err)}",
                       "needs Linux >= 5.8")
    return Feature("ringbuf", True, "ring buffer maps can be created")


def probe_all() -> list[Feature]:
    return [probe(f) for f in PROBES] + [probe_ringbuf()]
