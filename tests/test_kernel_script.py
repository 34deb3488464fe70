"""scripts/test-kernel.sh boots the kernel it is asked for: KERNEL=6.1 is
Debian 12's 6.1.x, never 6.12, which Debian 12 also ships and which matched
"6.1*" (the VM tests then ran on 6.12 while saying 6.1)."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import ROOT

RELEASES = ["6.1.0-47-amd64", "6.1.0-57-amd64", "6.1.0-57-cloud-amd64", "6.1.0-57-rt-amd64",
            "6.12.113+deb12-amd64", "6.12.117+deb12-amd64", "6.12.117+deb12-cloud-amd64", "5.10.0-35-amd64"]


@pytest.mark.parametrize(("kernel", "picked"), [
    ("6.1", "6.1.0-57-amd64"), ("6.12", "6.12.117+deb12-amd64"), ("6.1.0-47-amd64", "6.1.0-47-amd64"),
    ("6.1.0-47", "6.1.0-47-amd64"), ("5.10", "5.10.0-35-amd64"), ("6.2", ""), ("6", "6.12.117+deb12-amd64"),
])
def test_kernel_picks_its_own_version(kernel: str, picked: str) -> None:
    p = subprocess.run(["bash", str(ROOT / "scripts/test-kernel.sh"), "--which"], input="\n".join(RELEASES) + "\n",
                       capture_output=True, text=True, timeout=30, env={**os.environ, "KERNEL": kernel})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == picked


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5", "60s"])
def test_a_bad_vm_timeout_is_named_before_anything_runs(value: str) -> None:
    p = subprocess.run(["bash", str(ROOT / "scripts/test-kernel.sh")], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "VM_TIMEOUT": value, "SUITE": "smoke"})
    assert p.returncode == 2
    assert p.stderr == f"test-kernel: VM_TIMEOUT must be a whole number of seconds, not '{value}'\n"
