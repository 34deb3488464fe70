"""Linux capabilities of this process, and what bpfwatch needs of them."""

from __future__ import annotations

from bpfwatch.errors import PermissionProblem

CAPS = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39,
        "CAP_SYS_PTRACE": 19, "CAP_DAC_READ_SEARCH": 2}


def effective(pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def has(name: str, mask: int | None = None) -> bool:
    return bool((effective() if mask is None else mask) >> CAPS[name] & 1)


def missing_for_tracing(mask: int | None = None) -> list[str]:
    """Capabilities lacking to load tracing programs (CAP_SYS_ADMIN covers both)."""
    m = effective() if mask is None else mask
    if has("CAP_SYS_ADMIN", m):
        return []
    return [c for c in ("CAP_BPF", "CAP_PERFMON") if not has(c, m)]


REMEDY = ("run as root (sudo bpfwatch ...), or grant the capabilities to the interpreter "
          "(setcap cap_bpf,cap_perfmon+ep $(readlink -f $(which python3))), or run it as a systemd "
          "service with AmbientCapabilities=CAP_BPF CAP_PERFMON (docs/troubleshooting.md)")


def require_tracing() -> None:
    lacking = missing_for_tracing()
    if lacking:
        raise PermissionProblem(f"missing capabilities {', '.join(lacking)} needed to load BPF "
                                f"programs: {REMEDY}")


def require(needed: list[str], what: str) -> None:
    """Raises PermissionProblem naming the capabilities `what` lacks (CAP_SYS_ADMIN
    stands in for CAP_BPF and CAP_PERFMON, as in the kernel)."""
    m = effective()
    admin = has("CAP_SYS_ADMIN", m)
    lacking = [c for c in needed if not has(c, m) and not (admin and c in ("CAP_BPF", "CAP_PERFMON"))]
    if lacking:
        caps = ",".join(c.lower() for c in needed)
        raise PermissionProblem(f"missing {', '.join(lacking)} to {what}: run as root (sudo bpfwatch ...), "
                                f"or grant them (setcap {caps}+ep on the interpreter)")
