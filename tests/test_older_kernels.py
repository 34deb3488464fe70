"""Kernels older than what a feature needs (docs/kernels.md): with the probes
forced to fail (BPFWATCH_PRETEND_MISSING), trace and run stop with one line
naming the missing feature and the Linux version that brought it, doctor says
bpfwatch cannot run, and the agent polls /proc instead (or stops, when told
not to fall back). Nothing is left loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentproc import agent, free_port
from bpfwatch import kernel_support
from conftest import BPFWATCH, ROOT, wait_programs

pytestmark = pytest.mark.kernel

CASES = {  # pretended missing: what the one line must say
    "ringbuf": ("the BPF ring buffer", "Linux >= 5.8"),
    "btf": ("kernel BTF", "CONFIG_DEBUG_INFO_BTF=y"),
}


def _cli(*args: str, missing: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BPFWATCH_PRETEND_MISSING": missing}
    return subprocess.run([*BPFWATCH, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.parametrize("missing", list(CASES))
def test_trace_and_run_say_which_feature_and_version(missing: str, no_leaks: None) -> None:
    what, since = CASES[missing]
    for args in (["trace", "-d", "1", "--format", "json"], ["run", "--", "/bin/true"]):
        p = _cli(*args, missing=missing)
        assert p.returncode == 1, (args, p.stderr)
        (line,) = p.stderr.strip().splitlines()
        assert line.startswith("bpfwatch: this kernel (Linux ") and what in line and since in line, line
        assert "fallback_to_polling" in line and "Traceback" not in p.stderr


def test_doctor_fails_the_missing_feature() -> None:
    p = _cli("doctor", "--json", missing="ringbuf,tp_btf")
    assert p.returncode == 1
    checks = {c["name"]: c for c in json.loads(p.stdout)["checks"]}
    for name in ("map ringbuf", "program tp_btf"):
        assert checks[name]["status"] == "fail" and "BPFWATCH_PRETEND_MISSING" in checks[name]["detail"]


def test_load_failures_are_explained_by_the_first_missing_feature(monkeypatch: pytest.MonkeyPatch) -> None:
    assert kernel_support.explain() is None  # this kernel has everything
    for name, req in kernel_support.REQUIREMENTS.items():
        monkeypatch.setenv("BPFWATCH_PRETEND_MISSING", name)
        err = kernel_support.explain()
        assert err is not None and err.requirement is req and req.since in str(err)


def test_agent_polls_instead_or_stops_when_told_not_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BPFWATCH_PRETEND_MISSING", "ringbuf")
    cfg = (f'[outputs.capture]\ndirectory = "{tmp_path / "capture"}"\n[metrics]\naddress = "127.0.0.1:{free_port()}"\n'
           '[monitor.polling]\ninterval = "200ms"\n')
    with agent(tmp_path, cfg) as a:
        a.wait_log("agent running (poll mode)")
        assert "eBPF not available (this kernel (Linux" in a.log and "the BPF ring buffer" in a.log
        marker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.0)"])
        a.wait_events(lambda evs: any(e["pid"] == marker.pid and e["source"] == "poll" for e in evs))
        marker.wait()
        assert a.stop() == 0
    strict = tmp_path / "strict"
    strict.mkdir()
    with agent(strict, cfg.replace(str(tmp_path / "capture"), str(strict / "capture"))
               + "[monitor.ebpf]\nfallback_to_polling = false\n") as a:
        rc = a.proc.wait(timeout=60)
    assert rc == 1
    last = a.log.strip().splitlines()[-1]
    assert "the BPF ring buffer" in last and "fallback_to_polling is false" in last
    assert wait_programs("bw_", loaded=False, timeout=5)
