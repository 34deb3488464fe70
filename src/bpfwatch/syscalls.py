"""Syscall numbers of the architectures bpfwatch runs on (stable kernel ABI)."""

from __future__ import annotations

import platform
from functools import lru_cache

from bpfwatch.errors import BpfwatchError

# Only what the sensors need so far; x86_64 from asm/unistd_64.h, arm64 from
# asm-generic/unistd.h (arm64 has no open/creat/unlink/... : only the *at forms).
_X86_64 = {
    "read": 0, "write": 1, "open": 2, "close": 3, "pread64": 17, "pwrite64": 18, "readv": 19,
    "writev": 20, "truncate": 76, "ftruncate": 77, "rename": 82, "mkdir": 83, "rmdir": 84,
    "creat": 85, "link": 86, "unlink": 87, "symlink": 88, "chmod": 90, "fchmod": 91, "chown": 92,
    "fchown": 93, "lchown": 94, "openat": 257, "mkdirat": 258, "fchownat": 260, "unlinkat": 263,
    "renameat": 264, "linkat": 265, "symlinkat": 266, "fchmodat": 268, "preadv": 295, "pwritev": 296,
    "renameat2": 316, "preadv2": 327, "pwritev2": 328, "openat2": 437, "fchmodat2": 452,
    "dup2": 33, "dup3": 292, "connect": 42, "accept": 43, "sendto": 44, "recvfrom": 45, "sendmsg": 46,
    "recvmsg": 47, "accept4": 288, "recvmmsg": 299, "sendmmsg": 307,
}
_ARM64 = {
    "read": 63, "write": 64, "close": 57, "pread64": 67, "pwrite64": 68, "readv": 65, "writev": 66,
    "truncate": 45, "ftruncate": 46, "mkdirat": 34, "unlinkat": 35, "symlinkat": 36, "linkat": 37,
    "renameat": 38, "fchmod": 52, "fchmodat": 53, "fchownat": 54, "fchown": 55, "openat": 56,
    "preadv": 69, "pwritev": 70, "renameat2": 276, "preadv2": 286, "pwritev2": 287, "openat2": 437,
    "fchmodat2": 452, "dup3": 24, "connect": 203, "accept": 202, "sendto": 206, "recvfrom": 207,
    "sendmsg": 211, "recvmsg": 212, "accept4": 242, "recvmmsg": 243, "sendmmsg": 269,
}
TABLES = {"x86_64": _X86_64, "aarch64": _ARM64}


@lru_cache(maxsize=1)
def table(machine: str | None = None) -> dict[str, int]:
    machine = machine or platform.machine()
    try:
        return TABLES[machine]
    except KeyError:
        raise BpfwatchError(f"no syscall table for {machine}: supported are {', '.join(TABLES)}") from None


@lru_cache(maxsize=1)
def _names() -> dict[int, str]:
    return {n: name for name, n in table().items()}


def name_of(nr: int) -> str:
    return _names().get(nr) or f"syscall_{nr}"
