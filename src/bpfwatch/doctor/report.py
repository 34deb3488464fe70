"""The doctor's checks, in the order a person would fix them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from bpfwatch import caps
from bpfwatch import libbpf as L
from bpfwatch.bpf import BPF_DIR
from bpfwatch.doctor import kernel
from bpfwatch.doctor.features import probe_all
from bpfwatch.errors import LibbpfError
from bpfwatch.mounts import fs_mounted

# kernel config options worth showing, with what they give
CONFIG_OPTIONS = {
    "CONFIG_BPF_SYSCALL": "the bpf() system call",
    "CONFIG_BPF_JIT": "JIT-compiled programs",
    "CONFIG_DEBUG_INFO_BTF": "kernel BTF (CO-RE)",
    "CONFIG_BPF_EVENTS": "BPF on tracepoints",
    "CONFIG_KPROBES": "kprobes",
    "CONFIG_FUNCTION_TRACER": "ftrace (fentry/fexit)",
    "CONFIG_BPF_LSM": "BPF LSM",
    "CONFIG_CGROUP_BPF": "cgroup programs",
    "CONFIG_NET_CLS_ACT": "tc actions",
    "CONFIG_MODULES": "loadable modules",
}


@dataclass(slots=True)
class Check:
    name: str
    status: str  # ok | warn | fail | info
    detail: str
    remedy: str = ""
    essential: bool = False  # a failure here means bpfwatch cannot run

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _kernel() -> Check:
    ver = kernel.version_tuple()
    ok = ver >= (5, 17)
    return Check("kernel", "ok" if ok else "fail", f"Linux {kernel.release()}",
                 "" if ok else "bpfwatch needs Linux >= 5.17 (ring buffers, bpf_loop, tp_btf)", True)


def _btf() -> Check:
    from bpfwatch.kernel_support import has

    if has("btf"):
        return Check("btf", "ok", "/sys/kernel/btf/vmlinux present", essential=True)
    return Check("btf", "fail", "no kernel BTF at /sys/kernel/btf/vmlinux",
                 "use a kernel built with CONFIG_DEBUG_INFO_BTF=y", True)


def _libbpf() -> Check:
    try:
        return Check("libbpf", "ok", f"libbpf {L.version()}", essential=True)
    except LibbpfError as e:
        return Check("libbpf", "fail", str(e), "apt-get install libbpf1", True)


def _objects() -> Check:
    objs = sorted(p.name for p in BPF_DIR.glob("*.bpf.o"))
    if "process.bpf.o" in objs:
        return Check("bpf objects", "ok", ", ".join(objs), essential=True)
    return Check("bpf objects", "fail", f"no compiled BPF objects in {BPF_DIR}", "make bpf", True)


def _caps() -> list[Check]:
    mask = caps.effective()
    out = []
    for name in ("CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_NET_ADMIN"):
        held = caps.has(name, mask)
        out.append(Check(f"capability {name}", "ok" if held else "warn", "held" if held else "not held",
                         "" if held else "needed for " + {
                             "CAP_BPF": "loading programs", "CAP_PERFMON": "tracing programs",
                             "CAP_SYS_ADMIN": "some map types and older kernels",
                             "CAP_NET_ADMIN": "xdp and tc"}[name]))
    missing = caps.missing_for_tracing(mask)
    out.append(Check("privileges", "fail" if missing else "ok",
                     f"missing {', '.join(missing)}" if missing else "enough to load tracing programs",
                     caps.REMEDY if missing else "", True))
    return out


def _mounts() -> list[Check]:
    bpffs = fs_mounted("bpf")
    tracefs = kernel.tracefs_path()
    return [
        Check("bpffs", "ok" if bpffs else "warn", f"mounted at {bpffs}" if bpffs else "not mounted",
              "" if bpffs else "only needed to pin programs: mount -t bpf bpf /sys/fs/bpf"),
        Check("tracefs", "ok" if tracefs else "warn", f"mounted at {tracefs}" if tracefs else "not mounted",
              "" if tracefs else "only 'tp/' tracepoints need it: mount -t tracefs nodev /sys/kernel/tracing"),
    ]


def _sysctls() -> list[Check]:
    out = []
    v = kernel.sysctl("kernel.unprivileged_bpf_disabled")
    meaning = {"0": "unprivileged users may load some programs", "1": "only privileged users (fixed until reboot)",
               "2": "only privileged users (an admin may change it)"}
    out.append(Check("unprivileged_bpf_disabled", "info", f"{v}: {meaning.get(v or '', 'unknown')}"))
    v = kernel.sysctl("kernel.kptr_restrict")
    hidden = " (kernel addresses hidden from non-root)" if v and v != "0" else ""
    out.append(Check("kptr_restrict", "info", f"{v}{hidden}"))
    v = kernel.sysctl("kernel.perf_event_paranoid")
    needs = " (CAP_PERFMON needed to trace)" if v and v.lstrip("-").isdigit() and int(v) >= 2 else ""
    out.append(Check("perf_event_paranoid", "info", f"{v}{needs}"))
    mode = kernel.lockdown()
    if mode is None:
        out.append(Check("lockdown", "info", "unknown (securityfs not readable)"))
    else:
        bad = mode == "confidentiality"
        remedy = ("confidentiality mode forbids reading kernel memory from BPF: "
                  "boot with lockdown=integrity or none") if bad else ""
        out.append(Check("lockdown", "warn" if bad else "ok", mode, remedy))
    return out


def _config() -> list[Check]:
    src, cfg = kernel.config()
    if src is None:
        return [Check("kernel config", "info", "not found (/proc/config.gz, /boot/config-*)",
                      "for details, load the configs module or install the kernel's config")]
    out = [Check("kernel config", "info", f"read from {src}")]
    for opt, what in CONFIG_OPTIONS.items():
        val = cfg.get(opt, "n")
        out.append(Check(opt, "info", f"{'set' if val in ('y', 'm') else 'not set'} ({what})"))
    return out


# BTF tracepoints the sensors attach to: (sensor, what it gives, essential)
TRACEPOINTS = {
    "sched_process_exec": ("process", "process.exec", True),
    "task_newtask": ("process", "process.fork and --follow", True),
    "sched_process_exit": ("process", "process.exit", True),
    "sys_enter": ("file", "file.io totals at close", False),
    "sys_exit": ("file, network, dns", "file.*, accept, UDP flows, DNS", False),
    "inet_sock_set_state": ("network", "TCP connect/close", False),
    "tcp_destroy_sock": ("network", "network.close summaries", False),
    "sock_send_length": ("network, dns, run", "bytes at each send: DNS over TCP, run's network bytes, live TCP "
                         "bytes in top (network.close bytes stay exact without it)", False),
    "sock_recv_length": ("network, dns, run", "bytes at each receive: DNS over TCP, run's network bytes, live TCP "
                         "bytes in top (network.close bytes stay exact without it)", False),
}


def _tracepoints() -> list[Check]:
    out = []
    for tp, (sensor, gives, essential) in TRACEPOINTS.items():
        ok = L.kernel_has_tracepoint(tp)
        remedy = "" if ok else ("bpfwatch cannot run without it" if essential else
                                f"the rest of {sensor} works without it (the tracepoint is not in this kernel)")
        out.append(Check(f"tracepoint {tp}", "ok" if ok else ("fail" if essential else "warn"),
                         f"{sensor}: {gives}", remedy, essential))
    return out


def _sensor_loads() -> list[Check]:
    from bpfwatch.doctor.sensors import load_all

    out = []
    for s in load_all():
        if s.ok:
            prog, insns = s.largest
            out.append(Check(f"sensor {s.name}", "ok",
                             f"loads and attaches in {s.start_s:.3f} s; largest program {prog}: "
                             f"{insns:,} instructions verified"))
        else:
            out.append(Check(f"sensor {s.name}", "fail" if s.name == "process" else "warn", s.error,
                             "see docs/troubleshooting.md", s.name == "process"))
    return out


def run_checks(probe_features: bool = True, sensors: bool = False) -> list[Check]:
    checks = [_kernel(), _btf(), _libbpf(), _objects(), *_caps(), *_mounts(), *_sysctls(), *_config()]
    lib_ok = checks[2].status == "ok" and checks[3].status == "ok"
    can_load = not caps.missing_for_tracing()
    if lib_ok and checks[1].status == "ok":
        checks += _tracepoints()
    if probe_features and lib_ok and can_load:
        for f in probe_all():
            essential = f.name in ("tp_btf", "ringbuf")
            checks.append(Check(f"program {f.name}" if f.name != "ringbuf" else "map ringbuf",
                                "ok" if f.ok else ("fail" if essential else "warn"),
                                f.detail, f.remedy, essential))
        if sensors:
            checks += _sensor_loads()
    elif probe_features:
        checks.append(Check("program types", "fail", "not probed: libbpf, the BPF objects or privileges are missing",
                            "fix the failures above", True))
    return checks


def can_run(checks: list[Check]) -> bool:
    return not any(c.essential and c.status == "fail" for c in checks)
