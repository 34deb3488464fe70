"""The agent under an unlucky operator and a hostile local user: SIGHUP
storms during kernel-side reloads, a reload whose programs cannot load, an
idle client on the metrics port, and a polling agent reloaded many times."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from test_agent import agent, base_config, free_port, run_marker

pytestmark = pytest.mark.kernel


def _healthz(port: int, timeout: float = 3.0) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:  # 503 when degraded: the body says why
        return json.loads(e.read())


def test_sighup_storm_during_kernel_reload_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    cfg = base_config(tmp_path, metrics_port=port, filters='types = ["process.exec"]\nallow = { comm = ["bwm"] }')
    with agent(tmp_path, cfg) as a:
        a.wait_log("agent running (ebpf mode)")
        launched: list[int] = []
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                launched.append(run_marker("bwm", tmp_path))
                time.sleep(0.005)

        t = threading.Thread(target=loop)
        t.start()
        time.sleep(0.3)
        a.config.write_text(cfg.replace('ring_buffer_size = "4MB"', 'ring_buffer_size = "8MB"'))
        for _ in range(20):
            a.proc.send_signal(signal.SIGHUP)
            time.sleep(0.03)
        a.wait_log("config reloaded")
        time.sleep(1.5)
        stop.set()
        t.join()
        a.wait_events(lambda evs: {e["pid"] for e in evs} >= set(launched))
        health = _healthz(port)
        assert health["status"] == "ok" and health["mode"] == "ebpf", health
        assert a.stop() == 0
    log = a.log
    assert "falling back to polling" not in log
    assert 1 <= log.count("config reloaded") <= 3, log.count("config reloaded")  # coalesced, not 20
    pids = [e["pid"] for e in a.events()]
    assert len(launched) > 30 and all(pids.count(p) == 1 for p in launched)


def _memory_cgroup(limit: int) -> Path:
    base = Path("/sys/fs/cgroup/memory")
    mine = next((ln.split(":", 2)[2] for ln in Path("/proc/self/cgroup").read_text().splitlines()
                 if ln.split(":")[1] == "memory"), None)
    if not base.is_dir() or mine is None:
        pytest.skip("no cgroup v1 memory controller here")
    cg = base / mine.lstrip("/") / f"bwtest{os.getpid()}"
    cg.mkdir(exist_ok=True)
    (cg / "memory.limit_in_bytes").write_text(str(limit))
    return cg


def test_reload_whose_programs_cannot_load_keeps_the_running_ones(tmp_path: Path) -> None:
    """The new ring cannot be allocated (a memory cgroup too small for it):
    the reload fails, the running programs stay, nothing falls back to
    polling, and the reload is tried again later."""
    port = free_port()
    cfg = base_config(tmp_path, metrics_port=port, filters='types = ["process.exec"]\nallow = { comm = ["bwn"] }')
    cg = _memory_cgroup(400 << 20)
    try:
        with agent(tmp_path, cfg) as a:
            a.wait_log("agent running (ebpf mode)")
            (cg / "cgroup.procs").write_text(str(a.proc.pid))
            a.config.write_text(cfg.replace('ring_buffer_size = "4MB"', 'ring_buffer_size = "1GB"'))
            a.proc.send_signal(signal.SIGHUP)
            a.wait_log("config reload failed")
            before = run_marker("bwn", tmp_path)
            a.wait_events(lambda evs: any(e["pid"] == before for e in evs))
            health = _healthz(port)
            assert health["mode"] == "ebpf" and health["status"] == "ok", health
            assert "falling back to polling" not in a.log
            assert a.stop() == 0
    finally:
        for pid in (cg / "cgroup.procs").read_text().split():
            Path(cg.parent / "cgroup.procs").write_text(pid)
        cg.rmdir()


def test_idle_metrics_client_blocks_nothing(tmp_path: Path) -> None:
    port = free_port()
    with agent(tmp_path, base_config(tmp_path, metrics_port=port)) as a:
        a.wait_log("metrics on")
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET /heal")  # half a request, then nothing
        started = time.monotonic()
        assert _healthz(port)["status"] == "ok"
        assert time.monotonic() - started < 2
        a.proc.send_signal(signal.SIGHUP)
        a.wait_log("config reloaded", timeout=5)
        started = time.monotonic()
        assert a.stop() == 0
        assert time.monotonic() - started < 10
        for s in (*idle, slow):
            s.close()


def test_polling_agent_keeps_its_fds_across_reloads(tmp_path: Path) -> None:
    cfg = base_config(tmp_path, monitor__ebpf="enabled = false")
    with agent(tmp_path, cfg) as a:
        a.wait_log("agent running (poll mode)")
        fds = len(os.listdir(f"/proc/{a.proc.pid}/fd"))
        for i in range(10):
            mark = len(a.log)
            a.config.write_text(cfg + f"\n# {i}\n")
            a.proc.send_signal(signal.SIGHUP)
            a.wait_log("config reloaded", after=mark, timeout=10)
        assert len(os.listdir(f"/proc/{a.proc.pid}/fd")) <= fds + 1
        assert a.stop() == 0
