"""`bpfwatch agent` for real: capture, redaction, SIGHUP reload without loss,
the polling fallback with capabilities really dropped, a least-privilege run
with only CAP_BPF and CAP_PERFMON, and a scrape by a real Prometheus server."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from agentproc import agent, free_port
from bpfwatch.capture import reader
from bpfwatch.capture.manifest import Manifest
from conftest import ROOT, wait_programs

pytestmark = pytest.mark.kernel
NOBODY = 65534


def base_config(workdir: Path, metrics_port: int | None = None, **extra: str) -> str:
    sections = {
        "outputs.capture": f'directory = "{workdir / "capture"}"\nmax_segment_events = 200\ncompression = "zstd"',
        "metrics": f'address = "127.0.0.1:{metrics_port or free_port()}"',
        "monitor.ebpf": 'ring_buffer_size = "4MB"',
        "monitor.polling": 'interval = "200ms"',
    }
    for key, body in extra.items():
        name = key.replace("__", ".")
        sections[name] = (sections.get(name, "") + "\n" + body).strip()
    return "\n".join(f"[{k}]\n{v}\n" for k, v in sections.items())


def run_marker(name: str, workdir: Path, *args: str, sleep: float = 0.0) -> int:
    """Runs /bin/sleep (or true) through a symlink called `name` (its comm); returns its pid."""
    link = workdir / name
    if not link.exists():
        link.symlink_to("/bin/sleep")
    p = subprocess.Popen([str(link), str(sleep), *args])
    p.wait()
    return p.pid


def test_agent_captures_redacts_and_stops_cleanly(tmp_path: Path) -> None:
    with agent(tmp_path, base_config(tmp_path)) as a:
        a.wait_log("agent running (ebpf mode)")
        log = a.log
        assert "INFO eBPF process monitoring available" in log
        assert "INFO process sensor using BTF tracepoints (tp_btf): sched_process_exec" in log
        pid = run_marker("bwmarker", tmp_path, "--password", "hunter2", "token=abc123")
        srv = socket.create_server(("127.0.0.1", 0))
        port = srv.getsockname()[1]
        subprocess.run([sys.executable, "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}))"],
                       check=True)
        srv.close()
        evs = a.wait_events(lambda evs: any(e["type"] == "process.exec" and e["pid"] == pid for e in evs)
                            and any(e["type"] == "network.connect" and e["remote_port"] == port for e in evs))
        ex = next(e for e in evs if e["type"] == "process.exec" and e["pid"] == pid)
        assert ex["source"] == "ebpf" and ex["comm"] == "bwmarker"
        assert ex["argv"][1:] == ["0.0", "--password", "[REDACTED]", "token=[REDACTED]"]
        # nor in the raw segment being written (if one is open right now)
        for n in os.listdir(a.capture):
            if n.endswith(".open"):
                assert "hunter2" not in (tmp_path / "capture" / n).read_text(errors="replace")
        assert a.stop() == 0
    assert "INFO bpfwatch agent stopped" in a.log
    assert wait_programs("bw_", loaded=False)
    m = Manifest.load(str(a.capture))
    assert m is not None and m.open is None
    assert not [n for n in os.listdir(a.capture) if n.endswith((".open", ".tmp"))]
    assert all(s.compression == "zstd" for s in m.segments)
    assert sum(s.records for s in m.segments) == len(a.events()) >= len(evs)
    assert reader.verify(str(a.capture))[1] == []


def test_sighup_reload_swaps_filters_without_losing_events(tmp_path: Path) -> None:
    cfg = base_config(tmp_path, filters='types = ["process.exec"]\nallow = { comm = ["bwa"] }')
    with agent(tmp_path, cfg) as a:
        a.wait_log("agent running")
        a_pid = run_marker("bwa", tmp_path)
        b_pid = run_marker("bwb", tmp_path)
        a.wait_events(lambda evs: any(e["pid"] == a_pid for e in evs))
        # v2: the other name; the kernel-side comm filter changes, so new programs load
        a.config.write_text(cfg.replace('["bwa"]', '["bwb"]'))
        mark = len(a.log)
        a.proc.send_signal(signal.SIGHUP)
        a.wait_log("config reloaded", after=mark)
        assert "event source restarted" in a.log[mark:]
        a2 = run_marker("bwa", tmp_path)
        b2 = run_marker("bwb", tmp_path)
        a.wait_events(lambda evs: any(e["pid"] == b2 for e in evs))
        # an invalid config is rejected; the running one stays
        a.config.write_text(cfg.replace('["bwa"]', '["bwb"]') + "\n[bogus]\n")
        mark = len(a.log)
        a.proc.send_signal(signal.SIGHUP)
        a.wait_log("config reload rejected", after=mark)
        assert "bogus: unknown key" in a.log[mark:]
        # v3 while execs keep coming: every one is captured exactly once
        launched: list[int] = []
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                launched.append(run_marker("bwb", tmp_path))
                time.sleep(0.005)

        def launched_reach(n: int) -> None:  # a count of execs, not a time: an emulated kernel is slow
            deadline = time.monotonic() + 120
            while len(launched) < n and time.monotonic() < deadline:
                time.sleep(0.01)

        t = threading.Thread(target=loop)
        t.start()
        launched_reach(25)  # execs before the reload ...
        a.config.write_text(cfg.replace('["bwa"]', '["bwb", "bwc"]'))
        mark = len(a.log)
        a.proc.send_signal(signal.SIGHUP)
        a.wait_log("config reloaded", after=mark)
        launched_reach(len(launched) + 25)  # ... and after it
        stop.set()
        t.join()
        a.wait_events(lambda evs: {e["pid"] for e in evs} >= set(launched))
        assert a.stop() == 0
    pids = [e["pid"] for e in a.events()]
    assert a_pid in pids and b_pid not in pids and a2 not in pids and b2 in pids
    assert len(launched) >= 50
    assert all(pids.count(p) == 1 for p in launched), "an exec was captured twice across the reload"
    assert "ERROR config reload rejected" in a.log


def nobody_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="bw-agent-"))
    os.chmod(d, 0o755)
    os.chown(d, NOBODY, NOBODY)
    return d


def as_nobody(caps: str | None) -> list[str]:
    if not shutil.which("setpriv"):
        pytest.fail("setpriv (util-linux) is needed to drop privileges")
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    if caps:
        cmd += [f"--inh-caps=-all,{caps}", f"--ambient-caps={caps}", f"--bounding-set=-all,{caps}"]
    else:
        cmd += ["--inh-caps=-all", "--bounding-set=-all"]
    return cmd


def test_fallback_to_polling_without_capabilities() -> None:
    d = nobody_dir()
    try:
        with agent(d, base_config(d), prefix=as_nobody(None)) as a:
            a.wait_log("agent running (poll mode)")
            log = a.log
            assert "WARN eBPF not available (missing CAP_BPF, CAP_PERFMON), falling back to polling" in log
            assert "INFO Process monitoring using 200ms polling interval" in log
            assert "WARN dns and file events are not available in polling mode" in log
            pid = run_marker("bwpolled", d, sleep=1.0)
            evs = a.wait_events(lambda evs: any(e["pid"] == pid and e["type"] == "process.exit" for e in evs))
            ex = [e for e in evs if e["pid"] == pid]
            assert [e["type"] for e in ex] == ["process.exec", "process.exit"]
            assert {e["source"] for e in ex} == {"poll"}
            assert ex[0]["comm"] == "bwpolled" and ex[0]["argv"][1] == "1.0"
            assert a.stop() == 0
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_no_fallback_exits_with_the_reason() -> None:
    d = nobody_dir()
    try:
        cfg = base_config(d, monitor__ebpf="fallback_to_polling = false")
        with agent(d, cfg, prefix=as_nobody(None)) as a:
            rc = a.proc.wait(timeout=30)
        assert rc == 2
        last = a.log.strip().splitlines()[-1]
        assert last.startswith("bpfwatch: eBPF not available (missing CAP_BPF, CAP_PERFMON) and "
                               "monitor.ebpf.fallback_to_polling is false")
        assert "Traceback" not in a.log
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_polling_when_ebpf_disabled_in_config(tmp_path: Path) -> None:
    with agent(tmp_path, base_config(tmp_path, monitor__ebpf="enabled = false")) as a:
        a.wait_log("agent running (poll mode)")
        assert "INFO eBPF monitoring disabled in the config (monitor.ebpf.enabled = false)" in a.log
        assert not wait_programs("bw_", loaded=True, timeout=0.5)
        assert a.stop() == 0


UNIT = ROOT / "packaging" / "bpfwatch.service"


def unit_capabilities() -> list[str]:
    """The ambient capabilities the shipped systemd unit grants."""
    for line in UNIT.read_text().splitlines():
        if line.startswith("AmbientCapabilities="):
            return line.split("=", 1)[1].split()
    raise AssertionError("no AmbientCapabilities in the unit")


def test_systemd_unit_is_valid_and_least_privilege(tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert unit_capabilities() == ["CAP_BPF", "CAP_PERFMON"]
    assert "CapabilityBoundingSet=CAP_BPF CAP_PERFMON" in text and "NoNewPrivileges=yes" in text
    assert "User=bpfwatch" in text
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    local = tmp_path / "bpfwatch.service"
    local.write_text(text.replace("/opt/bpfwatch/.venv/bin/bpfwatch", str(Path(sys.executable).parent / "bpfwatch")))
    r = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_least_privilege_run_sees_events() -> None:
    d = nobody_dir()
    caps = ",".join("+" + c.removeprefix("CAP_").lower() for c in unit_capabilities())
    try:
        with agent(d, base_config(d), prefix=as_nobody(caps)) as a:
            a.wait_log("agent running (ebpf mode)")
            with open(f"/proc/{a.proc.pid}/status") as f:
                status = dict(line.split(":\t", 1) for line in f if ":\t" in line)
            # exactly CAP_PERFMON (38) and CAP_BPF (39), nothing else, as user nobody
            assert int(status["CapEff"], 16) == (1 << 38) | (1 << 39)
            assert status["Uid"].split()[0] == str(NOBODY)
            pid = run_marker("bwleast", d)
            evs = a.wait_events(lambda evs: any(e["pid"] == pid and e["type"] == "process.exec" for e in evs))
            assert next(e for e in evs if e["pid"] == pid)["source"] == "ebpf"
            assert a.stop() == 0
        assert os.stat(d / "capture").st_uid == NOBODY
        assert wait_programs("bw_", loaded=False)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def prom_query(port: int, query: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as r:
        doc = json.loads(r.read())
    return doc["data"]["result"]  # type: ignore[no-any-return]


def test_metrics_scraped_by_prometheus(tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not os.path.exists(prometheus):
        pytest.fail("Debian's prometheus package is needed (scripts/setup-system.sh installs it)")
    mport = free_port()
    cfg = base_config(tmp_path, mport, metrics="bpf_stats = true")
    with agent(tmp_path, cfg) as a:
        a.wait_log("agent running")
        run_marker("bwscraped", tmp_path)
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/healthz", timeout=5) as r:
            health = json.loads(r.read())
        assert health["status"] == "ok" and health["mode"] == "ebpf"
        pport = free_port()
        (tmp_path / "prom.yml").write_text(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: bpfwatch\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{mport}']\n")
        prom = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prom.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{pport}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(OSError, KeyError, ValueError):
                    up = prom_query(pport, 'up{job="bpfwatch"}')
                    execs = prom_query(pport, 'bpfwatch_events_total{type="process.exec",sensor="process"}')
                    if up and up[0]["value"][1] == "1" and execs:
                        break
                assert time.monotonic() < deadline, "prometheus never scraped the agent"
                time.sleep(0.5)
            assert float(execs[0]["value"][1]) >= 1
            mode = prom_query(pport, 'bpfwatch_sensor_mode{sensor="process",mode="ebpf"}')
            assert mode[0]["value"][1] == "1"
            runs = prom_query(pport, 'bpfwatch_bpf_program_runs_total{program="bw_proc_exec"}')
            assert float(runs[0]["value"][1]) >= 1
            for name in ("bpfwatch_events_lost_total", "bpfwatch_ring_buffer_fill_ratio",
                         "bpfwatch_process_cache_entries", "bpfwatch_capture_bytes_written_total",
                         "bpfwatch_capture_rotations_total", "bpfwatch_agent_process_resident_memory_bytes",
                         "bpfwatch_agent_process_cpu_seconds_total", "bpfwatch_bpf_program_run_seconds_total"):
                assert prom_query(pport, name), f"{name} missing"
        finally:
            prom.terminate()
            prom.wait(timeout=30)
        assert a.stop() == 0


def test_disk_full_degrades_health_and_recovers(tmp_path: Path) -> None:
    fs = tmp_path / "small"
    fs.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(fs)]).returncode != 0:
        pytest.fail("cannot mount a tmpfs for the disk-full test")
    try:
        port = free_port()
        cfg = base_config(tmp_path, port).replace('compression = "zstd"',
                                                  'compression = "none"\nretry_interval = "200ms"')
        cfg = cfg.replace(f'directory = "{tmp_path / "capture"}"', f'directory = "{fs / "capture"}"')
        with agent(tmp_path, cfg) as a:
            a.capture = fs / "capture"
            a.wait_log("agent running")
            filler = fs / "filler"
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
            with contextlib.suppress(OSError):  # fill the disk to the last byte
                while os.write(fd, b"\0" * 4096):
                    pass
            os.close(fd)
            pids = [run_marker("bwfull", tmp_path) for _ in range(30)]
            a.wait_log("ERROR capture: cannot write to")
            deadline = time.monotonic() + 10
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
                except urllib.error.HTTPError as e:
                    assert e.code == 503
                    health = json.loads(e.read())
                    break
                assert time.monotonic() < deadline, "health never degraded"
                time.sleep(0.2)
            assert health["status"] == "degraded" and health["capture"]["held"] > 0
            assert a.proc.poll() is None
            filler.unlink()
            a.wait_log("capture: writes work again")
            evs = a.wait_events(lambda evs: {e["pid"] for e in evs} >= set(pids))
            assert {e["pid"] for e in evs if e["comm"] == "bwfull" and e["type"] == "process.exec"} == set(pids)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                assert json.loads(r.read())["status"] == "ok"
            assert a.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=False)


def test_agent_with_the_security_sensor_captures_findings(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[rules.unshare]\nseverity = "high"\n')
    rules.chmod(0o644)
    toml = base_config(tmp_path, sensors__security=f'enabled = true\nrules = "{rules}"')
    with agent(tmp_path, toml) as a:
        a.wait_log("agent running (ebpf mode)")
        assert "security sensor using BTF tracepoints" in a.log
        subprocess.run(["unshare", "--ipc", "true"], check=True)
        evs = a.wait_events(lambda evs: any(e["type"] == "security.namespace" for e in evs))
        f = next(e for e in evs if e["type"] == "security.namespace")
        assert f["rule"] == "unshare" and f["severity"] == "high" and f["evidence"]["flags"] == ["CLONE_NEWIPC"]
        assert f["exe"] == "/usr/bin/unshare" and f["user"] == "root"
        assert a.stop() == 0
