"""Attach specs (`xdp:veth0`, `tc:eth0:egress`, `tracepoint:sched:sched_switch`,
...): parsing, the program types each needs, and checks against what this
kernel can do, all before anything is loaded."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from functools import cache

from bpfwatch import libbpf as L
from bpfwatch import limits
from bpfwatch.doctor import kernel
from bpfwatch.errors import UsageError
from bpfwatch.mounts import mounts
from bpfwatch.programs.kinds import PROG_TYPES, name_of

# kind -> program types it accepts (enum bpf_prog_type)
KINDS: dict[str, frozenset[int]] = {
    "xdp": frozenset({6}),
    "tc": frozenset({3, 4}),
    "tracepoint": frozenset({5}),
    "raw_tracepoint": frozenset({17, 24}),
    "tp_btf": frozenset({26}),
    "fentry": frozenset({26}),
    "fexit": frozenset({26}),
    "lsm": frozenset({29}),
    "kprobe": frozenset({2}),
    "kretprobe": frozenset({2}),
    "uprobe": frozenset({2}),
    "uretprobe": frozenset({2}),
    "cgroup": frozenset({8, 9, 13, 15, 18, 23, 25}),
    "socket": frozenset({1}),
    "section": frozenset(PROG_TYPES) - {0},
}
ALIASES = {"tp": "tracepoint", "raw_tp": "raw_tracepoint", "tcx": "tc", "sk": "socket", "auto": "section"}
USAGE = {
    "xdp": "xdp:IFACE[:auto|native|generic]",
    "tc": "tc:IFACE[:ingress|egress][:tcx|clsact]",
    "tracepoint": "tracepoint:CATEGORY:NAME",
    "raw_tracepoint": "raw_tracepoint:NAME",
    "tp_btf": "tp_btf:NAME",
    "fentry": "fentry:FUNCTION",
    "fexit": "fexit:FUNCTION",
    "lsm": "lsm:HOOK",
    "kprobe": "kprobe:FUNCTION",
    "kretprobe": "kretprobe:FUNCTION",
    "uprobe": "uprobe:BINARY:FUNCTION|0xOFFSET[:PID]",
    "uretprobe": "uretprobe:BINARY:FUNCTION|0xOFFSET[:PID]",
    "cgroup": "cgroup:PATH (cgroup v2 directory)",
    "socket": "socket:IFACE (a packet socket on the interface)",
    "section": "section (attach as the ELF section name says)",
}
XDP_MODES = {"auto": 0, "generic": 2, "skb": 2, "native": 4, "drv": 4}
# BTF-target kinds: their target is fixed at load time
LOAD_TIME_TARGET = {"tp_btf": 23, "fentry": 24, "fexit": 25, "lsm": 27}  # enum bpf_attach_type


@dataclass(slots=True)
class AttachSpec:
    kind: str
    target: str = ""
    program: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""

    def __str__(self) -> str:
        return self.text or f"{self.kind}:{self.target}"


def _bad(text: str, why: str) -> UsageError:
    return UsageError(f"attach spec '{text}': {why}")


def parse(text: str) -> AttachSpec:
    """`[PROGRAM=]KIND[:ARGS]` -> AttachSpec; a UsageError names what is wrong."""
    program = None
    body = text.strip()
    if "=" in body.split(":", 1)[0]:
        program, body = body.split("=", 1)
        program = program.strip() or None
    kind, _, rest = body.partition(":")
    kind = ALIASES.get(kind.strip().lower(), kind.strip().lower())
    if kind not in KINDS:
        raise _bad(text, f"unknown attach type '{kind}'; known: {', '.join(sorted(KINDS))}")
    parts = rest.split(":") if rest else []
    spec = AttachSpec(kind, program=program, text=text)
    need = USAGE[kind]
    if kind == "section":
        if parts:
            raise _bad(text, f"'section' takes no arguments ({need})")
        return spec
    if not parts or not parts[0]:
        raise _bad(text, f"missing target: {need}")
    if kind == "xdp":
        if len(parts) > 2 or (len(parts) == 2 and parts[1] not in XDP_MODES):
            raise _bad(text, f"expected {need}")
        spec.target = parts[0]
        spec.options["mode"] = parts[1] if len(parts) == 2 else "auto"
    elif kind == "tc":
        spec.target = parts[0]
        direction, impl = "ingress", "auto"
        for p in parts[1:]:
            if p in ("ingress", "egress"):
                direction = p
            elif p in ("tcx", "clsact"):
                impl = p
            else:
                raise _bad(text, f"'{p}' is neither a direction nor tcx/clsact: {need}")
        spec.options.update(direction=direction, impl=impl)
    elif kind == "tracepoint":
        if len(parts) == 1 and "/" in parts[0]:
            parts = parts[0].split("/", 1)
        if len(parts) != 2 or not all(parts):
            raise _bad(text, f"expected {need}")
        spec.target = f"{parts[0]}:{parts[1]}"
    elif kind in ("uprobe", "uretprobe"):
        if len(parts) not in (2, 3) or not parts[1]:
            raise _bad(text, f"expected {need}")
        spec.target = parts[0]
        spec.options["func"] = parts[1]
        if len(parts) == 3:
            if not limits.decimal(parts[2]):
                raise _bad(text, f"PID '{parts[2]}' is not a number")
            spec.options["pid"] = parts[2]
    elif kind == "cgroup":
        spec.target = ":".join(parts)
    else:
        if len(parts) != 1:
            raise _bad(text, f"expected {need}")
        spec.target = parts[0]
    return spec


@cache
def _feature(name: str) -> tuple[bool, str, str]:
    from bpfwatch.doctor.features import probe
    f = probe(name)
    return f.ok, f.detail, f.remedy


@cache
def tcx_available() -> bool:
    """tcx links (Linux >= 6.6); doctor's tc probe falls back to clsact and says so."""
    ok, detail, _ = _feature("tc")
    return ok and "clsact" not in detail


