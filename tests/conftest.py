"""Shared fixtures. Kernel tests load real BPF programs: they skip when that is
impossible here, unless BPFWATCH_REQUIRE_BPF=1 (CI), where they fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_BPF = os.environ.get("BPFWATCH_REQUIRE_BPF") == "1"
BPFWATCH = [sys.executable, "-m", "bpfwatch.cli.main"]


def _bpf_unavailable() -> str | None:
    from bpfwatch import caps
    from bpfwatch.bpf import BPF_DIR

    if not (BPF_DIR / "process.bpf.o").exists():
        return "BPF objects are not built (make bpf)"
    missing = caps.missing_for_tracing()
    if missing:
        return f"missing {', '.join(missing)}"
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "no kernel BTF"
    return None


IN_VM = os.environ.get("BPFWATCH_IN_VM") == "1"  # inside make test-kernel's VM (scripts/test-kernel.sh)
# how much longer a wait for something to happen may take: an emulated CPU is
# several times slower (waits only; no assertion is about speed)
WAIT_SCALE = 4.0 if IN_VM else 1.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kernel: loads real BPF programs")
    config.addinivalue_line("markers", "smoke_vm: one test per sensor, for the CI run on another kernel in a VM")
    config.addinivalue_line("markers", "host_only: measures time or needs this host's services; not in the VM")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel"):
        reason = _bpf_unavailable()
        if reason:
            if REQUIRE_BPF:
                pytest.fail(f"BPFWATCH_REQUIRE_BPF=1 but BPF cannot load: {reason}")
            pytest.skip(reason)


def collect(monitor: Any, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0
            ) -> list[dict[str, Any]]:
    """Polls the monitor until `until(events)` holds or the timeout passes."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events.extend(monitor.poll(0.05))
        if until(events):
            return events
    return events


def bw_programs() -> list[str]:
    """Names of loaded BPF programs that carry the project's prefix."""
    tool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    out = subprocess.run([tool, "prog", "show"], capture_output=True, text=True, check=True).stdout
    return [line.split(" name ", 1)[1].split()[0] for line in out.splitlines()
            if " name bw_" in line]


def wait_programs(prefix: str, loaded: bool, timeout: float = 20.0) -> bool:
    """Waits until programs named prefix* are (or are no longer) loaded."""
    deadline = time.monotonic() + timeout
    while True:
        present = any(p.startswith(prefix) for p in bw_programs())
        if present == loaded or time.monotonic() > deadline:
            return present == loaded
        time.sleep(0.05)


@pytest.fixture
def no_leaks():
    """Asserts the test left no bw_* program loaded."""
    before = set(bw_programs())
    yield
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and set(bw_programs()) - before:
        time.sleep(0.05)
    assert not set(bw_programs()) - before, f"leaked BPF programs: {bw_programs()}"
