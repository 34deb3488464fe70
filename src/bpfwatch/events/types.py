"""Event type names and selection by name or glob."""

from __future__ import annotations

import fnmatch

from bpfwatch.errors import UsageError

EVENT_TYPES: dict[str, str] = {
    "process.exec": "a program was executed (execve/execveat)",
    "process.exec_failed": "an execve/execveat failed: path, argv, errno (opt-in: name it to get it)",
    "process.fork": "a process (or, with threads on, a thread) was created",
    "process.exit": "a process (or thread) exited",
    "file.open": "a file was opened or created (open, openat, openat2, creat)",
    "file.io": "read/write totals of one process on one file, when closed or at exit",
    "file.unlink": "a file was removed",
    "file.rename": "a file was renamed",
    "file.mkdir": "a directory was created",
    "file.rmdir": "a directory was removed",
    "file.chmod": "a file's mode was changed",
    "file.chown": "a file's owner was changed",
    "file.truncate": "a file was truncated",
    "file.link": "a hard link was made",
    "file.symlink": "a symbolic link was made",
    "network.connect": "an outbound TCP connection was established, refused or timed out",
    "network.accept": "an inbound TCP connection was accepted",
    "network.close": "a TCP connection ended: bytes each way, duration, who closed",
    "network.state": "a TCP state change (opt-in: name it to get it)",
    "network.udp": "a UDP flow started, or ended (idle, or its process exited)",
    "dns.query": "a DNS query was sent",
    "dns.response": "a DNS response was received (answers, rcode, latency)",
    "dns.malformed": "a message to or from the DNS port that does not parse",
    "security.privilege_escalation": "a non-root process became root (setuid syscalls, capset, setuid exec)",
    "security.credential_change": "a process changed its user, group or capabilities",
    "security.ptrace": "ptrace attach or seize to another process",
    "security.process_vm_write": "process_vm_writev into another process",
    "security.suspicious_exec": "exec of a memfd, a deleted file, or from a world-writable directory",
    "security.sensitive_file": "write, rename, unlink, chmod, chown or truncate of a sensitive file",
    "security.bpf_load": "a BPF program was loaded by another process",
    "security.mount": "a filesystem was mounted or unmounted",
    "security.namespace": "setns or unshare of namespaces",
    "security.module": "a kernel module load or unload was attempted",
    "security.sysctl_write": "a kernel parameter under /proc/sys/kernel was written",
}
# only when asked for by name or glob: verbose (network.state), or with a cost
# on every syscall (process.exec_failed, security.*: `trace security`)
# named exactly, never by a glob: 'process.*' must not add a cost to every syscall
EXACT_ONLY = {"process.exec_failed"}
OPT_IN = {"network.state"} | EXACT_ONLY | {t for t in EVENT_TYPES if t.startswith("security.")}


def expand_types(patterns: list[str] | None) -> set[str]:
    """Event types selected by names or globs ('process.*'); all when empty."""
    if not patterns:
        return set(EVENT_TYPES) - OPT_IN
    out: set[str] = set()
    for raw in patterns:
        for pat in filter(None, (p.strip() for p in raw.split(","))):
            if pat in ("process", "file", "network", "dns", "security", "all"):
                pat = f"{pat}.*" if pat != "all" else "*"
            hits = [t for t in fnmatch.filter(EVENT_TYPES, pat) if t == pat or t not in EXACT_ONLY]
            if not hits:
                raise UsageError(f"unknown event type '{pat}' (known: {', '.join(EVENT_TYPES)})")
            out.update(hits)
    return out
