"""What a diagnostic trace can capture on this host, found by probing the
kernel (the same probes as `bpfwatch doctor`), and a concise description of
each capability for a model's prompt."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from bpfwatch import caps


@dataclass(frozen=True, slots=True)
class Capability:
    name: str
    summary: str
    events: tuple[str, ...]  # event types it reports
    needs: tuple[str, ...]   # kernel features (doctor probe names)
    filters: tuple[str, ...]


CAPABILITIES: dict[str, Capability] = {c.name: c for c in (
    Capability("process_trace", "process lifecycle: every exec (argv, exe, cwd, user), fork and exit "
               "(exit code or signal, duration)", ("process.exec", "process.fork", "process.exit"),
               ("tp_btf",), ("pid", "comm")),
    Capability("network_trace", "TCP connects (with latency and refusals), accepts and closes (bytes each way, "
               "who closed), UDP flows, DNS queries and answers with latency",
               ("network.connect", "network.accept", "network.close", "network.udp", "dns.query",
                "dns.response"), ("tp_btf",), ("pid", "comm")),
    Capability("file_trace", "file opens (flags, errors), unlinks, renames, chmod/chown, truncates, and "
               "read/write totals per process and file", ("file.*",), ("tp_btf",), ("pid", "comm", "path")),
    Capability("syscall_trace", "exact per-process syscall counts, errors and time (counted in the kernel, "
               "every call)", ("syscall.count",), ("tp_btf",), ("pid", "comm")),
    Capability("performance", "per-process CPU %, memory, I/O bytes, threads and context switches sampled "
               "every second from /proc, with host CPU, memory and load", ("perf.sample",), (),
               ("pid", "comm")),
    Capability("security_event", "security findings with severity: privilege escalation, credential changes, "
               "ptrace, memfd/deleted/world-writable execs, sensitive file writes, BPF loads, mounts, "
               "namespaces, kernel modules, sysctl writes", ("security.*",), ("tp_btf",), ("pid", "comm")),
)}
FILTER_HELP = {
    "pid": "a process id (string or number): that process and every process it starts",
    "comm": "a process name (15 characters, as in /proc/PID/comm); globs like 'nginx*' work",
    "path": "an absolute path prefix: only file events under it (file_trace)",
}


def probe() -> dict[str, dict[str, Any]]:
    """capability -> {available, reason}: what this host can trace right now."""
    from bpfwatch.doctor.features import probe as probe_feature

    missing = caps.missing_for_tracing()
    features: dict[str, tuple[bool, str]] = {}
    out = {}
    for cap in CAPABILITIES.values():
        reasons = []
        if cap.needs and missing:
            reasons.append(f"missing {', '.join(missing)} (run as root, or grant CAP_BPF and CAP_PERFMON)")
        elif cap.needs:
            for feat in cap.needs:
                if feat not in features:
                    f = probe_feature(feat)
                    features[feat] = (f.ok, f.detail)
                ok, detail = features[feat]
                if not ok:
                    reasons.append(detail)
        if cap.name == "performance" and not os.path.isdir("/proc/self"):
            reasons.append("/proc is not mounted")
        out[cap.name] = {"available": not reasons, "reason": "; ".join(reasons) or None,
                         "description": cap.summary, "event_types": list(cap.events), "filters": list(cap.filters)}
    return out


def prompt_text(status: dict[str, dict[str, Any]], max_duration: int) -> str:
    """A compact block to paste into a model's prompt."""
    lines = ["eBPF diagnostics available on this host (bpfwatch). Request traces by adding to your JSON answer:",
             '  "ebpf_capabilities": [...], "ebpf_duration_seconds": N (1-' + str(max_duration) + '), '
             '"ebpf_filters": {"pid": "...", "comm": "...", "path": "..."} (all optional)',
             "Capabilities:"]
    for name, st in status.items():
        if st["available"]:
            lines.append(f"- {name}: {st['description']}. Filters: {', '.join(st['filters'])}.")
    off = [f"{n} ({st['reason']})" for n, st in status.items() if not st["available"]]
    if off:
        lines.append("Not available here: " + "; ".join(off) + ".")
    lines.append("Filters: " + "; ".join(f"{k}: {v}" for k, v in FILTER_HELP.items()) + ".")
    lines.append("Traces run in parallel with your commands; the result has, per capability, up to a capped "
                 "number of events {timestamp, event_type, process_id, process_name, user_id, data} and a "
                 "summary (top processes, syscalls, connections, files, security findings, counts, lost events).")
    return "\n".join(lines)