def tracefs_root() -> str | None:
    return kernel.tracefs_path()


def ensure_tracefs() -> str:
    """tracefs, mounted at /sys/kernel/tracing if it is not mounted yet."""
    path = tracefs_root()
    if path:
        return path
    from bpfwatch.programs.bpffs import mount_fs
    mount_fs("tracefs", "/sys/kernel/tracing")
    return "/sys/kernel/tracing"


def ifindex(name: str, text: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise _bad(text, f"no network interface '{name}' in this network namespace (see 'ip link')") from None


def check(spec: AttachSpec) -> None:
    """Refuses, with the reason and what to use instead, a spec this kernel
    cannot serve, or whose target does not exist."""
    t = spec.text or str(spec)
    alt = "use tp_btf:NAME or raw_tracepoint:NAME (tracepoints), or tracepoint:CATEGORY:NAME"
    if spec.kind in ("kprobe", "kretprobe"):
        if kernel.config_value("CONFIG_KPROBES") == "n":
            raise _bad(t, f"kprobes are compiled out of this kernel (CONFIG_KPROBES is not set): {alt}")
        ok, detail, _ = _feature("kprobe")
        if not ok:
            raise _bad(t, f"{detail}: {alt}")
    elif spec.kind in ("fentry", "fexit", "lsm"):
        ok, detail, _ = _feature(spec.kind)
        if not ok:
            raise _bad(t, f"{detail}: {alt}")
    if spec.kind in ("xdp", "tc", "socket"):
        ifindex(spec.target, t)
    elif spec.kind in ("raw_tracepoint", "tp_btf"):
        if not L.kernel_has_tracepoint(spec.target):
            raise _bad(t, f"this kernel has no tracepoint '{spec.target}'")
    elif spec.kind in ("uprobe", "uretprobe"):
        if not os.path.isfile(spec.target):
            raise _bad(t, f"no such binary {spec.target}")
    elif spec.kind == "cgroup" and (not os.path.isdir(spec.target) or _fstype(spec.target) != "cgroup2"):
        raise _bad(t, f"{spec.target} is not a cgroup v2 directory")


def _fstype(path: str) -> str:
    path = os.path.realpath(path)
    best, fstype = "", ""
    for mp, t in mounts().items():
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
            best, fstype = mp, t
    return fstype


def check_type(spec: AttachSpec, prog_name: str, prog_type: int) -> None:
    if prog_type not in KINDS[spec.kind]:
        want = " or ".join(name_of(PROG_TYPES, t) for t in sorted(KINDS[spec.kind]))
        raise _bad(spec.text, f"program {prog_name} is a {name_of(PROG_TYPES, prog_type)} program; "
                              f"{spec.kind} needs {want}")
