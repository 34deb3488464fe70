"""The syscall tables and their categories."""

from __future__ import annotations

import importlib.util

import pytest

from bpfwatch import syscalls
from bpfwatch.syscall_tables import ARM64, X86_64
from conftest import ROOT


@pytest.mark.parametrize("machine, table", [("x86_64", X86_64), ("aarch64", ARM64)])
def test_every_syscall_has_a_category_on_purpose(machine, table):
    listed = set().union(*syscalls.CATEGORIES.values())
    assert not set(table.values()) - listed, "classify these syscalls in syscalls.CATEGORIES"


def test_categories_do_not_overlap():
    seen: dict[str, str] = {}
    for cat, names in syscalls.CATEGORIES.items():
        for n in names:
            assert n not in seen, f"{n} in both {seen[n]} and {cat}"
            seen[n] = cat


def test_known_numbers():
    x86, arm = syscalls.table("x86_64"), syscalls.table("aarch64")
    assert (x86["read"], x86["execve"], x86["openat"], x86["clone3"], x86["fchmodat2"]) == (0, 59, 257, 435, 452)
    assert (arm["read"], arm["execve"], arm["openat"], arm["clone3"], arm["fchmodat2"]) == (63, 221, 56, 435, 452)
    assert "open" not in arm and "newfstatat" in arm
    assert syscalls.name_of(0, "x86_64") == "read" and syscalls.name_of(9999, "x86_64") == "syscall_9999"
    assert syscalls.category("getppid") == "process" and syscalls.category("openat") == "file_io"
    assert syscalls.category("sendmmsg") == "network" and syscalls.category("rt_sigaction") == "signal"


def test_tables_are_what_the_generator_writes():
    headers = ROOT / "scripts/make_syscall_tables.py"
    spec = importlib.util.spec_from_file_location("make_syscall_tables", headers)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not mod.X86_HEADER.exists():
        pytest.skip("kernel UAPI headers (linux-libc-dev) are not installed")
    assert (ROOT / "src/bpfwatch/syscall_tables.py").read_text() == mod.render()
